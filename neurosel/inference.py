"""Run an acoustic model over a Lhotse CutSet in inference mode.

The one place that turns cuts with stored features into CMVN-normalised, padded batches for a
model with the ``forward(feats (B, T, F), feat_lens (B,)) -> (log_probs (B, T', V), out_lens (B,))``
contract, without reading any transcript. Decoding, saliency statistics, pseudo-labelling and the
pruning speed measurement all use it, so they see exactly the inputs training saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_features

from neurosel.data.batches import apply_cmvn

# Seconds of audio per inference batch (decoding, saliency statistics, pruning speed). The first conv
# block's output is 10240 floats per output frame, some 200 MiB for a 200 s batch: glibc's malloc
# serves blocks that large with fresh memory maps, which the kernel faults in page by page on every
# batch (344k minor faults per pass over test). At 25 s the blocks are reused from the heap (no
# faults). One torch thread, 501 s of test audio, the 100-unit default model: forward 1.50 CPU-s at
# 200 s per batch, 0.73 at 25 s (jemalloc: 0.83 and 0.75; bench/, Decoding and Pruning sections).
INFERENCE_BATCH_SECONDS = 25.0


@dataclass
class FeatureBatch:
    """A padded batch: ``feats`` (B, T, F) float32, ``feat_lens`` (B,) int64, and the cut ids."""

    cut_ids: list[str]
    feats: torch.Tensor
    feat_lens: torch.Tensor

    def to(self, device: torch.device) -> FeatureBatch:
        """The same batch with its tensors on ``device`` (itself on the CPU)."""
        if device.type == "cpu":
            return self
        return FeatureBatch(self.cut_ids, self.feats.to(device), self.feat_lens.to(device))


def feature_batches(cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                    max_duration: float = INFERENCE_BATCH_SECONDS) -> Iterator[FeatureBatch]:
    """Yield normalised batches of at most ``max_duration`` seconds of audio.

    Cuts go in order of decreasing duration (little padding); every cut is in exactly one batch
    and the order is deterministic.
    """
    ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
    group: list = []
    total = 0.0
    for cut in ordered + [None]:
        if group and (cut is None or total + cut.duration > max_duration):
            feats, lens = collate_features(CutSet.from_cuts(group))
            yield FeatureBatch([c.id for c in group], apply_cmvn(feats, cmvn), lens.long())
            group, total = [], 0.0
        if cut is not None:
            group.append(cut)
            total += cut.duration


@torch.inference_mode()
def log_posteriors(model: torch.nn.Module, cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                   max_duration: float = INFERENCE_BATCH_SECONDS) -> Iterator[tuple[FeatureBatch, torch.Tensor, torch.Tensor]]:
    """Yield ``(batch, log_probs (B, T', V), out_lens (B,))`` for every batch of ``cuts``.

    The forward pass runs on the model's device (see ``model_device``); the outputs come back on
    the CPU, where the search and scoring run."""
    model.eval()
    device = model_device(model)
    for batch in feature_batches(cuts, cmvn, max_duration):
        on_device = batch.to(device)
        log_probs, out_lens = model(on_device.feats, on_device.feat_lens)
        yield batch, log_probs.cpu(), out_lens.cpu()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's parameters (the CPU for a model without any)."""
    return next((p.device for p in model.parameters()), torch.device("cpu"))
