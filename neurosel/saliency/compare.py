"""Do pruning criteria find the hyper and hypo neurons? Selections at a fixed budget compared
with the hyper+hypo set, and overlaps between selections.

Selections are ``dict[layer, LongTensor]`` of sorted neuron indices, the format that
``classify.neurons_of`` returns and ``neurosel.prune.remove_neurons`` takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from neurosel.errors import NeuroselError
from neurosel.saliency.classify import neurons_of

Selection = dict[int, Tensor]


def select_lowest(scores: list[Tensor], counts: list[int]) -> Selection:
    """Per layer l the ``counts[l]`` neurons with the lowest scores (ties: lower index first)."""
    if len(counts) != len(scores):
        raise NeuroselError(f"{len(counts)} per-layer counts for {len(scores)} layers")
    out = {}
    for layer, (s, k) in enumerate(zip(scores, counts)):
        if not 0 <= k <= s.numel():
            raise NeuroselError(f"layer {layer}: cannot select {k} of {s.numel()} neurons")
        out[layer] = torch.sort(torch.sort(s, stable=True).indices[:k]).values
    return out


def select_lowest_global(scores: list[Tensor], total: int) -> Selection:
    """The ``total`` neurons with the lowest scores over all layers together (ties: lower layer,
    then lower index first)."""
    widths = [s.numel() for s in scores]
    if not 0 <= total <= sum(widths):
        raise NeuroselError(f"cannot select {total} of {sum(widths)} neurons")
    chosen = torch.zeros(sum(widths), dtype=torch.bool)
    chosen[torch.sort(torch.cat(scores), stable=True).indices[:total]] = True
    return {layer: torch.nonzero(c).flatten() for layer, c in enumerate(chosen.split(widths))}


@dataclass
class SelectionOverlap:
    """How one criterion's selection splits into classes, and how it matches the reference
    (hyper+hypo) set. Shares and scores are None when undefined (empty selection or set)."""

    criterion: str
    selected: int
    hyper: int
    hypo: int
    normal: int
    share_hyper: float | None
    share_hypo: float | None
    share_normal: float | None
    precision: float | None
    recall: float | None
    jaccard: float | None
    per_layer: list[dict[str, int]]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def overlap_with_classes(criterion: str, selection: Selection, classes: list[np.ndarray],
                         reference: tuple[str, ...] = ("hyper", "hypo")) -> SelectionOverlap:
    """Class shares of ``selection`` and precision/recall/Jaccard against the neurons whose
    class is in ``reference``."""
    ref = neurons_of(classes, reference)
    per_layer = []
    for layer, labels in enumerate(classes):
        picked = labels[selection.get(layer, torch.empty(0, dtype=torch.int64)).numpy()]
        per_layer.append({c: int((picked == c).sum()) for c in ("hyper", "hypo", "normal")})
    n = {c: sum(d[c] for d in per_layer) for c in ("hyper", "hypo", "normal")}
    selected = sum(n.values())
    hits = sum(_intersection(selection.get(layer), ref[layer]) for layer in ref)
    n_ref = sum(r.numel() for r in ref.values())
    return SelectionOverlap(
        criterion, selected, n["hyper"], n["hypo"], n["normal"],
        _ratio(n["hyper"], selected), _ratio(n["hypo"], selected), _ratio(n["normal"], selected),
        _ratio(hits, selected), _ratio(hits, n_ref), _ratio(hits, selected + n_ref - hits), per_layer)


def _intersection(a: Tensor | None, b: Tensor) -> int:
    if a is None:
        return 0
    return int(np.intersect1d(a.numpy(), b.numpy()).size)


def compare_criteria(scores: dict[str, list[Tensor]], classes: list[np.ndarray],
                     scope: Literal["layer", "global"] = "layer") -> list[SelectionOverlap]:
    """For a budget equal to the number of hyper+hypo neurons (per layer, or in total with
    ``scope="global"``), each criterion's lowest-scored selection compared with that set."""
    counts = [int(r.numel()) for r in neurons_of(classes).values()]
    rows = []
    for name, s in scores.items():
        if [t.numel() for t in s] != [len(c) for c in classes]:
            raise NeuroselError(f"criterion {name}: scores for widths {[t.numel() for t in s]}, "
                                f"classes for {[len(c) for c in classes]}")
        selection = select_lowest(s, counts) if scope == "layer" else select_lowest_global(s, sum(counts))
        rows.append(overlap_with_classes(name, selection, classes))
    return rows


def selection_jaccard(a: Selection, b: Selection) -> list[float | None]:
    """Per layer |a & b| / |a | b| (e.g. hyper+hypo sets from two reference sets); None where
    both are empty."""
    layers = sorted(set(a) | set(b))
    out = []
    for layer in range(max(layers) + 1 if layers else 0):
        sa = set(a.get(layer, torch.empty(0, dtype=torch.int64)).tolist())
        sb = set(b.get(layer, torch.empty(0, dtype=torch.int64)).tolist())
        out.append(_ratio(len(sa & sb), len(sa | sb)))
    return out
