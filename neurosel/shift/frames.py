"""Which rows of a batch tensor are whose frames.

Models lay out per-frame tensors (FC activations at a consumer's input, output log-posteriors) in
one of two ways: padded, ``(B, T, D)``, or as the valid frames only, ``(N, D)``, utterance after
utterance in time order (the project's CNN runs its FC stack on ``x[valid]``, which is that order).
The caller says where the real frames are by a frame mask ``(B, T)`` or by frame counts ``(B,)``
(real frames ``0 .. n_b - 1`` of each row); both describe both layouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from neurosel.errors import NeuroselError


@dataclass(frozen=True)
class BatchFrames:
    """The real frames of a batch of B utterances: ``mask`` (B, T) bool, True = real frame, or
    ``lengths`` (B,) integer frame counts (the first ``lengths[b]`` frames of row b); exactly one."""

    mask: Tensor | None = None
    lengths: Tensor | None = None

    def __post_init__(self) -> None:
        if (self.mask is None) == (self.lengths is None):
            raise NeuroselError("give the real frames of a batch as a frame mask or as lengths (exactly one)")
        if self.mask is not None and (self.mask.dtype != torch.bool or self.mask.dim() != 2):
            raise NeuroselError(f"frame mask must be a (B, T) bool tensor, got {self.mask.dtype} "
                                f"{tuple(self.mask.shape)}")
        if self.lengths is not None and (self.lengths.dim() != 1 or self.lengths.is_floating_point()
                                         or bool((self.lengths < 0).any())):
            raise NeuroselError(f"frame lengths must be a (B,) tensor of counts >= 0, got "
                                f"{self.lengths.dtype} {tuple(self.lengths.shape)}")

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0] if self.mask is not None else self.lengths.shape[0])

    @property
    def counts(self) -> list[int]:
        """Real frames per utterance, (B,) as a list."""
        counts = self.mask.sum(1) if self.mask is not None else self.lengths
        return [int(n) for n in counts]

    def rows(self, x: Tensor, where: str) -> Tensor:
        """``x`` (B, T, D) or (N, D) -> (N, D): the real frames, utterance after utterance, each in
        time order. ``NeuroselError`` naming ``where`` when ``x`` fits neither layout."""
        n_real = sum(self.counts)
        b = self.batch_size
        if x.dim() == 3 and x.shape[0] == b:
            mask = self.mask if self.mask is not None else _length_mask(self.lengths, x.shape[1], where)
            if tuple(mask.shape) != tuple(x.shape[:2]):
                raise NeuroselError(f"{where}: frame mask {tuple(mask.shape)} does not match {tuple(x.shape)}")
            return x[mask.to(x.device)]
        if x.dim() == 2 and x.shape[0] == n_real:
            return x
        raise NeuroselError(f"{where}: got {tuple(x.shape)}; expected (B={b}, T, D) padded or "
                            f"(N={n_real}, D), the real frames of the batch")


def _length_mask(lengths: Tensor, t: int, where: str) -> Tensor:
    if bool((lengths > t).any()):
        raise NeuroselError(f"{where}: frame lengths up to {int(lengths.max())} exceed the {t} frames of the batch")
    return torch.arange(t, device=lengths.device)[None, :] < lengths[:, None]
