"""One entry point for decoding CTC log-posteriors of a batch, whatever the model."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from neurosel.errors import NeuroselError

from .graph import DecodingGraph, load_graph
from .greedy import greedy_decode
from .types import DecodeConfig, Hypothesis
from .wfst import make_decoder, wfst_decode

log = logging.getLogger(__name__)

_NORMALISATION_TOLERANCE = 1e-2


def decode_log_probs(batch_log_probs: torch.Tensor | Sequence[torch.Tensor],
                     lengths: torch.Tensor | Sequence[int] | None,
                     graph: DecodingGraph | str | Path, cfg: DecodeConfig) -> list[Hypothesis]:
    """Decode a batch of CTC log-posteriors (log-softmax outputs, blank = 0).

    ``batch_log_probs``: (B, T, V) with ``lengths`` (B,) valid frames per utterance, or a list
    of (T_b, V) tensors with ``lengths`` None. ``graph``: a ``DecodingGraph`` from
    ``load_graph`` (load it once and pass it to every call) or a lang dir. Returns B hypotheses
    in batch order.
    """
    if not isinstance(graph, DecodingGraph):
        graph = load_graph(graph, with_tlg=cfg.method == "wfst")
    utterances = _split_batch(batch_log_probs, lengths)
    decoder = make_decoder(graph, cfg) if cfg.method == "wfst" else None
    hyps = []
    for b, log_probs in enumerate(utterances):
        if log_probs.shape[1] != graph.num_tokens:
            raise NeuroselError(f"utterance {b} of the batch: {log_probs.shape[1]} outputs, but "
                                f"{graph.lang_dir}/bpe.model has {graph.num_tokens} pieces")
        if len(log_probs):
            norm = np.abs(np.logaddexp.reduce(log_probs.astype(np.float64), axis=1)).max()
            if norm > _NORMALISATION_TOLERANCE:
                raise NeuroselError(f"utterance {b} of the batch: rows are not log-probabilities "
                                    f"(|logsumexp| up to {norm:.3g}); pass log_softmax outputs")
        if decoder is None:
            hyps.append(greedy_decode(log_probs, graph.sp, cfg.blank_penalty))
        else:
            hyps.append(wfst_decode(log_probs, graph, decoder, cfg))
    unfinished = sum(not h.reached_final for h in hyps)
    if unfinished:
        log.warning("%d of %d utterances ended in no final state of TLG (beam too small?); their "
                    "best partial paths were used", unfinished, len(hyps))
    return hyps


def _split_batch(batch: torch.Tensor | Sequence[torch.Tensor],
                 lengths: torch.Tensor | Sequence[int] | None) -> list[np.ndarray]:
    """(B, T, V) + lengths, or a list of (T_b, V) -> list of float32 (T_b, V) arrays."""
    if isinstance(batch, torch.Tensor):
        if batch.dim() != 3:
            raise NeuroselError(f"expected log-probs of shape (B, T, V), got {tuple(batch.shape)}")
        if lengths is None:
            raise NeuroselError("a (B, T, V) batch needs its lengths")
        lens = [int(n) for n in lengths]
        if len(lens) != batch.shape[0] or any(n < 0 or n > batch.shape[1] for n in lens):
            raise NeuroselError(f"lengths {lens} do not fit a batch of shape {tuple(batch.shape)}")
        array = batch.detach().to("cpu", torch.float32).numpy()
        return [array[b, :n] for b, n in enumerate(lens)]
    if lengths is not None:
        raise NeuroselError("lengths must be None when the utterances are given as a list")
    out = []
    for b, x in enumerate(batch):
        if x.dim() != 2:
            raise NeuroselError(f"utterance {b}: expected log-probs of shape (T, V), got "
                                f"{tuple(x.shape)}")
        out.append(x.detach().to("cpu", torch.float32).numpy())
    return out
