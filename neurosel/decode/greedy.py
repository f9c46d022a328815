"""Greedy CTC decoding: the best token per frame, repeats collapsed, blanks dropped."""

from __future__ import annotations

import numpy as np
import sentencepiece as spm

from neurosel.lang.bpe import BLANK_ID

from .confidence import alignment_scores
from .types import Hypothesis


def collapse_alignment(alignment: np.ndarray, blank: int = BLANK_ID) -> list[int]:
    """CTC rule: (T,) frame tokens -> token ids with repeats merged and blanks removed."""
    if len(alignment) == 0:
        return []
    keep = np.ones(len(alignment), dtype=bool)
    keep[1:] = alignment[1:] != alignment[:-1]
    keep &= alignment != blank
    return [int(t) for t in alignment[keep]]


def penalise_blank(log_probs: np.ndarray, blank_penalty: float) -> np.ndarray:
    """(T, V) log-posteriors with ``blank_penalty`` subtracted from the blank column (a copy;
    the input itself when the penalty is 0)."""
    if blank_penalty == 0.0:
        return log_probs
    out = log_probs.copy()
    out[:, BLANK_ID] -= blank_penalty
    return out


def greedy_decode(log_probs: np.ndarray, sp: spm.SentencePieceProcessor, blank_penalty: float = 0.0) -> Hypothesis:
    """Decode one utterance's (T, V) log-posteriors; words come from ``sp.decode`` of the
    tokens, so they may be strings that are in no lexicon. The best token per frame is taken
    after ``penalise_blank``."""
    alignment = (penalise_blank(log_probs, blank_penalty).argmax(axis=1) if len(log_probs)
                 else np.zeros(0, dtype=np.int64))
    tokens = collapse_alignment(alignment)
    confidence, acoustic_cost = alignment_scores(log_probs, alignment)
    return Hypothesis(words=sp.decode(tokens).split(), tokens=tokens, confidence=confidence,
                      acoustic_cost=acoustic_cost)
