"""Run an acoustic model over a Lhotse CutSet in inference mode.

The one place that turns cuts with stored features into normalised, padded batches for a model
with the ``forward(feats (B, T, F), feat_lens (B,)) -> (log_probs (B, T', V), out_lens (B,))``
contract. Decoding, saliency statistics, pseudo-labelling and the pruning speed measurement all
use it, so they see exactly the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from lhotse import CutSet


@dataclass
class Batch:
    """A padded batch: ``feats`` (B, T, F) float32, ``feat_lens`` (B,) int64, the cut ids and
    transcripts (empty strings for cuts without supervision text)."""

    cut_ids: list[str]
    texts: list[str]
    feats: torch.Tensor
    feat_lens: torch.Tensor


def batches(cuts: CutSet, mean: np.ndarray, std: np.ndarray, max_duration: float = 200.0) -> Iterator[Batch]:
    """Yield CMVN-normalised, zero-padded batches of at most ``max_duration`` seconds of audio.

    Cuts are taken in order of decreasing duration (little padding) and every cut is in exactly one
    batch; the order is deterministic.
    """
    ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
    group: list = []
    total = 0.0
    for cut in ordered:
        if group and total + cut.duration > max_duration:
            yield _collate(group, mean, std)
            group, total = [], 0.0
        group.append(cut)
        total += cut.duration
    if group:
        yield _collate(group, mean, std)


def _collate(cuts: list, mean: np.ndarray, std: np.ndarray) -> Batch:
    feats = [(c.load_features() - mean) / std for c in cuts]
    lens = torch.tensor([f.shape[0] for f in feats], dtype=torch.int64)
    padded = torch.zeros(len(feats), int(lens.max()), feats[0].shape[1], dtype=torch.float32)
    for i, f in enumerate(feats):
        padded[i, : f.shape[0]] = torch.from_numpy(f.astype(np.float32))
    texts = [(c.supervisions[0].text or "") if c.supervisions else "" for c in cuts]
    return Batch([c.id for c in cuts], texts, padded, lens)


def frame_mask(out_lens: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B,) lengths -> (B, T') bool mask of the valid (non-padded) output frames."""
    return torch.arange(num_frames)[None, :] < out_lens[:, None]


@torch.inference_mode()
def log_posteriors(model: torch.nn.Module, cuts: CutSet, mean: np.ndarray, std: np.ndarray,
                   max_duration: float = 200.0) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor]]:
    """Yield ``(batch, log_probs (B, T', V), out_lens (B,))`` for every batch of ``cuts``."""
    model.eval()
    for batch in batches(cuts, mean, std, max_duration):
        log_probs, out_lens = model(batch.feats, batch.feat_lens)
        yield batch, log_probs, out_lens
