"""Unsupervised adaptation, model-agnostic: which parameters move (``select``), LHUC (``lhuc``), and
test-time adaptation one utterance at a time (``tta``)."""

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
from neurosel.adapt.tta import TtaAdapter, TtaConfig, interleave, suta_objective

__all__ = [
    "BLIND_SELECTIONS", "Selection", "SelectionSize", "TtaAdapter", "TtaConfig", "add_lhuc", "apply_selection",
    "blind_selection", "fold_lhuc", "interleave", "lhuc_parameters", "merge_selection", "selection_size",
    "suta_objective", "train_mode",
]
