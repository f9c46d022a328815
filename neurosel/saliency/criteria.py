"""Pruning criteria: one score per FC neuron, low = prune first.

Each criterion is a plain function of what it needs (weights, activation statistics, Taylor
statistics, a seed) returning per layer a float64 tensor (D_l,). ``CRITERIA`` maps the names
used in system names (``prune_<criterion>``) to functions of one ``CriterionInputs``, so a stage
can score every criterion the same way::

    inputs = CriterionInputs(model, spec, stats=stats, taylor=taylor, seed=1)
    scores = score_all(inputs)               # {"magnitude": [tensor(D_0), ...], ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, check_spec, get_linear
from neurosel.saliency.stats import NeuronStats
from neurosel.saliency.taylor import TaylorStats


class MissingInput(NeuroselError):
    """A criterion's input (weights, neuron or Taylor statistics) was not given."""


def magnitude_scores(model: nn.Module, spec: FcSpec) -> list[Tensor]:
    """L2 norm of each neuron's incoming weights (row j of W_l; the bias is not included)."""
    check_spec(model, spec)
    return [get_linear(model, name).weight.detach().to(torch.float64).norm(dim=1)
            for name in spec.linears]


def outgoing_scores(model: nn.Module, spec: FcSpec, norm: Literal["l2", "l1"] = "l2") -> list[Tensor]:
    """L2 (or L1) norm of each neuron's outgoing weights (column j of the consumer's weight)."""
    check_spec(model, spec)
    p = {"l2": 2, "l1": 1}[norm]
    return [get_linear(model, name).weight.detach().to(torch.float64).norm(p=p, dim=0)
            for name in spec.consumers]


def wanda_scores(model: nn.Module, spec: FcSpec, stats: NeuronStats) -> list[Tensor]:
    """Wanda's importance (Sun et al., ICLR 2024, |W_ij| * ||X_j||_2 per weight) summed over each
    neuron's incoming weights: sum_i |W_l[j, i]| * rms_i, with rms_i the root mean square of the
    linear's input i over the reference frames (Wanda's norm divided by sqrt(frames), which
    leaves each layer's ranking as it is and makes scores independent of the reference set's size).
    Needs statistics collected with ``input_norms``."""
    check_spec(model, spec)
    if stats.input_sumsq is None:
        raise MissingInput("criterion wanda needs neuron statistics collected with input_norms=True")
    return [get_linear(model, name).weight.detach().to(torch.float64).abs() @ rms
            for name, rms in zip(spec.linears, stats.input_rms)]


def flap_scores(model: nn.Module, spec: FcSpec, stats: NeuronStats) -> list[Tensor]:
    """FLAP's fluctuation metric (An et al., AAAI 2024) for a neuron as an input channel of its
    consumer: the variance of its activation over the reference frames times the squared L2 norm
    of its outgoing weights (column j of the consumer). FLAP's bias compensation, adding the
    removed channel's mean times its column to the consumer's bias, is ``remove_neurons``'s
    ``fold_mean``."""
    check_spec(model, spec)
    return [var * get_linear(model, name).weight.detach().to(torch.float64).square().sum(0)
            for name, var in zip(spec.consumers, stats.variance)]


def mean_act_scores(stats: NeuronStats) -> list[Tensor]:
    """Mean activation over the reference frames."""
    return [m.clone() for m in stats.mean_act]


def apoz_scores(stats: NeuronStats) -> list[Tensor]:
    """1 - APoZ, with APoZ the share of frames at or below theta (Hu et al. 2016), so that high
    APoZ is pruned first. As APoZ = 1 - on_rate, the score is the on-rate itself."""
    return [p.clone() for p in stats.on_rate]


def entropy_scores(stats: NeuronStats) -> list[Tensor]:
    """On/off entropy in bits (He et al. 2014): near 0 for neurons almost always on or off."""
    return stats.entropy


def random_scores(widths: list[int], seed: int) -> list[Tensor]:
    """Uniform random scores from a generator seeded with ``seed`` (the control)."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(d, generator=generator, dtype=torch.float64) for d in widths]


def taylor1_scores(taylor: TaylorStats) -> list[Tensor]:
    """|mean_t a_j(t) dE/da_j(t)| (Molchanov et al. 2017)."""
    _require_frames(taylor)
    return [(s / taylor.count).abs() for s in taylor.sum_ag]


def taylor2_scores(taylor: TaylorStats) -> list[Tensor]:
    """|mean_t (-a g + 1/2 a^2 d2E/da2)|: the second-order estimate of the loss change when the
    neuron's output is set to 0 (Sharma, Wolfe & Raj 2017; estimator in ``saliency.taylor``)."""
    _require_frames(taylor)
    if not taylor.has_hessian:
        raise MissingInput("criterion taylor2 needs Taylor statistics collected with hessian_probes >= 1")
    return [((0.5 * s2 - s1) / taylor.count).abs() for s1, s2 in zip(taylor.sum_ag, taylor.sum_a2h)]


def _require_frames(taylor: TaylorStats) -> None:
    if taylor.count == 0:
        raise NeuroselError("Taylor statistics hold no frames")


@dataclass
class CriterionInputs:
    """What the criteria in ``CRITERIA`` may read; each needs only some of it."""

    model: nn.Module | None = None
    spec: FcSpec | None = None
    stats: NeuronStats | None = None
    taylor: TaylorStats | None = None
    seed: int = 0
    outgoing_norm: Literal["l2", "l1"] = "l2"

    def weights(self, name: str) -> tuple[nn.Module, FcSpec]:
        if self.model is None or self.spec is None:
            raise MissingInput(f"criterion {name} needs the model and its FC spec")
        return self.model, self.spec

    def neuron_stats(self, name: str) -> NeuronStats:
        if self.stats is None:
            raise MissingInput(f"criterion {name} needs neuron statistics (collect_stats)")
        return self.stats

    def taylor_stats(self, name: str) -> TaylorStats:
        if self.taylor is None:
            raise MissingInput(f"criterion {name} needs Taylor statistics (collect_taylor)")
        return self.taylor

    def widths(self) -> list[int]:
        if self.stats is not None:
            return self.stats.widths
        if self.taylor is not None:
            return [t.numel() for t in self.taylor.sum_ag]
        model, spec = self.weights("random")
        return [get_linear(model, name).out_features for name in spec.linears]


Criterion = Callable[[CriterionInputs], list[Tensor]]

CRITERIA: dict[str, Criterion] = {
    "magnitude": lambda x: magnitude_scores(*x.weights("magnitude")),
    "outgoing": lambda x: outgoing_scores(*x.weights("outgoing"), norm=x.outgoing_norm),
    "taylor1": lambda x: taylor1_scores(x.taylor_stats("taylor1")),
    "taylor2": lambda x: taylor2_scores(x.taylor_stats("taylor2")),
    "mean_act": lambda x: mean_act_scores(x.neuron_stats("mean_act")),
    "apoz": lambda x: apoz_scores(x.neuron_stats("apoz")),
    "entropy": lambda x: entropy_scores(x.neuron_stats("entropy")),
    "random": lambda x: random_scores(x.widths(), x.seed),
    "wanda": lambda x: wanda_scores(*x.weights("wanda"), x.neuron_stats("wanda")),
    "flap": lambda x: flap_scores(*x.weights("flap"), x.neuron_stats("flap")),
}


def score(name: str, inputs: CriterionInputs) -> list[Tensor]:
    """Scores of criterion ``name`` (a key of ``CRITERIA``), per layer (D_l,) float64."""
    if name not in CRITERIA:
        raise NeuroselError(f"unknown pruning criterion '{name}' (known: {', '.join(CRITERIA)})")
    return CRITERIA[name](inputs)


def score_all(inputs: CriterionInputs, names: list[str] | None = None) -> dict[str, list[Tensor]]:
    """``{name: scores}`` for ``names``; by default every criterion of ``CRITERIA`` whose inputs
    ``inputs`` holds (without Taylor statistics, say, all but ``taylor1`` and ``taylor2``). A
    criterion named in ``names`` whose inputs are missing raises ``NeuroselError``."""
    if names is not None:
        return {name: score(name, inputs) for name in names}
    scores = {}
    for name in CRITERIA:
        try:
            scores[name] = score(name, inputs)
        except MissingInput:
            continue
    return scores
