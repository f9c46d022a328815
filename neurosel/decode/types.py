"""What decoding takes (``DecodeConfig``) and what it returns (``Hypothesis``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass
class DecodeConfig:
    """Decoding options (``conf/decode.yaml``).

    ``method``: ``greedy`` (best token per frame, no lexicon or LM) or ``wfst`` (Viterbi search
    over TLG with kaldi-decoder's FasterDecoder). For ``wfst`` the search maximises
    ``log P_ctc(frame alignment) + lm_weight * log P_lm(words)`` (natural logs; the LM cost is the
    TLG path cost). ``beam`` is in units of that score; ``max_active`` bounds the active states
    per frame (the main speed/accuracy knob), ``min_active`` keeps at least that many.
    ``blank_penalty`` is subtracted from the blank's log-posterior on every frame before either
    search (as icefall's ``blank_penalty``): a CTC model that is not yet sure of its tokens gives
    blank most of the mass, and the LM search then drops whole words; the penalty, tuned on dev
    with the LM weight, trades those deletions against insertions. Confidences and costs are
    always computed on the unmodified posteriors.
    """

    method: Literal["greedy", "wfst"] = "wfst"
    lm_weight: float = 1.0
    beam: float = 10.0
    max_active: int = 1000
    min_active: int = 20
    blank_penalty: float = 0.0

    def __post_init__(self) -> None:
        if self.lm_weight <= 0:
            raise ValueError(f"lm_weight must be > 0, got {self.lm_weight} (use method: greedy "
                             "for decoding without an LM)")
        if self.beam <= 0:
            raise ValueError(f"beam must be > 0, got {self.beam}")
        if self.max_active < 1 or self.min_active < 0:
            raise ValueError("max_active must be >= 1 and min_active >= 0")


@dataclass
class Hypothesis:
    """One utterance's decoding result.

    ``words``: the recognised words. ``tokens``: the BPE piece ids of the best path with blanks
    and repeats removed (for ``wfst`` these spell exactly ``words``; usable as CTC pseudo-labels).
    ``confidence``: mean over frames of the posterior of the token the best path assigns to that
    frame (blank included), in [0, 1]; for greedy decoding this is the mean frame max-posterior.
    0.0 for an utterance of no frames. ``acoustic_cost``: ``-sum_t log p(alignment_t)`` of the best
    path (natural log). ``lm_cost``: the TLG (LM) cost of the best path, unscaled, natural log;
    0.0 for greedy. ``reached_final``: False when the WFST search ended in no final state and the
    best partial path was taken (always True for greedy).
    """

    words: list[str]
    tokens: list[int]
    confidence: float
    acoustic_cost: float
    lm_cost: float = 0.0
    reached_final: bool = True
