"""Neuron-based shift signals of one utterance, from the on/off pattern of its frames in one FC
layer and the layer's in-domain reference statistics.

For neuron j with reference on-rate q_j (from ``NeuronStats``: N reference frames, M_j of them on)
and an utterance of n frames, k_j of them on (p_j = k_j / n):

- ``out_of_range``: k_j lies outside the equal-tailed (1 - alpha) range of Binomial(n, q~_j), i.e.
  P(K <= k_j) < alpha/2 or P(K >= k_j) < alpha/2, with q~_j = (M_j + 1/2) / (N + 1) (add-half
  smoothing, so that a neuron never or always on in the reference still has a finite range). The
  range widens for short utterances, so that few frames are not mistaken for shift: if frames were
  independent draws of the reference, at most a share alpha of the neurons would leave it. Real
  frames are correlated in time, so an in-domain utterance scores somewhat above alpha; the score
  is relative to what the in-domain sets score, which the predictor learns.
- ``saturated``: the neuron is normal in the reference, hyper or hypo on the utterance
  (p_j >= hyper_on_rate or p_j <= hypo_on_rate), and out of range: the thresholds alone would count
  every neuron of reference on-rate 0.1 whose few frames of a short utterance happen to be off.
- ``on_rate_change``: |p_j - q_j|.
- ``on_off_js``: the Jensen-Shannon divergence (bits) between Bernoulli(p_j) and Bernoulli(q_j),
  H((p_j + q_j) / 2) - (H(p_j) + H(q_j)) / 2, in [0, 1] and finite at p or q in {0, 1}.
- ``window_entropy``: the on/off entropy H (bits) of the neuron's on-rate within a running window
  of ``window`` frames (hop 1), averaged over the windows of the utterance (one window of all its
  frames when it is shorter). This is our reading of the short-time activation entropy of Mitra et
  al. (arXiv:1708.09516), of which only the abstract was at hand ("measured over a short-time
  running window on the activation from each neuron of a given hidden layer ... used to compute
  summary entropy"): the entropy here is of the on/off pattern that the rest of the library uses
  (He et al., ICASSP 2014), the summary is the mean over windows and neurons. Saturated neurons
  have window entropy 0, so saturation lowers it, while the abstract expects unseen data to add
  variability; which way it moves with WER is for the predictor to fit, not assumed here.

The last three grow with sampling noise on short utterances (E|p - q| ~ sqrt(q(1-q)/n)); the
first is built not to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Names of the neuron signals, in the order of ``neuron_sums``'s output.
NEURON_SIGNALS = ("out_of_range_share", "saturated_share", "on_rate_change", "on_off_js", "window_entropy")


@dataclass(frozen=True)
class LayerReference:
    """What the neuron signals need of one reference layer of D neurons: ``on_rate`` q (D,)
    float64, ``smoothed_on_rate`` q~ (D,) float64 in (0, 1), ``normal`` (D,) bool (neither hyper
    nor hypo in the reference)."""

    on_rate: Tensor
    smoothed_on_rate: Tensor
    normal: Tensor

    @property
    def width(self) -> int:
        return self.on_rate.numel()


@dataclass(frozen=True)
class NeuronSignalConfig:
    """``alpha``: level of the binomial range; ``hyper_on_rate`` / ``hypo_on_rate``: the thresholds
    of ``saturated`` (on the utterance and in the reference); ``window``: frames per entropy
    window (at the frame rate of the FC layers)."""

    alpha: float = 0.01
    hyper_on_rate: float = 0.95
    hypo_on_rate: float = 0.05
    window: int = 20

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha}")
        if not 0.0 <= self.hypo_on_rate < self.hyper_on_rate <= 1.0:
            raise ValueError(f"need 0 <= hypo_on_rate ({self.hypo_on_rate}) < hyper_on_rate "
                             f"({self.hyper_on_rate}) <= 1")
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")


def neuron_sums(on: Tensor, ref: LayerReference, config: NeuronSignalConfig) -> Tensor:
    """(n, D) bool on/off frames of one utterance (n >= 1) -> (5,) float64: the sum over the
    layer's D neurons of each per-neuron signal, in ``NEURON_SIGNALS`` order (divide by D for the
    layer's value; sums of several layers divided by their total width pool the layers)."""
    n = on.shape[0]
    k = on.sum(0)
    p = k.to(torch.float64) / n
    lower, upper = binomial_tails(k, n, ref.smoothed_on_rate)
    out_of_range = (lower < config.alpha / 2) | (upper < config.alpha / 2)
    saturated = ((p >= config.hyper_on_rate) | (p <= config.hypo_on_rate)) & ref.normal & out_of_range
    q = ref.on_rate
    js = bernoulli_entropy((p + q) / 2) - (bernoulli_entropy(p) + bernoulli_entropy(q)) / 2
    return torch.stack([out_of_range.sum().to(torch.float64), saturated.sum().to(torch.float64),
                        (p - q).abs().sum(), js.clamp_min(0.0).sum(), window_entropy(on, config.window).sum()])


def binomial_tails(k: Tensor, n: int, p: Tensor) -> tuple[Tensor, Tensor]:
    """(D,) counts k of n trials, (D,) success probabilities p in (0, 1) -> (P(K <= k), P(K >= k))
    for K ~ Binomial(n, p), each (D,) float64, from the exact probability mass over 0..n."""
    trials = torch.arange(n + 1, dtype=torch.float64)
    log_choose = math.lgamma(n + 1) - torch.lgamma(trials + 1) - torch.lgamma(n - trials + 1)
    log_pmf = log_choose + trials * torch.log(p)[:, None] + (n - trials) * torch.log1p(-p)[:, None]
    pmf = log_pmf.exp()  # (D, n + 1)
    at_or_below = pmf.cumsum(1)
    at_or_above = pmf.flip(1).cumsum(1).flip(1)
    index = k.to(torch.int64)[:, None]
    return at_or_below.gather(1, index).squeeze(1), at_or_above.gather(1, index).squeeze(1)


def window_entropy(on: Tensor, window: int) -> Tensor:
    """(n, D) bool -> (D,) float64: the mean over running windows of ``min(window, n)`` frames
    (hop 1) of the on/off entropy (bits) of the window's on-rate."""
    w = min(window, on.shape[0])
    running = torch.cat([torch.zeros(1, on.shape[1], dtype=torch.float64), on.to(torch.float64).cumsum(0)])
    rates = (running[w:] - running[:-w]) / w  # (n - w + 1, D)
    return bernoulli_entropy(rates).mean(0)


def bernoulli_entropy(p: Tensor) -> Tensor:
    """Element-wise -p log2 p - (1-p) log2 (1-p), with 0 log 0 = 0."""
    q = 1.0 - p
    return -(torch.xlogy(p, p) + torch.xlogy(q, q)) / math.log(2.0)
