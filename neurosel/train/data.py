"""Batches for CTC training and inference from Lhotse cuts: duration-bucketed sampling, features
read from the cuts' storage, global CMVN, sentencepiece targets, optional SpecAugment.

Model input is always CMVN-normalised fbank: ``(feats - mean) / std`` with the statistics of
``<fbank-dir>/cmvn.npz``. Decoding, saliency and adaptation must feed the model the same way, so
they use ``load_cmvn`` + ``CtcDataset`` (or ``apply_cmvn``) from here.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler, SpecAugment
from lhotse.dataset.collation import collate_features
from lhotse.utils import LOG_EPSILON

from neurosel.errors import NeuroselError
from neurosel.lang import bpe

@dataclass
class SpecAugmentConfig:
    """SpecAugment on training batches (Lhotse's implementation); off by default."""

    enabled: bool = False
    time_warp_factor: int = 0  # 0 disables time warping
    num_feature_masks: int = 2
    features_mask_size: int = 15
    num_frame_masks: int = 4
    frames_mask_size: int = 20
    max_frames_mask_fraction: float = 0.15
    p: float = 0.9


@dataclass
class FeatureWarpConfig:
    """Pseudo-speaker perturbation of training features; off by default.

    Each utterance of a training batch gets, before CMVN, a VTLP-style frequency scaling of its
    log-mel bins by a factor drawn uniformly from ``1 +- freq_warp`` (spectral content at ``f`` Hz
    moves to ``alpha * f``: F0 harmonics and formants of a higher or lower voice) and a tempo change
    by a factor from ``1 +- time_stretch`` (the frame axis linearly resampled to ``T / rate``
    frames: a faster or slower speaker). This is what the in-domain test set has and the training
    set does not: the training voices at speed x pitch combinations training never had.
    """

    enabled: bool = False
    freq_warp: float = 0.1  # maximum |alpha - 1|; 0 disables the frequency scaling
    time_stretch: float = 0.1  # maximum |rate - 1|; 0 disables the tempo change
    p: float = 1.0  # probability that an utterance is perturbed at all
    low_freq: float = 20.0  # the mel filterbank's edges in Hz (Lhotse's FbankConfig defaults)
    high_freq: float = 7600.0


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(hz / 700.0)


def _hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * torch.expm1(mel / 1127.0)


def warp_frequency(feats: torch.Tensor, alpha: float | torch.Tensor, low_freq: float = 20.0,
                   high_freq: float = 7600.0) -> torch.Tensor:
    """(..., T, F) log-mel features -> the same shape, the spectrum scaled in frequency by ``alpha``
    (a number, or a tensor of ``feats.shape[:-2]``: one factor per utterance of a batch).

    Bin ``k`` (centre ``hz_k`` on the mel scale between ``low_freq`` and ``high_freq``) takes the
    value at ``hz_k / alpha``, linearly interpolated between the neighbouring bins; frequencies
    beyond the edge bins take the edge bins' values.
    """
    num_bins = feats.shape[-1]
    alpha = torch.as_tensor(alpha, dtype=torch.float64)[..., None]  # (..., 1)
    lo, hi = _mel(torch.tensor(low_freq, dtype=torch.float64)), _mel(torch.tensor(high_freq, dtype=torch.float64))
    step = (hi - lo) / (num_bins + 1)
    centres = lo + step * torch.arange(1, num_bins + 1, dtype=torch.float64)
    source = ((_mel(_hz(centres) / alpha) - lo) / step - 1).clamp(0, num_bins - 1)  # (..., F)
    left = source.floor().long().clamp(0, max(num_bins - 2, 0))
    right = (left + 1).clamp(max=num_bins - 1)
    frac = (source - left).to(feats.dtype)[..., None, :]  # (..., 1, F)
    shape = feats.shape

    def take(index: torch.Tensor) -> torch.Tensor:
        return feats.gather(-1, index[..., None, :].expand(shape))

    return torch.lerp(take(left), take(right), frac.expand(shape))


def stretch_time(feats: torch.Tensor, rate: float) -> torch.Tensor:
    """(T, F) features -> (round(T / rate), F) (at least 1 frame), linearly resampled in time."""
    frames = max(1, round(feats.shape[0] / rate))
    return torch.nn.functional.interpolate(feats.T[None], size=frames, mode="linear", align_corners=True)[0].T


def draw_perturbation(cfg: FeatureWarpConfig) -> tuple[float, float]:
    """One utterance's random (frequency factor, tempo factor), (1, 1) if it stays unperturbed."""
    if float(torch.rand(())) >= cfg.p:
        return 1.0, 1.0
    alpha_u, rate_u = (2 * torch.rand(2, dtype=torch.float64) - 1).tolist()
    return 1.0 + cfg.freq_warp * alpha_u, 1.0 + cfg.time_stretch * rate_u


def perturb_batch(feats: torch.Tensor, feat_lens: torch.Tensor,
                  cfg: FeatureWarpConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded (B, T, F) batch of log-mel features and its lengths (B,) with each utterance
    perturbed by its own ``draw_perturbation`` (torch's RNG), padded again with Lhotse's collation
    padding value (the log of a tiny energy)."""
    factors = [draw_perturbation(cfg) for _ in range(len(feat_lens))]
    if cfg.freq_warp > 0:
        feats = warp_frequency(feats, torch.tensor([a for a, _ in factors], dtype=torch.float64),
                               cfg.low_freq, cfg.high_freq)
    utts = [f[: int(n)] if cfg.time_stretch <= 0 or rate == 1.0 else stretch_time(f[: int(n)], rate)
            for f, n, (_, rate) in zip(feats, feat_lens, factors)]
    lens = torch.tensor([u.shape[0] for u in utts], dtype=feat_lens.dtype)
    out = torch.full((len(utts), int(lens.max()), feats.shape[-1]), LOG_EPSILON, dtype=feats.dtype)
    for i, u in enumerate(utts):
        out[i, : u.shape[0]] = u
    return out, lens


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


class CtcDataset(torch.utils.data.Dataset):
    """Map-style Lhotse dataset: a CutSet (one supervision per cut) -> ``Batch``."""

    def __init__(self, sp: spm.SentencePieceProcessor, cmvn: tuple[torch.Tensor, torch.Tensor],
                 spec_augment: SpecAugmentConfig | None = None,
                 feature_warp: FeatureWarpConfig | None = None) -> None:
        self.sp = sp
        self.cmvn = cmvn
        self.feature_warp = feature_warp if feature_warp is not None and feature_warp.enabled else None
        self.spec_augment = None
        if spec_augment is not None and spec_augment.enabled:
            self.spec_augment = SpecAugment(
                time_warp_factor=spec_augment.time_warp_factor or None,
                num_feature_masks=spec_augment.num_feature_masks,
                features_mask_size=spec_augment.features_mask_size,
                num_frame_masks=spec_augment.num_frame_masks,
                frames_mask_size=spec_augment.frames_mask_size,
                max_frames_mask_fraction=spec_augment.max_frames_mask_fraction,
                p=spec_augment.p,
            )

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
        if self.feature_warp is not None:
            feats, feat_lens = perturb_batch(feats, feat_lens, self.feature_warp)
        feats = apply_cmvn(feats, self.cmvn)
        feat_lens = feat_lens.long()
        if self.spec_augment is not None:
            segments = torch.stack([torch.arange(len(feat_lens)), torch.zeros_like(feat_lens), feat_lens], 1)
            feats = self.spec_augment(feats, supervision_segments=segments)
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
