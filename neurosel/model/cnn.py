"""The CNN acoustic model: a convolutional front end over (time, frequency) with frequency pooling
and time subsampling, a stack of FC layers, and a linear output layer over BPE units + blank,
trained with CTC.

Layout (the names the analysis code relies on, see ``fc_spec``):

    feats (B, T, F) -> conv blocks (Conv2d, max-pool over frequency, ReLU; stride in time)
      -> per-frame flatten (channels x frequency) -> splice +-``fc_context`` frames
      -> for each FC layer i: fc[i] (nn.Linear) -> fc_norm[i] (BatchNorm1d or Identity)
                              -> fc_act[i] (nn.ReLU or nn.Sigmoid) -> dropout (training only)
         (with ``fc_norm: batchnorm_post`` the BatchNorm1d comes after the activation instead)
      -> output (nn.Linear) -> log_softmax -> log-probs (B, T', V)

Padding never leaks into valid frames: the conv input is zeroed beyond each utterance's length
and so is every conv block's output beyond its (exactly computed) subsampled length, which is what
zero padding would give the utterance alone. The FC stack then runs on the valid frames only, so
BatchNorm statistics and activation hooks see no padded frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from neurosel.fc import FcSpec


@dataclass
class ModelConfig:
    """Architecture of the CNN CTC model (the ``model:`` section of ``conf/train.yaml``)."""

    num_features: int = 80
    # Output units including the CTC blank (id 0); 0 means "take it from the lang dir's bpe.model".
    vocab_size: int = 0
    # "freq": stacked conv blocks; "time_freq": the first block runs a time convolution
    # (kernel ``time_conv_kernel`` x 1) in parallel with the frequency one and concatenates channels.
    conv_type: Literal["freq", "time_freq"] = "freq"
    conv_channels: list[int] = field(default_factory=lambda: [32, 32])
    conv_kernel: list[int] = field(default_factory=lambda: [3, 3])  # (time, frequency), odd
    time_strides: list[int] = field(default_factory=lambda: [2, 2])  # per block; product = subsampling
    freq_pools: list[int] = field(default_factory=lambda: [2, 2])  # per block, max-pool over frequency
    time_conv_kernel: int = 9
    fc_dims: list[int] = field(default_factory=lambda: [512, 512, 512, 512])  # per-layer widths
    fc_activation: Literal["relu", "sigmoid"] = "relu"
    # batchnorm: BatchNorm1d before each activation (folded into that layer's Linear);
    # batchnorm_post: after it (folded into the next Linear, so a neuron's on-rate is its own);
    # "none" after fold_norms.
    fc_norm: Literal["batchnorm", "batchnorm_post", "none"] = "none"
    fc_context: int = 1  # splice +-fc_context conv output frames at the FC input
    dropout: float = 0.1

    def __post_init__(self) -> None:
        n = len(self.conv_channels)
        if n == 0 or len(self.time_strides) != n or len(self.freq_pools) != n:
            raise ValueError("conv_channels, time_strides and freq_pools need the same, non-zero length")
        if len(self.conv_kernel) != 2 or any(k < 1 or k % 2 == 0 for k in self.conv_kernel):
            raise ValueError("conv_kernel must be two odd sizes (time, frequency)")
        if self.time_conv_kernel < 1 or self.time_conv_kernel % 2 == 0:
            raise ValueError("time_conv_kernel must be odd")
        if not self.fc_dims or min(self.fc_dims) < 1:
            raise ValueError("fc_dims must list at least one positive width")
        if min(self.conv_channels + self.time_strides + self.freq_pools) < 1:
            raise ValueError("conv_channels, time_strides and freq_pools must be positive")
        if self.fc_context < 0 or not 0.0 <= self.dropout < 1.0:
            raise ValueError("fc_context must be >= 0 and dropout in [0, 1)")

    @property
    def subsampling(self) -> int:
        """Input frames per output frame."""
        out = 1
        for s in self.time_strides:
            out *= s
        return out


class FreqMaxPool(nn.Module):
    """Max-pool over the last (frequency) axis of (B, C, T, F) in windows of ``size``, a trailing
    partial window dropped: the values of ``nn.MaxPool2d((1, size))``, faster on CPU. torch's
    2-d max-pool with a (1, k) window took as long as the convolutions in a forward pass (a
    profile of decoding: 2.7 of 9.0 s); a 1-d max-pool over rows is ~10x faster forward, and a max
    over a split axis ~1.7x faster forward + backward, so gradients take that path."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        k = self.size
        if k == 1:
            return x
        if torch.is_grad_enabled() and x.requires_grad:
            return x[..., :f // k * k].unflatten(-1, (f // k, k)).max(dim=-1).values
        return nn.functional.max_pool1d(x.reshape(b * c * t, 1, f), k).reshape(b, c, t, f // k)

    def extra_repr(self) -> str:
        return f"size={self.size}"


def conv_block(in_channels: int, out_channels: int, kernel: tuple[int, int], time_stride: int,
               freq_pool: int) -> nn.Sequential:
    """Conv2d with "same" padding and stride in time, max-pool over frequency, ReLU.

    ReLU is monotonic, so it commutes with the max-pool: pooling first gives the outputs (and
    gradients) of the usual conv, ReLU, pool order while the ReLU touches ``freq_pool`` times
    fewer values (the first block's output is the largest tensor of a forward pass).
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=(time_stride, 1),
                  padding=(kernel[0] // 2, kernel[1] // 2)),
        FreqMaxPool(freq_pool),
        nn.ReLU(),
    )


def subsampled_lengths(lens: torch.Tensor, stride: int) -> torch.Tensor:
    """Output length of a "same"-padded odd-kernel convolution with ``stride``: ceil(len / stride)."""
    return (lens + stride - 1) // stride


def length_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool, True on valid frames."""
    return torch.arange(max_len, device=lens.device)[None, :] < lens[:, None]


def splice(x: torch.Tensor, context: int) -> torch.Tensor:
    """(B, T, D) -> (B, T, (2*context+1)*D): frames t-context..t+context, zeros outside [0, T)."""
    if context == 0:
        return x
    padded = nn.functional.pad(x, (0, 0, context, context))
    t = x.size(1)
    return torch.cat([padded[:, i:i + t] for i in range(2 * context + 1)], dim=-1)


class CnnCtcModel(nn.Module):
    """CNN + FC acoustic model with a CTC output layer; see the module docstring for the layout."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        if cfg.vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2 (blank + units), got {cfg.vocab_size}")
        self.cfg = cfg
        kernel = (cfg.conv_kernel[0], cfg.conv_kernel[1])
        self.conv = nn.ModuleList()
        self.time_conv: nn.Sequential | None = None
        in_channels, freq = 1, cfg.num_features
        for i, (channels, stride, pool) in enumerate(zip(cfg.conv_channels, cfg.time_strides, cfg.freq_pools)):
            self.conv.append(conv_block(in_channels, channels, kernel, stride, pool))
            in_channels = channels
            if i == 0 and cfg.conv_type == "time_freq":
                self.time_conv = conv_block(1, channels, (cfg.time_conv_kernel, 1), stride, pool)
                in_channels = 2 * channels
            freq //= pool
        if freq < 1:
            raise ValueError(f"freq_pools {cfg.freq_pools} pool {cfg.num_features} features to nothing")
        fc_in = in_channels * freq * (2 * cfg.fc_context + 1)
        dims = [fc_in] + list(cfg.fc_dims)
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_norm = nn.ModuleList(
            nn.BatchNorm1d(d) if cfg.fc_norm != "none" else nn.Identity() for d in cfg.fc_dims
        )
        act = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid}[cfg.fc_activation]
        self.fc_act = nn.ModuleList(act() for _ in cfg.fc_dims)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(dims[-1], cfg.vocab_size)

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) features, (B,) lengths -> (B, T', V) log-probs, (B,) output lengths.

        Log-probs of padded output frames (t >= out_lens[b]) are 0 and carry no meaning.
        """
        x = feats.unsqueeze(1) * length_mask(feat_lens, feats.size(1))[:, None, :, None]
        lens = feat_lens
        for i, block in enumerate(self.conv):
            y = block(x)
            if i == 0 and self.time_conv is not None:
                y = torch.cat([y, self.time_conv(x)], dim=1)
            lens = subsampled_lengths(lens, self.cfg.time_strides[i])
            x = y * length_mask(lens, y.size(2))[:, None, :, None]
        b, c, t, f = x.shape
        x = splice(x.permute(0, 2, 1, 3).reshape(b, t, c * f), self.cfg.fc_context)
        valid = length_mask(lens, t)
        h = x[valid]
        post = self.cfg.fc_norm == "batchnorm_post"
        for linear, norm, act in zip(self.fc, self.fc_norm, self.fc_act):
            h = self.dropout(norm(act(linear(h))) if post else act(norm(linear(h))))
        log_probs = self.output(h).log_softmax(dim=-1)
        out = log_probs.new_zeros(b, t, log_probs.size(-1))
        out[valid] = log_probs
        return out, lens

    def fc_spec(self) -> FcSpec:
        """Dotted names of the FC linears, their activations and consumers (see ``FcSpec``)."""
        n = len(self.fc)
        return FcSpec(
            linears=[f"fc.{i}" for i in range(n)],
            activations=[f"fc_act.{i}" for i in range(n)],
            consumers=[f"fc.{i}" for i in range(1, n)] + ["output"],
            on_threshold=0.5 if self.cfg.fc_activation == "sigmoid" else 0.0,
        )

    def current_config(self) -> ModelConfig:
        """The config that rebuilds this model as it is now: FC widths, vocabulary and norm kind are
        read from the layers, so a pruned or norm-folded model saves a config that matches it."""
        return dataclasses.replace(
            self.cfg,
            fc_dims=[linear.out_features for linear in self.fc],
            vocab_size=self.output.out_features,
            fc_norm=self.cfg.fc_norm if any(isinstance(m, nn.BatchNorm1d) for m in self.fc_norm) else "none",
        )
