"""Model input from Lhotse cuts: global CMVN, sentencepiece targets, batches and the
duration-bucketed sampler, shared by training, decoding, statistics and adaptation.

Model input is always CMVN-normalised fbank: ``(feats - mean) / std`` with the statistics of
``<fbank-dir>/cmvn.npz``. Every stage must feed the model the same way, so it uses ``load_cmvn`` +
``CtcDataset`` (or ``apply_cmvn``) from here; training adds its perturbations through ``Augment``
(``neurosel.train.augment``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Protocol

import numpy as np
import sentencepiece as spm
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from lhotse.dataset.collation import collate_features

from neurosel.errors import NeuroselError
from neurosel.lang import bpe


@dataclass
class Batch:
    """One mini-batch: CMVN'd features (B, T, F) and lengths (B,); CTC targets concatenated (sum L,)
    with lengths (B,); optional per-utterance loss weights (B,), e.g. pseudo-label confidences."""

    feats: torch.Tensor
    feat_lens: torch.Tensor
    targets: torch.Tensor
    target_lens: torch.Tensor
    cut_ids: list[str]
    weights: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """The same batch with its tensors on ``device``."""
        if device.type == "cpu":
            return self
        return Batch(self.feats.to(device), self.feat_lens.to(device), self.targets.to(device),
                     self.target_lens.to(device), self.cut_ids,
                     None if self.weights is None else self.weights.to(device))


def load_cmvn(path: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``cmvn.npz`` (arrays ``mean``, ``std``, shape (F,)) -> float32 tensors (F,), (F,)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stats:
            mean, std = stats["mean"], stats["std"]
    except (OSError, KeyError, ValueError) as e:
        raise NeuroselError(f"{path}: cannot read CMVN statistics 'mean' and 'std' ({e})") from e
    if mean.shape != std.shape or mean.ndim != 1:
        raise NeuroselError(f"{path}: mean {mean.shape} and std {std.shape} must be equal 1-d shapes")
    if not (np.all(np.isfinite(mean)) and np.all(std > 0)):
        raise NeuroselError(f"{path}: CMVN mean must be finite and std positive")
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def apply_cmvn(feats: torch.Tensor, cmvn: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(..., F) fbank -> (..., F) normalised with global mean and std."""
    mean, std = cmvn
    return (feats - mean) / std


def load_bpe(lang_dir: str | Path) -> spm.SentencePieceProcessor:
    """``<lang_dir>/bpe.model``, checked to have the CTC blank ``<blk>`` as piece 0."""
    return bpe.load_bpe(Path(lang_dir) / "bpe.model")


class Augment(Protocol):
    """What a training set-up adds to ``CtcDataset``: a perturbation of the raw log-mel batch
    (before CMVN) and one of the normalised batch (after it), e.g. ``neurosel.train.augment``."""

    def before_cmvn(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ...

    def after_cmvn(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        ...


class CtcDataset(torch.utils.data.Dataset):
    """Map-style Lhotse dataset: a CutSet (one supervision per cut) -> ``Batch``; ``augment``
    perturbs training batches (none for decoding, statistics and adaptation)."""

    def __init__(self, sp: spm.SentencePieceProcessor, cmvn: tuple[torch.Tensor, torch.Tensor],
                 augment: Augment | None = None) -> None:
        self.sp = sp
        self.cmvn = cmvn
        self.augment = augment

    def __getitem__(self, cuts: CutSet) -> Batch:
        """Load, normalise and (optionally) augment the cuts' features; encode their transcripts.
        No cuts give a batch of no utterances (a training process's empty share of a batch)."""
        if next(iter(cuts), None) is None:
            empty = torch.zeros(0, dtype=torch.long)
            return Batch(torch.zeros(0, 1, self.cmvn[0].numel()), empty, empty, empty, [])
        texts = []
        for cut in cuts:
            if not cut.has_features:
                raise NeuroselError(f"cut {cut.id}: has no features")
            if cut.num_features != self.cmvn[0].numel():
                raise NeuroselError(f"cut {cut.id}: {cut.num_features}-dim features, CMVN has "
                                    f"{self.cmvn[0].numel()}")
            if len(cut.supervisions) != 1 or cut.supervisions[0].text is None:
                raise NeuroselError(f"cut {cut.id}: needs exactly one supervision with text, "
                                    f"has {len(cut.supervisions)}")
            texts.append(cut.supervisions[0].text)
        feats, feat_lens = collate_features(cuts)
        if self.augment is not None:
            feats, feat_lens = self.augment.before_cmvn(feats, feat_lens)
        feats = apply_cmvn(feats, self.cmvn)
        feat_lens = feat_lens.long()
        if self.augment is not None:
            feats = self.augment.after_cmvn(feats, feat_lens)
        pieces = [self.sp.encode(text, out_type=int) for text in texts]
        return Batch(
            feats=feats,
            feat_lens=feat_lens,
            targets=torch.tensor([p for seq in pieces for p in seq], dtype=torch.long),
            target_lens=torch.tensor([len(seq) for seq in pieces], dtype=torch.long),
            cut_ids=[cut.id for cut in cuts],
        )


def make_sampler(cuts: CutSet, max_duration: float, shuffle: bool, seed: int = 0,
                 num_buckets: int = 10) -> DynamicBucketingSampler:
    """Duration-bucketed batches of at most ``max_duration`` seconds of audio.

    Deterministic for a seed and epoch (``sampler.set_epoch``); ``state_dict()`` /
    ``load_state_dict()`` resume it mid-epoch. A set of fewer cuts than ``num_buckets`` gets one
    bucket per cut. Every process of a multi-process job gets the same (global) batches: Lhotse
    would otherwise split them by the launcher's RANK/WORLD_SIZE (see ``distributed``).
    """
    num_buckets = max(1, sum(1 for _ in islice(cuts, num_buckets)))
    with warnings.catch_warnings():
        # Lhotse advises lazy manifests for memory; an eager CutSet samples identically
        warnings.filterwarnings("ignore", message=".*eagerly read CutSet", category=UserWarning)
        return DynamicBucketingSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
                                       num_buckets=num_buckets, drop_last=False, world_size=1, rank=0)
