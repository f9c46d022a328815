"""Running on-rates of a stream: per FC neuron, the share of recent frames on which it was on,
updated as utterances arrive (for choosing hyper/hypo neurons at test time, when no reference
set exists yet).

Frames are weighted by exp(-age / memory_frames), age counted in frames, a batch's frames taken as
arriving together; ``memory_frames=None`` keeps every frame with weight 1 (the plain on-rate so
far). Read at the consumers' inputs like ``StatsCollector`` (``neurosel.fc.taps``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, fc_widths
from neurosel.fc.taps import ActivationTaps
from neurosel.saliency.classify import ClassifyConfig, classify_values, neurons_of
from neurosel.saliency.stats import masked_rows


class RunningOnRate:
    """A context manager that updates decayed on-counts from every forward of ``model`` inside
    ``with`` (give a frame mask with ``mask``, as for ``StatsCollector``)."""

    def __init__(self, model: nn.Module, spec: FcSpec, memory_frames: float | None = None) -> None:
        if memory_frames is not None and not memory_frames > 0:
            raise NeuroselError(f"memory_frames must be > 0, got {memory_frames}")
        self.spec = spec
        self.memory_frames = memory_frames
        self.widths = fc_widths(model, spec)
        self.on = [torch.zeros(d, dtype=torch.float64) for d in self.widths]
        self.frames = [0.0] * len(self.widths)
        self.mask: Tensor | None = None
        self._taps = ActivationTaps(model, spec, self._add)

    def __enter__(self) -> RunningOnRate:
        self._taps.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._taps.__exit__(*exc)

    def _add(self, layer: int, activations: Tensor) -> None:
        x = masked_rows(activations, self.mask, f"layer {layer} ({self.spec.activations[layer]})",
                        self.widths[layer])
        n = x.shape[0]
        keep = 1.0 if self.memory_frames is None else math.exp(-n / self.memory_frames)
        self.on[layer] = self.on[layer] * keep + (x > self.spec.on_threshold).sum(0).to(torch.float64).cpu()
        self.frames[layer] = self.frames[layer] * keep + n

    def on_rate(self) -> list[Tensor]:
        """Per layer (D_l,) float64 running on-rate; ``NeuroselError`` before any frame."""
        if not all(self.frames):
            raise NeuroselError("running on-rate: no frames seen yet")
        return [on / frames for on, frames in zip(self.on, self.frames)]

    def extremes(self, percent: float) -> dict[int, Tensor]:
        """Per layer the indices of the ``percent``% most and least often on neurons (hyper and
        hypo by the percentile rule of ``neurosel.saliency.classify``)."""
        rates = self.on_rate()
        classes = classify_values(rates, rates, ClassifyConfig(mode="percentile", percent=percent))
        return neurons_of(classes)
