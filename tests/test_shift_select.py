"""Choosing a WER predictor's signals (``neurosel.shift.select``): the search finds the signal WER
depends on, and the nested judgement never lets the held-out condition reach the choice or the fit."""

from __future__ import annotations

import numpy as np
import pytest

from neurosel.errors import NeuroselError
from neurosel.shift import LabelledSet, loco_splits
from neurosel.shift.select import nested_leave_one_condition_out, select_signals, signal_lists


def labelled(seed: int = 0, per_condition: int = 4) -> list[LabelledSet]:
    """Five conditions; WER = 5 + 30 * severity + small noise; ``severity`` is measured by
    ``good`` (exactly), by ``rough`` (with large noise); ``junk`` is unrelated."""
    rng = np.random.default_rng(seed)
    sets = []
    for c in ("clean", "babble", "reverb", "phone", "codec"):
        for k in range(per_condition):
            severity = rng.uniform(0, 2)
            signals = {"good": severity, "rough": severity + rng.normal(0, 0.6), "junk": rng.normal()}
            sets.append(LabelledSet(f"{c}{k}", c, signals, 5 + 30 * severity + rng.normal(0, 0.5)))
    return sets


def test_signal_lists_are_singles_then_pairs():
    assert signal_lists(["a", "b", "c"]) == [("a",), ("b",), ("c",), ("a", "b"), ("a", "c"), ("b", "c")]
    assert signal_lists(["a", "b"], 1) == [("a",), ("b",)]


def test_the_search_picks_the_signal_wer_depends_on():
    sets = labelled()
    picked, mae = select_signals(sets, [("junk",), ("rough",), ("good",), ("junk", "rough")])
    assert picked == ("good",) and mae < 1.0


def test_nested_choice_never_sees_the_held_out_condition():
    sets = labelled()
    # "leak" tracks WER exactly on the codec sets only: a choice that saw them would like it
    sets = [LabelledSet(s.name, s.condition, {**s.signals, "leak": s.wer if s.condition == "codec" else 0.0 * s.wer
                                              + np.random.default_rng(len(s.name)).normal()}, s.wer) for s in sets]
    candidates = signal_lists(["good", "rough", "junk", "leak"])
    score, picked = nested_leave_one_condition_out(sets, candidates, "search")
    assert set(picked) == {"clean", "babble", "reverb", "phone", "codec"}
    for split in loco_splits(sets):
        assert picked[split.condition] == select_signals(split.train, candidates)[0]
    for h in score.held_out:
        held = {s.name for s in sets if s.condition == h.set.condition}
        assert not held & set(h.fitted_on)
    assert "good" in score.signals and score.mae < 2.0 and score.pearson > 0.95


def test_nothing_judgeable_is_an_error():
    sets = labelled(per_condition=1)[:3]  # three sets: no pair, nor even one signal, leaves a residual
    with pytest.raises(NeuroselError, match="without condition 'clean': no candidate signal list"):
        nested_leave_one_condition_out(sets, signal_lists(["good", "rough"]))
