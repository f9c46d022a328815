"""Training-only perturbations of CTC batches: pseudo-speaker frequency warping and tempo change
of the raw log-mel features, and SpecAugment (Lhotse's) of the normalised ones; ``TrainingAugment``
applies them through ``neurosel.data.batches.CtcDataset``'s ``augment``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from lhotse.dataset import SpecAugment
from lhotse.utils import LOG_EPSILON


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


class TrainingAugment:
    """``CtcDataset``'s ``augment`` for training: ``feature_warp`` before CMVN, ``spec_augment``
    after it, each only when enabled."""

    def __init__(self, spec_augment: SpecAugmentConfig | None = None,
                 feature_warp: FeatureWarpConfig | None = None) -> None:
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

    def before_cmvn(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw batch, each utterance warped and stretched (``perturb_batch``) when enabled."""
        if self.feature_warp is None:
            return feats, feat_lens
        return perturb_batch(feats, feat_lens, self.feature_warp)

    def after_cmvn(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> torch.Tensor:
        """The normalised batch with SpecAugment's masks and warping when enabled."""
        if self.spec_augment is None:
            return feats
        segments = torch.stack([torch.arange(len(feat_lens)), torch.zeros_like(feat_lens), feat_lens], 1)
        return self.spec_augment(feats, supervision_segments=segments)
