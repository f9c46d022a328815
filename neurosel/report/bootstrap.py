"""Paired bootstrap over utterances for comparing two systems' WER (Bisani and Ney, ICASSP 2004),
and mean/std of a WER over seeds.

Both systems decode the same utterances; utterance i has ``ref_words[i]`` reference words and
``errors_a[i]``/``errors_b[i]`` word errors (substitutions + deletions + insertions). Each
bootstrap sample draws n utterances with replacement, the same draw for both systems, and
computes WER_B - WER_A on it. The spread of that difference gives a confidence interval and the
probability of improvement p(B better than A) = share of samples where B has the lower WER
(ties count one half, so identical systems get 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from neurosel.errors import NeuroselError

SAMPLES_PER_CHUNK = 1000  # bootstrap samples drawn at once; bounds memory at chunk x n indices


@dataclass
class BootstrapResult:
    """Outcome of ``paired_bootstrap``; WERs and differences in percent."""

    wer_a: float
    wer_b: float
    difference: float  # wer_b - wer_a on the full set (negative: B is better)
    ci_low: float  # lower bound of the ``confidence`` interval of the difference
    ci_high: float
    std_error: float  # standard deviation of the bootstrap differences
    p_b_better: float  # probability of improvement of B over A
    confidence: float
    num_samples: int
    num_utterances: int


@dataclass
class MeanStd:
    """Mean and standard deviation of one quantity over ``n`` seeds."""

    mean: float
    std: float
    n: int


def paired_bootstrap(errors_a: np.ndarray, errors_b: np.ndarray, ref_words: np.ndarray,
                     num_samples: int = 10000, seed: int = 0, confidence: float = 0.95) -> BootstrapResult:
    """Compare systems A and B on the same n utterances.

    ``errors_a``, ``errors_b``, ``ref_words``: (n,) non-negative integer counts per utterance.
    Returns the WERs, their difference B - A, its percentile ``confidence`` interval over
    ``num_samples`` resamples drawn with ``numpy.random.default_rng(seed)``, and p(B better).
    Raises ``NeuroselError`` for mismatched lengths, negative or non-integer counts, or no
    reference words.
    """
    a, b, refs = (counts(x, name) for x, name in ((errors_a, "errors_a"), (errors_b, "errors_b"),
                                                  (ref_words, "ref_words")))
    n = len(refs)
    if len(a) != n or len(b) != n:
        raise NeuroselError(f"paired bootstrap: {len(a)} and {len(b)} utterances of errors for "
                            f"{n} utterances of reference words; the systems must be paired")
    if refs.sum() == 0:
        raise NeuroselError("paired bootstrap: the utterances have no reference words")
    if num_samples < 1 or not 0.0 < confidence < 1.0:
        raise NeuroselError(f"paired bootstrap: need num_samples >= 1 and 0 < confidence < 1, got "
                            f"{num_samples} and {confidence}")
    rng = np.random.default_rng(seed)
    diffs = np.empty(num_samples)
    for start in range(0, num_samples, SAMPLES_PER_CHUNK):
        stop = min(start + SAMPLES_PER_CHUNK, num_samples)
        draw = rng.integers(0, n, size=(stop - start, n))
        words = refs[draw].sum(axis=1)
        # A resample may draw only empty references; its WER difference is taken as 0 (a tie).
        diffs[start:stop] = 100.0 * (b[draw].sum(axis=1) - a[draw].sum(axis=1)) / np.maximum(words, 1)
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    wer_a, wer_b = 100.0 * a.sum() / refs.sum(), 100.0 * b.sum() / refs.sum()
    return BootstrapResult(
        wer_a=float(wer_a), wer_b=float(wer_b), difference=float(wer_b - wer_a),
        ci_low=float(low), ci_high=float(high), std_error=float(diffs.std()),
        p_b_better=float(np.mean(diffs < 0) + 0.5 * np.mean(diffs == 0)),
        confidence=confidence, num_samples=num_samples, num_utterances=n,
    )


def counts(values: np.ndarray, name: str) -> np.ndarray:
    """Validate a 1-D array of non-negative integer counts; returns it as int64."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise NeuroselError(f"paired bootstrap: {name} must be 1-D, got shape {arr.shape}")
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)) or np.any(arr < 0)):
        raise NeuroselError(f"paired bootstrap: {name} must hold non-negative integer counts")
    return arr.astype(np.int64)


def mean_std(values: Sequence[float]) -> MeanStd:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of per-seed values."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise NeuroselError(f"mean_std needs a non-empty list of values, got shape {arr.shape}")
    return MeanStd(mean=float(arr.mean()), std=float(arr.std(ddof=1)) if arr.size > 1 else 0.0, n=int(arr.size))
