"""Per-utterance confidence and acoustic cost of a frame alignment."""

from __future__ import annotations

import numpy as np


def alignment_scores(log_probs: np.ndarray, alignment: np.ndarray) -> tuple[float, float]:
    """``(confidence, acoustic_cost)`` of a path that assigns token ``alignment[t]`` to frame t.

    ``log_probs``: (T, V) log-posteriors; ``alignment``: (T,) token ids. ``confidence`` is the
    mean over frames of ``exp(log_probs[t, alignment[t]])`` (0.0 when T = 0); ``acoustic_cost``
    is ``-sum_t log_probs[t, alignment[t]]``.
    """
    if len(alignment) == 0:
        return 0.0, 0.0
    picked = log_probs[np.arange(len(alignment)), alignment].astype(np.float64)
    return float(np.exp(picked).mean()), float(-picked.sum())
