"""Decoding CTC log-posteriors into words: greedy, or WFST search over TLG with an n-gram LM.

Usage::

    graph = load_graph("data/lang")                    # once
    hyps = decode_log_probs(log_probs, lengths, graph, DecodeConfig(method="wfst"))
    hyps[0].words, hyps[0].tokens, hyps[0].confidence

Nothing here depends on the acoustic model: it takes log-posteriors (B, T, V), blank = 0.
"""

from .api import decode_log_probs
from .graph import DecodingGraph, load_graph
from .greedy import collapse_alignment, greedy_decode
from .types import DecodeConfig, Hypothesis
from .wfst import make_decoder, wfst_decode

__all__ = ["DecodeConfig", "DecodingGraph", "Hypothesis", "collapse_alignment",
           "decode_log_probs", "greedy_decode", "load_graph", "make_decoder", "wfst_decode"]
