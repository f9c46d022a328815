"""Unsupervised adaptation, model-agnostic: which parameters move (``select``) and LHUC (``lhuc``)."""

from neurosel.adapt.lhuc import add_lhuc, fold_lhuc, lhuc_parameters
from neurosel.adapt.select import (
    BLIND_SELECTIONS,
    Selection,
    SelectionSize,
    apply_selection,
    blind_selection,
    merge_selection,
    selection_size,
    train_mode,
)

__all__ = [
    "BLIND_SELECTIONS", "Selection", "SelectionSize", "add_lhuc", "apply_selection", "blind_selection",
    "fold_lhuc", "lhuc_parameters", "merge_selection", "selection_size", "train_mode",
]
