"""Choosing a WER predictor's signals on the data, and judging that choice honestly.

``select_signals`` picks, among candidate signal lists (e.g. every pair of the set-level signals,
per layer included), the one whose leave-one-condition-out mean absolute error on the given sets
is lowest. Its own held-out error is optimistic: it was picked by looking at every held-out set.
``nested_leave_one_condition_out`` judges the selection procedure instead: for each condition,
``select_signals`` runs on the other conditions' sets only (an inner leave-one-condition-out), the
list it picks is fitted on those sets and predicts the held-out condition's sets. No set of the
held-out condition reaches either the choice of signals or the fit, so the resulting r and MAE are
those a user can expect on a new condition from the whole procedure.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from neurosel.errors import NeuroselError
from neurosel.shift.metrics import mean_absolute_error, pearson
from neurosel.shift.predict import (HeldOutPrediction, LabelledSet, LocoScore, fit_wer, leave_one_condition_out,
                                    loco_splits)


def signal_lists(names: Sequence[str], size: int = 2) -> list[tuple[str, ...]]:
    """Every list of 1..``size`` distinct signals of ``names``, singles first."""
    return [c for k in range(1, size + 1) for c in itertools.combinations(names, k)]


def select_signals(sets: Sequence[LabelledSet], candidates: Sequence[tuple[str, ...]],
                   ridge: float = 0.0) -> tuple[tuple[str, ...], float]:
    """(the candidate with the lowest leave-one-condition-out MAE on ``sets``, that MAE); the first
    of equals. Candidates that cannot be fitted on a split (too few sets, a constant or collinear
    signal) are passed over; ``NeuroselError`` when none can be judged."""
    best: tuple[tuple[str, ...], float] | None = None
    for signals in candidates:
        try:
            mae = leave_one_condition_out(sets, signals, ridge=ridge).mae
        except NeuroselError:
            continue
        if np.isfinite(mae) and (best is None or mae < best[1]):
            best = (tuple(signals), mae)
    if best is None:
        raise NeuroselError(f"no candidate signal list could be judged leave-one-condition-out on {len(sets)} sets "
                            f"({', '.join(s.name for s in sets[:4])}{', ...' if len(sets) > 4 else ''})")
    return best


def nested_leave_one_condition_out(sets: Sequence[LabelledSet], candidates: Sequence[tuple[str, ...]],
                                   name: str = "selected", ridge: float = 0.0,
                                   level: float = 0.9) -> tuple[LocoScore, dict[str, tuple[str, ...]]]:
    """The selection procedure judged leave-one-condition-out (module docs): its ``LocoScore``
    (whose ``signals`` are those ``select_signals`` picks on all of ``sets``: the predictor a user
    gets) and, per held-out condition, the signals picked without it."""
    held_out: list[HeldOutPrediction] = []
    picked: dict[str, tuple[str, ...]] = {}
    for split in loco_splits(sets):
        try:
            picked[split.condition], _ = select_signals(split.train, candidates, ridge)
            predictor = fit_wer(split.train, picked[split.condition], ridge)
        except NeuroselError as e:
            raise NeuroselError(f"without condition {split.condition!r}: {e}") from e
        held_out += [HeldOutPrediction(s, predictor.predict(s.signals, level), predictor.fitted_on)
                     for s in split.held_out]
    final, _ = select_signals(sets, candidates, ridge)
    predicted = np.array([h.prediction.wer for h in held_out])
    true = np.array([h.set.wer for h in held_out])
    covered = [h.prediction.low <= h.set.wer <= h.prediction.high for h in held_out]
    return (LocoScore(name, final, tuple(held_out), pearson(predicted, true), mean_absolute_error(predicted, true),
                      float(np.mean(covered))), picked)
