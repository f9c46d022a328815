"""How well shift signals or predictions follow WER: Pearson r, Spearman rank correlation (ties
share their mean rank), mean absolute error, and the utterance-level rank correlation of a signal
with per-utterance WER."""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np

from neurosel.errors import NeuroselError
from neurosel.shift.signals import ShiftSignals


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two (n,) arrays, n >= 2; NaN when either is constant (r is undefined)."""
    x, y = _pair(x, y)
    dx, dy = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / norm if norm > 0 else math.nan


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two (n,) arrays: Pearson r of their ranks, tied values
    sharing the mean of their ranks; NaN when either is constant."""
    x, y = _pair(x, y)
    return pearson(ranks(x), ranks(y))


def ranks(x: np.ndarray) -> np.ndarray:
    """(n,) -> (n,) float ranks 1..n, ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="stable")
    ordered = x[order]
    first = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # start of each run of equal values
    ends = np.r_[first[1:], len(x)]
    mean_rank = (first + ends + 1) / 2.0  # mean of ranks first+1 .. end
    out = np.empty(len(x))
    out[order] = np.repeat(mean_rank, ends - first)
    return out


def mean_absolute_error(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean |predicted - true| of two (n,) arrays, n >= 1."""
    predicted, true = _pair(predicted, true, least=1)
    return float(np.abs(predicted - true).mean())


def utterance_spearman(signals: ShiftSignals, name: str, utterance_wer: Mapping[str, float]) -> float:
    """Spearman rank correlation, over the utterances of ``signals``, between signal ``name`` and
    each utterance's WER (``utterance_wer``: utterance id -> WER; one for every utterance)."""
    if name not in signals.values:
        raise NeuroselError(f"no shift signal {name!r} (known: {', '.join(signals.names)})")
    missing = [u for u in signals.utt_ids if u not in utterance_wer]
    if missing:
        raise NeuroselError(f"no WER for utterance {missing[0]!r} ({len(missing)} of {len(signals.utt_ids)} missing)")
    return spearman(signals.values[name], np.array([utterance_wer[u] for u in signals.utt_ids], dtype=np.float64))


def _pair(x: np.ndarray, y: np.ndarray, least: int = 2) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or len(x) < least:
        raise NeuroselError(f"need two equal-length vectors of at least {least} values, got shapes "
                            f"{x.shape} and {y.shape}")
    return x, y
