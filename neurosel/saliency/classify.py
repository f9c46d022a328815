"""Hyper / hypo / normal classification of FC neurons from their statistics.

Threshold mode (default): hyper = on_rate >= hyper_on_rate, hypo = on_rate <= hypo_on_rate.
Percentile mode: the top ``percent`` % of neurons by ``percentile_by`` (on_rate or mean
activation) are hyper and the bottom ``percent`` % hypo, ranked within each layer
(``scope="layer"``) or over all FC neurons together (``scope="global"``). Ties are broken by
position (layer, then neuron index) so that the selection is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from neurosel.errors import NeuroselError
from neurosel.saliency.stats import NeuronStats

CLASSES = ("hyper", "hypo", "normal")


@dataclass(frozen=True)
class ClassifyConfig:
    """How hyper and hypo neurons are chosen (see the module docstring)."""

    mode: Literal["threshold", "percentile"] = "threshold"
    hyper_on_rate: float = 0.95
    hypo_on_rate: float = 0.05
    percent: float = 5.0
    percentile_by: Literal["on_rate", "mean_act"] = "on_rate"
    scope: Literal["layer", "global"] = "layer"

    def __post_init__(self) -> None:
        if not self.hypo_on_rate < self.hyper_on_rate:
            raise ValueError(f"hypo_on_rate ({self.hypo_on_rate}) must be below "
                             f"hyper_on_rate ({self.hyper_on_rate})")
        if not 0.0 <= self.percent <= 50.0:
            raise ValueError(f"percent must be in [0, 50], got {self.percent}")


def classify(stats: NeuronStats, config: ClassifyConfig = ClassifyConfig()) -> list[np.ndarray]:
    """Per layer an array (D_l,) of "hyper" / "hypo" / "normal"."""
    return classify_values(stats.on_rate, stats.mean_act, config)


def classify_values(on_rate: list[Tensor], mean_act: list[Tensor],
                    config: ClassifyConfig = ClassifyConfig()) -> list[np.ndarray]:
    """``classify`` from per-layer (D_l,) on-rates and mean activations."""
    if config.mode == "threshold":
        return [_label(p >= config.hyper_on_rate, p <= config.hypo_on_rate) for p in on_rate]
    values = on_rate if config.percentile_by == "on_rate" else mean_act
    if config.scope == "layer":
        return [_label(*_extremes(v.to(torch.float64), config.percent)) for v in values]
    widths = [v.numel() for v in values]
    hyper, hypo = _extremes(torch.cat([v.to(torch.float64) for v in values]), config.percent)
    return [_label(h, l) for h, l in zip(hyper.split(widths), hypo.split(widths))]


def _extremes(values: Tensor, percent: float) -> tuple[Tensor, Tensor]:
    """Boolean masks of the top and bottom round(percent% of n) entries of ``values`` (n,)."""
    n = values.numel()
    k = int(round(percent / 100.0 * n))
    order = torch.sort(values, stable=True).indices
    top = torch.zeros(n, dtype=torch.bool)
    bottom = torch.zeros(n, dtype=torch.bool)
    if k:
        bottom[order[:k]] = True
        top[order[n - k:]] = True
    return top, bottom


def _label(hyper: Tensor, hypo: Tensor) -> np.ndarray:
    if (hyper & hypo).any():
        raise NeuroselError("a neuron is both hyper and hypo; check the classification thresholds")
    out = np.full(hyper.numel(), "normal", dtype="<U6")
    out[hyper.numpy()] = "hyper"
    out[hypo.numpy()] = "hypo"
    return out


def class_counts(classes: list[np.ndarray]) -> list[dict[str, int]]:
    """Per layer ``{"hyper": n, "hypo": n, "normal": n}``."""
    return [{c: int((labels == c).sum()) for c in CLASSES} for labels in classes]


def neurons_of(classes: list[np.ndarray], which: tuple[str, ...] = ("hyper", "hypo")
               ) -> dict[int, Tensor]:
    """Per layer the sorted indices (LongTensor) of neurons whose class is in ``which``; the
    input format of ``neurosel.prune.remove_neurons``."""
    unknown = set(which) - set(CLASSES)
    if unknown:
        raise NeuroselError(f"unknown neuron class {sorted(unknown)[0]!r} (known: {', '.join(CLASSES)})")
    return {layer: torch.from_numpy(np.flatnonzero(np.isin(labels, which))).to(torch.int64)
            for layer, labels in enumerate(classes)}
