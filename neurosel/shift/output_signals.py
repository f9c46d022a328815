"""Output-based shift signals of one utterance, from the model's per-frame log-posteriors.

For frame t with posteriors P_t over V output units (CTC: V - 1 units and the blank):

- ``max_posterior``: max_v P_t(v), the frame confidence (the first-pass confidence of method.md);
- ``top_gap``: P_t of the most likely unit minus P_t of the next most likely (Mitra and Franco,
  arXiv:1802.06861: under unseen data the gap shrinks; their distance measure between the two may
  differ, only the abstract was at hand);
- ``blank_share``: 1 if the most likely unit is the blank (a greedy CTC decoder emits nothing);
- ``frame_entropy``: -sum_v P_t(v) log2 P_t(v), bits (the frame-entropy baseline of WER prediction
  that Hermansky et al.'s M-measure is compared with).

Each is averaged over the utterance's frames.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from neurosel.errors import NeuroselError

# Names of the output signals, in the order of ``output_sums``'s output.
OUTPUT_SIGNALS = ("max_posterior", "top_gap", "blank_share", "frame_entropy")

# How far a frame's log-posteriors may sum (in probability) from 1: float32 log_softmax is off by
# about 1e-6; anything beyond 1e-3 is logits or probabilities, not log-posteriors.
LOG_PROB_TOLERANCE = 1e-3


def output_sums(log_probs: Tensor, blank: int) -> Tensor:
    """(n, V) log-posteriors of n frames -> (4,) float64: the sum over the frames of each
    per-frame signal, in ``OUTPUT_SIGNALS`` order. ``NeuroselError`` if the rows are not
    log-posteriors (their exponentials must sum to 1) or ``blank`` is not one of the V units."""
    v = log_probs.shape[1]
    if v < 2:
        raise NeuroselError(f"output log-posteriors have {v} unit(s); the top-2 gap needs at least 2")
    if not 0 <= blank < v:
        raise NeuroselError(f"blank index {blank} is not one of the {v} output units")
    x = log_probs.detach().to(torch.float64)
    total = x.logsumexp(1)
    if not bool(torch.isfinite(total).all()):
        raise NeuroselError("output log-posteriors are not finite")
    if bool((total.abs() > LOG_PROB_TOLERANCE).any()):
        worst = float(total.abs().max())
        raise NeuroselError(f"model output is not per-frame log-posteriors: a frame's probabilities sum to "
                            f"{math.exp(worst):.4g} (apply log_softmax over the output units)")
    posteriors = x.exp()
    top2 = posteriors.topk(2, dim=1).values
    entropy = -torch.xlogy(posteriors, posteriors).sum(1) / math.log(2.0)
    blank_wins = (x.argmax(1) == blank).to(torch.float64)
    return torch.stack([top2[:, 0].sum(), (top2[:, 0] - top2[:, 1]).sum(), blank_wins.sum(), entropy.sum()])
