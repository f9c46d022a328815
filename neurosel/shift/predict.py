"""Predict a set's WER from its shift signals, judge the prediction leave-one-condition-out, and
say in one line whether a set looks like the training data.

Predictor: least squares (ridge > 0: ridge regression) of WER on a few signals of sets whose WER
was measured, each signal standardised by its mean and standard deviation over the fitting sets
(the intercept is not penalised). The prediction interval at ``level`` treats the residuals as
independent and Gaussian with one variance: yhat +- t_{(1+level)/2, nu} s sqrt(1 + x0' C x0), with
A = X'X + ridge I' (I' without the intercept), C = A^-1 X'X A^-1 (= (X'X)^-1 for least squares),
nu = floor(n - trace(A^-1 X'X)) residual degrees of freedom (n - k - 1 for least squares; the
floor makes a ridge interval a little wider) and s^2 = residual sum of squares / nu. WER cannot be
negative: the prediction and its interval are cut at 0. The interval is one of a set's WER; for a
single utterance the same formula gives the expected WER of audio like it, not the range of its
own WER.

Leave-one-condition-out: every set carries a condition (``clean``, ``babble``, ...; in-domain sets
are a condition too); for each condition the predictor is fitted on the sets of the other
conditions only and predicts the held-out condition's sets. ``loco_splits`` builds the fitting
sets by excluding the condition, so no set of it can reach the fit, and every prediction records
the names of the sets it was fitted on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from neurosel.errors import NeuroselError
from neurosel.shift.metrics import mean_absolute_error, pearson
from neurosel.shift.tdist import t_quantile

# Above this condition number of A the signals are too collinear for the fit to mean anything.
MAX_CONDITION = 1e10


@dataclass(frozen=True)
class LabelledSet:
    """A set with measured WER (percent): its ``name``, its ``condition``, its set-level shift
    ``signals`` (e.g. ``ShiftSignals.set_values()``)."""

    name: str
    condition: str
    signals: Mapping[str, float]
    wer: float


@dataclass(frozen=True)
class WerPrediction:
    """Predicted WER (percent) and the ``level`` prediction interval [low, high]."""

    wer: float
    low: float
    high: float
    level: float


@dataclass(frozen=True)
class WerPredictor:
    """A fitted predictor (see the module docs): ``coef`` (k+1,) on [1, standardised signals],
    ``center``/``scale`` (k,) the signals' mean and standard deviation over the fitting sets,
    ``coef_cov`` (k+1, k+1) C, ``residual_std`` s, ``dof`` nu, ``fitted_on`` the fitting sets'
    names."""

    signals: tuple[str, ...]
    ridge: float
    center: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    coef_cov: np.ndarray
    residual_std: float
    dof: int
    fitted_on: tuple[str, ...]

    def predict(self, signals: Mapping[str, float], level: float = 0.9) -> WerPrediction:
        """The WER of a set (or an utterance) with these signal values."""
        if not 0.0 < level < 1.0:
            raise NeuroselError(f"prediction interval level must be in (0, 1), got {level}")
        x = np.r_[1.0, (_signal_vector(signals, self.signals, "the predicted set") - self.center) / self.scale]
        wer = float(x @ self.coef)
        half = t_quantile((1.0 + level) / 2.0, self.dof) * self.residual_std * math.sqrt(1.0 + x @ self.coef_cov @ x)
        return WerPrediction(max(wer, 0.0), max(wer - half, 0.0), max(wer + half, 0.0), level)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (JSON or YAML), read back by ``from_dict``."""
        return {"signals": list(self.signals), "ridge": self.ridge, "center": self.center.tolist(),
                "scale": self.scale.tolist(), "coef": self.coef.tolist(), "coef_cov": self.coef_cov.tolist(),
                "residual_std": self.residual_std, "dof": self.dof, "fitted_on": list(self.fitted_on)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "WER predictor") -> WerPredictor:
        """Inverse of ``to_dict``; ``NeuroselError`` naming ``where`` for anything else."""
        try:
            k = len(data["signals"])
            out = cls(tuple(str(n) for n in data["signals"]), float(data["ridge"]),
                      *(np.array(data[name], dtype=np.float64) for name in ("center", "scale", "coef", "coef_cov")),
                      float(data["residual_std"]), int(data["dof"]), tuple(str(n) for n in data["fitted_on"]))
        except (KeyError, TypeError, ValueError) as e:
            raise NeuroselError(f"{where}: not a WER predictor ({e!r})") from e
        shapes = [a.shape for a in (out.center, out.scale, out.coef, out.coef_cov)]
        if shapes != [(k,), (k,), (k + 1,), (k + 1, k + 1)] or out.dof < 1 or not (out.scale > 0).all():
            raise NeuroselError(f"{where}: inconsistent WER predictor for {k} signal(s) (shapes {shapes}, "
                                f"dof {out.dof})")
        return out


def fit_wer(sets: Sequence[LabelledSet], signals: Sequence[str], ridge: float = 0.0) -> WerPredictor:
    """Fit WER ~ ``signals`` on ``sets`` (see the module docs). ``NeuroselError`` for a missing or
    non-finite signal, a signal constant over the sets, collinear signals (use fewer, or
    ``ridge`` > 0) or too few sets to leave a residual degree of freedom."""
    names = tuple(signals)
    if not names:
        raise NeuroselError("a WER predictor needs at least one signal")
    if ridge < 0:
        raise NeuroselError(f"ridge must be >= 0, got {ridge}")
    rows = [_signal_vector(s.signals, names, f"set {s.name!r}") for s in sets]
    features = np.array(rows).reshape(len(sets), len(names))
    wer = np.array([s.wer for s in sets], dtype=np.float64)
    if not np.isfinite(wer).all():
        raise NeuroselError(f"set {sets[int(np.flatnonzero(~np.isfinite(wer))[0])].name!r}: WER is not finite")
    n = len(sets)
    if n < len(names) + 2:
        raise NeuroselError(f"a WER predictor on {len(names)} signal(s) needs at least {len(names) + 2} sets "
                            f"with WER, got {n}")
    center, scale = features.mean(0), features.std(0)
    if (scale == 0).any():
        raise NeuroselError(f"signal {names[int(np.flatnonzero(scale == 0)[0])]!r} is constant over the {n} "
                            "fitting sets; it cannot predict WER")
    x = np.c_[np.ones(n), (features - center) / scale]
    gram = x.T @ x
    a = gram + ridge * np.diag(np.r_[0.0, np.ones(len(names))])
    if np.linalg.cond(a) > MAX_CONDITION:
        raise NeuroselError(f"signals {', '.join(names)} are collinear over the {n} fitting sets; use fewer "
                            "signals or ridge > 0")
    a_inv = np.linalg.inv(a)
    coef = a_inv @ x.T @ wer
    dof = math.floor(n - float(np.trace(a_inv @ gram)) + 1e-9)
    residuals = wer - x @ coef
    return WerPredictor(names, ridge, center, scale, coef, a_inv @ gram @ a_inv,
                        math.sqrt(float(residuals @ residuals) / dof), dof, tuple(s.name for s in sets))


def _signal_vector(signals: Mapping[str, float], names: tuple[str, ...], where: str) -> np.ndarray:
    missing = [n for n in names if n not in signals]
    if missing:
        raise NeuroselError(f"{where} has no signal {missing[0]!r}")
    values = np.array([float(signals[n]) for n in names], dtype=np.float64)
    if not np.isfinite(values).all():
        raise NeuroselError(f"{where}: signal {names[int(np.flatnonzero(~np.isfinite(values))[0])]!r} is not finite")
    return values


@dataclass(frozen=True)
class LocoSplit:
    """The sets of one ``condition`` (``held_out``) and those of every other condition (``train``)."""

    condition: str
    train: tuple[LabelledSet, ...]
    held_out: tuple[LabelledSet, ...]


def loco_splits(sets: Sequence[LabelledSet]) -> list[LocoSplit]:
    """One split per condition, in order of first appearance; ``NeuroselError`` for two sets of
    one name or fewer than two conditions."""
    names = [s.name for s in sets]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup is not None:
        raise NeuroselError(f"set {dup!r} appears twice")
    conditions = list(dict.fromkeys(s.condition for s in sets))
    if len(conditions) < 2:
        raise NeuroselError(f"leave-one-condition-out needs sets of at least two conditions, got {conditions}")
    return [LocoSplit(c, tuple(s for s in sets if s.condition != c), tuple(s for s in sets if s.condition == c))
            for c in conditions]


@dataclass(frozen=True)
class HeldOutPrediction:
    """A set's WER predicted by a predictor fitted without its condition (``fitted_on``)."""

    set: LabelledSet
    prediction: WerPrediction
    fitted_on: tuple[str, ...]


@dataclass(frozen=True)
class LocoScore:
    """A predictor judged leave-one-condition-out: each set's held-out prediction, the Pearson r
    and mean absolute error (WER points) of the predictions against the measured WER, and the
    share of sets whose WER lies in its prediction interval (``coverage``)."""

    name: str
    signals: tuple[str, ...]
    held_out: tuple[HeldOutPrediction, ...]
    pearson: float
    mae: float
    coverage: float


def leave_one_condition_out(sets: Sequence[LabelledSet], signals: Sequence[str], name: str | None = None,
                            ridge: float = 0.0, level: float = 0.9) -> LocoScore:
    """Fit on all conditions but one, predict that one's sets, for every condition; ``name``
    labels the predictor (default: its signals joined by '+')."""
    held_out: list[HeldOutPrediction] = []
    for split in loco_splits(sets):
        try:
            predictor = fit_wer(split.train, signals, ridge)
        except NeuroselError as e:
            raise NeuroselError(f"without condition {split.condition!r}: {e}") from e
        held_out += [HeldOutPrediction(s, predictor.predict(s.signals, level), predictor.fitted_on)
                     for s in split.held_out]
    predicted = np.array([h.prediction.wer for h in held_out])
    true = np.array([h.set.wer for h in held_out])
    covered = [h.prediction.low <= h.set.wer <= h.prediction.high for h in held_out]
    return LocoScore(name or "+".join(signals), tuple(signals), tuple(held_out), pearson(predicted, true),
                     mean_absolute_error(predicted, true), float(np.mean(covered)))


def compare_predictors(sets: Sequence[LabelledSet], candidates: Mapping[str, Sequence[str]], ridge: float = 0.0,
                       level: float = 0.9) -> list[LocoScore]:
    """``leave_one_condition_out`` for each named candidate signal list, e.g. ``{"confidence":
    ["max_posterior"], "frame entropy": ["frame_entropy"], "combined": [...]}``."""
    return [leave_one_condition_out(sets, signals, name, ridge, level) for name, signals in candidates.items()]


@dataclass(frozen=True)
class Verdict:
    """``shifted`` and the one line to show for it."""

    shifted: bool
    line: str


def verdict(prediction: WerPrediction, in_domain_wer: float) -> Verdict:
    """Shifted when the whole prediction interval lies above ``in_domain_wer`` (the model's WER
    on in-domain held-out data, measured with transcripts): the set is then predicted to be
    recognised worse than the training domain, beyond the predictor's own uncertainty."""
    if prediction.low > in_domain_wer:
        return Verdict(True, f"shifted: predicted WER {prediction.wer:.1f}, "
                             f"range [{prediction.low:.1f}, {prediction.high:.1f}]")
    return Verdict(False, "like the training data")
