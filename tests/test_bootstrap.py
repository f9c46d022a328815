"""Paired bootstrap over utterances and mean/std over seeds."""

from __future__ import annotations

import numpy as np
import pytest

from neurosel.errors import NeuroselError
from neurosel.report.bootstrap import mean_std, paired_bootstrap


def utterances(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    refs = rng.integers(3, 15, size=n)
    return refs, rng.binomial(refs, 0.3)


def test_identical_systems_tie() -> None:
    refs, errors = utterances()
    result = paired_bootstrap(errors, errors.copy(), refs, num_samples=500)
    assert result.difference == 0.0 and result.ci_low == 0.0 and result.ci_high == 0.0
    assert result.p_b_better == 0.5
    assert result.wer_a == pytest.approx(100.0 * errors.sum() / refs.sum())


def test_better_on_every_utterance_is_certain() -> None:
    refs, errors = utterances()
    errors_a = errors + 1
    result = paired_bootstrap(errors_a, errors, refs, num_samples=500)
    assert result.p_b_better == 1.0
    assert result.ci_high < 0.0 and result.difference == pytest.approx(-100.0 * len(refs) / refs.sum())
    assert paired_bootstrap(errors, errors_a, refs, num_samples=500).p_b_better == 0.0


def test_noisy_difference_interval_and_seeding() -> None:
    refs, errors_a = utterances()
    errors_b = np.random.default_rng(7).binomial(refs, 0.28)
    first = paired_bootstrap(errors_a, errors_b, refs, num_samples=2500, seed=3)
    assert first == paired_bootstrap(errors_a, errors_b, refs, num_samples=2500, seed=3)
    assert first != paired_bootstrap(errors_a, errors_b, refs, num_samples=2500, seed=4)
    assert first.ci_low < first.difference < first.ci_high
    assert 0.0 < first.p_b_better < 1.0 and first.std_error > 0.0
    assert (first.num_samples, first.num_utterances) == (2500, len(refs))


@pytest.mark.parametrize("a, b, refs, message", [
    ([1, 2], [1], [3, 4], "paired"),
    ([1, -1], [1, 1], [3, 4], "non-negative integer"),
    ([1, 0.5], [1, 1], [3, 4], "non-negative integer"),
    ([0, 0], [0, 0], [0, 0], "no reference words"),
    ([[1]], [[1]], [[1]], "1-D"),
])
def test_bad_counts_are_clear_errors(a: list, b: list, refs: list, message: str) -> None:
    with pytest.raises(NeuroselError, match=message):
        paired_bootstrap(np.array(a), np.array(b), np.array(refs))


def test_mean_std_over_seeds() -> None:
    summary = mean_std([10.0, 12.0, 14.0])
    assert (summary.mean, summary.std, summary.n) == (12.0, 2.0, 3)
    assert mean_std([7.5]).std == 0.0
    with pytest.raises(NeuroselError):
        mean_std([])
