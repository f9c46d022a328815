"""WER prediction from shift signals (neurosel.shift.predict, metrics, tdist): the fit recovers a
known relation, its interval covers new sets at the nominal rate, leave-one-condition-out never
lets a held-out condition into the fit, and the one-line verdict follows its rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from neurosel.errors import NeuroselError
from neurosel.shift import (LabelledSet, ShiftSignals, WerPrediction, WerPredictor, compare_predictors, fit_wer,
                            leave_one_condition_out, loco_splits, pearson, spearman, utterance_spearman, verdict)
from neurosel.shift.metrics import ranks
from neurosel.shift.tdist import t_cdf, t_quantile


def labelled(rng: np.random.Generator, n: int, noise: float, condition: str = "c",
             prefix: str = "s") -> list[LabelledSet]:
    """Sets whose WER = 20 + 40 a - 10 b + Gaussian noise, a and b uniform on [0, 1], and a signal
    ``junk`` unrelated to WER."""
    out = []
    for i in range(n):
        a, b, junk = rng.uniform(size=3)
        wer = 20 + 40 * a - 10 * b + noise * rng.standard_normal()
        out.append(LabelledSet(f"{prefix}{i}", condition, {"a": a, "b": b, "junk": junk}, wer))
    return out


def test_t_quantiles_match_the_tables():
    table = {(1, 0.975): 12.706, (2, 0.975): 4.303, (3, 0.95): 2.353, (5, 0.975): 2.571,
             (10, 0.95): 1.812, (10, 0.975): 2.228, (30, 0.975): 2.042, (30, 0.995): 2.750}
    for (dof, q), t in table.items():
        assert t_quantile(q, dof) == pytest.approx(t, abs=1e-3), (dof, q)
        assert t_quantile(1 - q, dof) == pytest.approx(-t, abs=1e-3)
        assert t_cdf(t_quantile(q, dof), dof) == pytest.approx(q, abs=1e-9)
    assert t_cdf(0.0, 7) == 0.5


def test_t_distribution_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for dof in (1, 2, 3, 4, 5, 8, 13, 40):
        for x in (-7.0, -1.3, 0.2, 2.5, 40.0):
            assert t_cdf(x, dof) == pytest.approx(stats.t.cdf(x, dof), abs=1e-12), (x, dof)


def test_fit_recovers_a_known_linear_relation():
    sets = labelled(np.random.default_rng(0), 10, noise=0.0)
    predictor = fit_wer(sets, ["a", "b"])
    assert predictor.dof == 7 and predictor.residual_std == pytest.approx(0.0, abs=1e-9)
    for a, b in ((0.0, 0.0), (0.5, 0.9), (2.0, 0.1)):  # also outside the fitted range
        got = predictor.predict({"a": a, "b": b, "unused": 1.0})
        assert got.wer == pytest.approx(20 + 40 * a - 10 * b, abs=1e-9)
        assert got.high - got.low == pytest.approx(0.0, abs=1e-6)
    lstsq = np.linalg.lstsq(np.c_[np.ones(10), [[s.signals["a"], s.signals["b"]] for s in sets]],
                            [s.wer for s in sets], rcond=None)[0]
    assert lstsq == pytest.approx([20, 40, -10])


@pytest.mark.parametrize("signals,level", [(["a"], 0.9), (["a", "b"], 0.9), (["a", "b", "junk"], 0.5)])
def test_interval_covers_new_sets_at_the_nominal_rate(signals, level):
    """Gaussian residuals: the t interval is exact, so over 2000 fresh fits the share of new sets
    inside it is the level to within sampling error (3.5 sd: 0.039 at 0.5, 0.023 at 0.9; a normal
    instead of a t quantile, at 6 or 7 residual degrees of freedom, covers 0.85 to 0.86)."""
    rng = np.random.default_rng(1)
    trials = 2000
    covered = 0
    for _ in range(trials):
        sets = labelled(rng, 9, noise=3.0)
        new = labelled(rng, 1, noise=3.0)[0]
        if "b" not in signals:  # b then is noise the predictor does not see: keep it fixed
            sets = [LabelledSet(s.name, s.condition, s.signals, s.wer + 10 * s.signals["b"] - 5) for s in sets]
            new = LabelledSet(new.name, new.condition, new.signals, new.wer + 10 * new.signals["b"] - 5)
        prediction = fit_wer(sets, signals).predict(new.signals, level)
        covered += prediction.low <= new.wer <= prediction.high
    assert covered / trials == pytest.approx(level, abs=3.5 * math.sqrt(level * (1 - level) / trials))


def test_predictor_round_trips_through_json():
    sets = labelled(np.random.default_rng(7), 8, noise=2.0)
    predictor = fit_wer(sets, ["a", "b"], ridge=0.5)
    again = WerPredictor.from_dict(json.loads(json.dumps(predictor.to_dict())))
    assert again.predict(sets[0].signals) == predictor.predict(sets[0].signals)
    assert again.fitted_on == predictor.fitted_on
    broken = {**predictor.to_dict(), "coef": [1.0, 2.0]}
    with pytest.raises(NeuroselError, match="shift/predictor.json: inconsistent WER predictor for 2 signal"):
        WerPredictor.from_dict(broken, "shift/predictor.json")
    with pytest.raises(NeuroselError, match="not a WER predictor"):
        WerPredictor.from_dict({"signals": ["a"]})


def test_ridge_shrinks_towards_the_mean():
    sets = labelled(np.random.default_rng(2), 12, noise=2.0)
    point = {"a": 0.9, "b": 0.1, "junk": 0.5}
    exact = fit_wer(sets, ["a", "b"]).predict(point).wer
    mean = float(np.mean([s.wer for s in sets]))
    shrunk = [fit_wer(sets, ["a", "b"], ridge).predict(point).wer for ridge in (0.0, 1.0, 10.0, 1e6)]
    assert shrunk[0] == pytest.approx(exact)
    assert all(abs(x - mean) > abs(y - mean) for x, y in zip(shrunk, shrunk[1:]))
    assert shrunk[-1] == pytest.approx(mean, abs=1e-3)
    assert fit_wer(sets, ["a", "b"], 10.0).dof >= fit_wer(sets, ["a", "b"]).dof


def conditions(rng: np.random.Generator) -> list[LabelledSet]:
    """Four conditions of three sets each; WER follows signal a in every one."""
    return [s for c in ("clean", "babble", "telephone", "reverb")
            for s in labelled(rng, 3, noise=1.0, condition=c, prefix=f"{c}_")]


def test_loco_splits_hold_each_condition_out_once():
    sets = conditions(np.random.default_rng(3))
    splits = loco_splits(sets)
    assert [s.condition for s in splits] == ["clean", "babble", "telephone", "reverb"]
    for split in splits:
        assert all(s.condition != split.condition for s in split.train)
        assert all(s.condition == split.condition for s in split.held_out)
        assert len(split.train) + len(split.held_out) == len(sets)
    assert sorted(s.name for split in splits for s in split.held_out) == sorted(s.name for s in sets)


def test_loco_never_leaks_a_held_out_condition():
    """A held-out condition's own WER cannot move its predictions; it does move the others'."""
    sets = conditions(np.random.default_rng(4))
    score = leave_one_condition_out(sets, ["a"])
    for h in score.held_out:
        assert all(not name.startswith(h.set.condition + "_") for name in h.fitted_on)
    changed = [LabelledSet(s.name, s.condition, s.signals, s.wer + 50.0 if s.condition == "babble" else s.wer)
               for s in sets]
    rescored = {h.set.name: h.prediction for h in leave_one_condition_out(changed, ["a"]).held_out}
    for h in score.held_out:
        if h.set.condition == "babble":
            assert rescored[h.set.name] == h.prediction
        else:
            assert rescored[h.set.name].wer != pytest.approx(h.prediction.wer)


def test_compare_predictors_tells_a_good_signal_from_a_useless_one():
    sets = conditions(np.random.default_rng(5))
    scores = {s.name: s for s in compare_predictors(
        sets, {"a alone": ["a"], "junk alone": ["junk"], "combined": ["a", "b"]})}
    assert scores["combined"].pearson > 0.98 and scores["combined"].mae < 2.0
    assert scores["a alone"].pearson > 0.8
    assert scores["junk alone"].pearson < 0.5 and scores["junk alone"].mae > 2 * scores["combined"].mae
    assert scores["combined"].signals == ("a", "b")
    assert leave_one_condition_out(sets, ["a", "b"]).name == "a+b"
    true = np.array([h.set.wer for h in scores["combined"].held_out])
    predicted = np.array([h.prediction.wer for h in scores["combined"].held_out])
    assert scores["combined"].mae == pytest.approx(np.abs(true - predicted).mean())
    assert 0.0 <= scores["combined"].coverage <= 1.0


def test_rank_correlation():
    assert list(ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]
    x = np.array([1.0, 2.0, 2.0, 5.0, 7.0, 0.5])
    y = np.array([2.0, 1.0, 4.0, 4.0, 9.0, 0.0])
    assert spearman(x, y) == pytest.approx(pearson(ranks(x), ranks(y)))
    assert spearman(x, np.exp(x)) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(pearson(x, np.ones(6)))
    stats = pytest.importorskip("scipy.stats")
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)


def test_utterance_spearman():
    signals = ShiftSignals(("u1", "u2", "u3"), np.array([5, 5, 10]),
                           {"max_posterior": np.array([0.9, 0.5, 0.7])})
    assert utterance_spearman(signals, "max_posterior", {"u1": 10.0, "u2": 80.0, "u3": 40.0}) == pytest.approx(-1.0)
    with pytest.raises(NeuroselError, match="no WER for utterance 'u3'"):
        utterance_spearman(signals, "max_posterior", {"u1": 10.0, "u2": 80.0})
    with pytest.raises(NeuroselError, match="no shift signal 'gap'"):
        utterance_spearman(signals, "gap", {})


def test_verdict_rule_and_line():
    shifted = verdict(WerPrediction(35.24, 30.06, 40.31, 0.9), in_domain_wer=20.0)
    assert shifted.shifted and shifted.line == "shifted: predicted WER 35.2, range [30.1, 40.3]"
    like = verdict(WerPrediction(25.0, 19.0, 31.0, 0.9), in_domain_wer=20.0)  # interval reaches in-domain WER
    assert not like.shifted and like.line == "like the training data"


def test_prediction_is_cut_at_zero():
    sets = [LabelledSet(f"s{i}", "c", {"a": float(i)}, 50.0 - 10.0 * i + (-1) ** i) for i in range(5)]
    got = fit_wer(sets, ["a"]).predict({"a": 20.0})
    assert got.wer == 0.0 and got.low == 0.0 and got.high >= 0.0


def test_predictor_errors():
    sets = labelled(np.random.default_rng(6), 4, noise=1.0)
    with pytest.raises(NeuroselError, match="needs at least 4 sets with WER, got 3"):
        fit_wer(sets[:3], ["a", "b"])
    with pytest.raises(NeuroselError, match="set 's0' has no signal 'gap'"):
        fit_wer(sets, ["gap"])
    with pytest.raises(NeuroselError, match="at least one signal"):
        fit_wer(sets, [])
    constant = [LabelledSet(s.name, s.condition, {**s.signals, "k": 1.0}, s.wer) for s in sets]
    with pytest.raises(NeuroselError, match="'k' is constant"):
        fit_wer(constant, ["k"])
    twice = [LabelledSet(s.name, s.condition, {**s.signals, "a2": 2 * s.signals["a"]}, s.wer) for s in sets]
    with pytest.raises(NeuroselError, match="collinear"):
        fit_wer(twice, ["a", "a2"])
    fit_wer(twice, ["a", "a2"], ridge=1.0)  # ridge makes it well posed
    nan = [LabelledSet(s.name, s.condition, {"a": math.nan}, s.wer) for s in sets]
    with pytest.raises(NeuroselError, match="signal 'a' is not finite"):
        fit_wer(nan, ["a"])
    with pytest.raises(NeuroselError, match="level must be in"):
        fit_wer(sets, ["a"]).predict(sets[0].signals, level=1.0)
    with pytest.raises(NeuroselError, match="at least two conditions"):
        loco_splits(sets)
    with pytest.raises(NeuroselError, match="'s0' appears twice"):
        loco_splits(sets + [LabelledSet("s0", "other", {}, 1.0)])
    few = sets + [LabelledSet("x0", "other", sets[0].signals, 30.0)]
    with pytest.raises(NeuroselError, match="without condition 'c': .* needs at least 3 sets"):
        leave_one_condition_out(few, ["a"])
