"""WFST decoding of CTC log-posteriors over TLG with kaldi-decoder's FasterDecoder.

kaldi-decoder's ``DecodableCtc`` returns ``log_probs[t, label - 1]`` as the log-likelihood of
graph input label ``label`` (TLG labels are token ids + 1, see ``neurosel.lang.graph``). The LM
weight is applied by dividing the log-posteriors by it: the decoder then minimises
``-log P_ctc / lm_weight + lm_cost``, which has the same best path as
``-log P_ctc + lm_weight * lm_cost``; the beam is divided likewise so that it stays in units of
the latter. The blank penalty (``DecodeConfig.blank_penalty``) is subtracted from the blank
column before that division.
"""

from __future__ import annotations

import kaldifst
import numpy as np
from kaldi_decoder import DecodableCtc, FasterDecoder, FasterDecoderOptions

from neurosel.errors import NeuroselError

from .confidence import alignment_scores
from .graph import DecodingGraph
from .greedy import collapse_alignment, penalise_blank
from .types import DecodeConfig, Hypothesis


def make_decoder(graph: DecodingGraph, cfg: DecodeConfig) -> FasterDecoder:
    """A FasterDecoder over ``graph.tlg`` for ``cfg``; reuse it for every utterance."""
    if graph.tlg is None:
        raise NeuroselError(f"{graph.lang_dir}: the graph was loaded without TLG.fst")
    opts = FasterDecoderOptions(beam=cfg.beam / cfg.lm_weight, max_active=cfg.max_active,
                                min_active=cfg.min_active)
    return FasterDecoder(graph.tlg, opts)


def wfst_decode(log_probs: np.ndarray, graph: DecodingGraph, decoder: FasterDecoder,
                cfg: DecodeConfig) -> Hypothesis:
    """Decode one utterance's (T, V) float32 log-posteriors with ``decoder`` (from
    ``make_decoder(graph, cfg)``)."""
    if len(log_probs) == 0:
        return Hypothesis(words=[], tokens=[], confidence=0.0, acoustic_cost=0.0)
    scores = penalise_blank(log_probs, cfg.blank_penalty) / cfg.lm_weight
    decoder.decode(DecodableCtc(np.ascontiguousarray(scores, dtype=np.float32)))
    reached_final = decoder.reached_final()
    ok, path = decoder.get_best_path()
    ok, ilabels, olabels, weight = kaldifst.get_linear_symbol_sequence(path) if ok else (
        False, [], [], None)
    if not ok or len(ilabels) != len(log_probs):
        raise NeuroselError(f"{graph.lang_dir}/TLG.fst: the decoder found no path through "
                            f"{len(log_probs)} frames (is the graph connected?)")
    alignment = np.asarray(ilabels, dtype=np.int64) - 1
    confidence, acoustic_cost = alignment_scores(log_probs, alignment)
    return Hypothesis(words=[graph.id_to_word[w] for w in olabels],
                      tokens=collapse_alignment(alignment), confidence=confidence,
                      acoustic_cost=acoustic_cost, lm_cost=float(weight.value1),
                      reached_final=reached_final)
