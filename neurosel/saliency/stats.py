"""Streaming per-neuron activation statistics of a model's FC layers (one pass, no stored
activations).

For FC layer l and neuron j, over the non-padded frames t of a reference set, with activation
a_j(t): the frame count, the number of frames with a_j(t) > theta (on_rate), mean and variance
(Chan et al.'s parallel update of mean and sum of squared deviations, all in float64), min, max
and a fixed-bin histogram with an underflow and an overflow bin.

Memory is O(sum_l D_l * bins) whatever the amount of data, plus scratch buffers the size of one
batch's activations of the widest layer, reused from batch to batch. Partial statistics from
several jobs merge exactly (counts, histograms, min, max) or to float64 rounding (mean,
variance), so a stage can fan out over jobs and ``merge`` the results.

Usage::

    with StatsCollector(model, spec, StatsConfig(hist_max=1.0)) as collector:
        for feats, frame_mask in batches:
            with collector.masked(frame_mask):   # (B, T) bool, True = real frame
                model(feats)
    stats = collector.result()
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.io import torch_load, torch_save
from neurosel.fc import FcSpec, fc_widths, get_linear
from neurosel.fc.taps import ActivationTaps



@dataclass(frozen=True)
class StatsConfig:
    """Histogram of each neuron's activations: ``hist_bins`` equal bins over
    [hist_min, hist_max] plus an underflow and an overflow bin. [0, 1] suits sigmoid; for ReLU
    use [0, max_range] and read the overflow bin. ``input_norms``: also sum the squares of each
    FC linear's inputs over the frames (``NeuronStats.input_sumsq``, what Wanda's criterion
    needs; the first FC layer's inputs are not another layer's activations)."""

    hist_bins: int = 50
    hist_min: float = 0.0
    hist_max: float = 1.0
    input_norms: bool = False

    def __post_init__(self) -> None:
        if self.hist_bins < 1:
            raise ValueError(f"hist_bins must be >= 1, got {self.hist_bins}")
        if not self.hist_max > self.hist_min:
            raise ValueError(f"hist_max ({self.hist_max}) must exceed hist_min ({self.hist_min})")


@dataclass
class LayerStats:
    """Accumulated statistics of one layer's D neurons.

    ``hist`` is (D, bins + 2): column 0 counts a < hist_min, the last column a > hist_max.
    """

    count: int
    on_count: Tensor  # (D,) int64
    mean: Tensor  # (D,) float64
    m2: Tensor  # (D,) float64, sum of squared deviations from the mean
    min: Tensor  # (D,) float64, +inf while empty
    max: Tensor  # (D,) float64, -inf while empty
    hist: Tensor  # (D, bins + 2) int64

    @classmethod
    def empty(cls, width: int, bins: int) -> LayerStats:
        """Statistics of no frames for a layer of ``width`` neurons."""
        f64 = torch.float64
        return cls(0, torch.zeros(width, dtype=torch.int64), torch.zeros(width, dtype=f64),
                   torch.zeros(width, dtype=f64), torch.full((width,), math.inf, dtype=f64),
                   torch.full((width,), -math.inf, dtype=f64),
                   torch.zeros(width, bins + 2, dtype=torch.int64))

    @property
    def width(self) -> int:
        return self.mean.numel()

    def _require_frames(self) -> None:
        if self.count == 0:
            raise NeuroselError("neuron statistics: no frames were collected for a layer")

    @property
    def on_rate(self) -> Tensor:
        """(D,) share of frames with activation > theta."""
        self._require_frames()
        return self.on_count.to(torch.float64) / self.count

    @property
    def variance(self) -> Tensor:
        """(D,) population variance of the activations."""
        self._require_frames()
        return self.m2 / self.count

    @property
    def entropy(self) -> Tensor:
        """(D,) on/off entropy in bits, -p log2 p - (1-p) log2 (1-p), with 0 log 0 = 0."""
        p = self.on_rate
        return _binary_entropy(p)

    def to(self, device: torch.device | str) -> LayerStats:
        """These statistics on ``device`` (self if already there)."""
        if self.mean.device == torch.device(device):
            return self
        return LayerStats(self.count, *(getattr(self, f.name).to(device)
                                        for f in dataclasses.fields(self) if f.name != "count"))

    def update(self, x: Tensor, theta: float, config: StatsConfig, workspace: Workspace | None = None) -> None:
        """Add frames ``x`` (N, D), float32 or float64 (computed in float64 either way) on any
        device (the sums move there, e.g. to the GPU the model runs on); ``NeuroselError`` (and
        no change) if one is not finite. ``workspace`` (reused across calls) holds the scratch
        tensors."""
        n = x.shape[0]
        if n == 0:
            return
        if self.mean.device != x.device:
            for f in dataclasses.fields(self):
                if f.name != "count":
                    setattr(self, f.name, getattr(self, f.name).to(x.device))
        work = workspace or Workspace()
        # min and max of the input before widening (exact, and float32 reads half the bytes)
        batch_min, batch_max = (v.to(torch.float64) for v in (x.amin(0), x.amax(0)))  # NaN propagates
        if not (torch.isfinite(batch_min).all() and torch.isfinite(batch_max).all()):
            raise NeuroselError("non-finite activation")
        x = work.get("x", x.shape, torch.float64, x.device).copy_(x)  # exact widening
        self.on_count += torch.gt(x, theta, out=work.get("mask", x.shape, torch.bool, x.device)).sum(0, dtype=torch.int32)
        batch_mean = x.mean(0)
        batch_m2 = torch.sub(x, batch_mean, out=work.get("scratch", x.shape, x.dtype, x.device)).square_().sum(0)
        self._merge_moments(n, batch_mean, batch_m2)
        self.min = torch.minimum(self.min, batch_min)
        self.max = torch.maximum(self.max, batch_max)
        self.hist += _histogram(x, config, work, (batch_min, batch_max))

    def _merge_moments(self, n: int, mean: Tensor, m2: Tensor) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total

    def copy(self) -> LayerStats:
        """An independent copy."""
        return LayerStats(self.count, *(getattr(self, f.name).clone()
                                        for f in dataclasses.fields(self) if f.name != "count"))

    def merged(self, other: LayerStats) -> LayerStats:
        """Statistics of the union of both frame sets (a new object)."""
        out = LayerStats(self.count, self.on_count + other.on_count, self.mean.clone(),
                         self.m2.clone(), torch.minimum(self.min, other.min),
                         torch.maximum(self.max, other.max), self.hist + other.hist)
        if other.count:
            out._merge_moments(other.count, other.mean, other.m2)
        return out


def _binary_entropy(p: Tensor) -> Tensor:
    q = 1.0 - p
    return -(torch.xlogy(p, p) + torch.xlogy(q, q)) / math.log(2.0)


class Workspace:
    """Scratch tensors reused from batch to batch by ``LayerStats.update``: on CPU, allocating
    fresh (frames x width) temporaries for every batch cost more than the arithmetic on them
    (page faults on new memory), so the statistics pass keeps one set and works in place."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: torch.Size | tuple[int, ...], dtype: torch.dtype,
            device: torch.device | None = None) -> Tensor:
        """An uninitialised tensor of ``shape``, ``dtype`` and ``device`` (default CPU) backed by the
        buffer ``name``."""
        numel = math.prod(shape)
        device = device or torch.device("cpu")
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.device != device or buf.numel() < numel:
            buf = self._buffers[name] = torch.empty(numel, dtype=dtype, device=device)
        return buf[:numel].view(shape)


def _histogram(x: Tensor, config: StatsConfig, workspace: Workspace | None,
               value_range: tuple[Tensor, Tensor]) -> Tensor:
    """(N, D) float64 -> (D, bins + 2) counts with underflow/overflow columns; a == hist_max falls
    in the last regular bin. ``value_range``, the (D,) min and max of ``x``'s columns, limits the
    under- and overflow counts to the columns where they can occur.

    Every value is first binned with its bin index clamped to the regular bins, which puts each
    value below ``hist_min`` into the first and each value above ``hist_max`` into the last
    regular bin; those are then moved to the underflow and overflow columns by counting them.
    This is the costliest part of the statistics pass, hence the in-place arithmetic on reused
    buffers.
    """
    work = workspace or Workspace()
    bins = config.hist_bins
    scale = bins / (config.hist_max - config.hist_min)
    d = x.shape[1]
    idx = torch.sub(x, config.hist_min, out=work.get("scratch", x.shape, x.dtype, x.device))
    idx.mul_(scale).floor_().clamp_(0, bins - 1)
    idx += torch.arange(d, dtype=idx.dtype, device=x.device) * bins  # per-neuron offset into one flat count vector
    flat = work.get("flat", x.shape, torch.int32, x.device).copy_(idx)  # int32: bincount reads half the bytes
    hist = torch.bincount(flat.view(-1), minlength=d * bins).view(d, bins)
    low, high = value_range
    under = _count_where(x, low < config.hist_min, torch.lt, config.hist_min)
    over = _count_where(x, high > config.hist_max, torch.gt, config.hist_max)
    hist[:, 0] -= under
    hist[:, -1] -= over
    return torch.cat([under[:, None], hist, over[:, None]], dim=1)


def _count_where(x: Tensor, columns: Tensor, compare: Callable[..., Tensor], bound: float) -> Tensor:
    """(D,) int64: per column of ``x``, how many entries ``compare(entry, bound)`` holds for,
    counted only in the ``columns`` (D,) bool marks (zero elsewhere): few neurons leave the
    histogram's range, so this reads a few columns instead of the whole batch."""
    out = torch.zeros(x.shape[1], dtype=torch.int64, device=x.device)
    cols = columns.nonzero().squeeze(1)
    if cols.numel():
        out[cols] = compare(x.index_select(1, cols), bound).sum(0)
    return out


@dataclass
class NeuronStats:
    """Statistics of every FC layer (index 0 = input side) of one reference set."""

    theta: float
    config: StatsConfig
    layers: list[LayerStats]
    input_sumsq: list[Tensor] | None = None  # per layer (in_l,) float64, with config.input_norms

    @property
    def widths(self) -> list[int]:
        return [s.width for s in self.layers]

    @property
    def on_rate(self) -> list[Tensor]:
        """Per layer (D_l,) share of frames with activation > theta."""
        return [s.on_rate for s in self.layers]

    @property
    def mean_act(self) -> list[Tensor]:
        """Per layer (D_l,) mean activation."""
        for s in self.layers:
            s._require_frames()
        return [s.mean for s in self.layers]

    @property
    def entropy(self) -> list[Tensor]:
        """Per layer (D_l,) on/off entropy in bits."""
        return [s.entropy for s in self.layers]

    @property
    def variance(self) -> list[Tensor]:
        """Per layer (D_l,) activation variance."""
        return [s.variance for s in self.layers]

    @property
    def input_rms(self) -> list[Tensor]:
        """Per layer (in_l,) root mean square of each input of the layer's linear over the frames;
        ``NeuroselError`` unless collected with ``input_norms``."""
        if self.input_sumsq is None:
            raise NeuroselError("neuron statistics hold no input norms (collect with input_norms=True)")
        for s in self.layers:
            s._require_frames()
        return [(q / s.count).sqrt() for q, s in zip(self.input_sumsq, self.layers)]

    def to_dict(self) -> dict[str, Any]:
        """A dict of tensors (and lists/dicts of them) that loads with ``weights_only=True``."""
        f64 = torch.float64
        return {
            "theta": torch.tensor(self.theta, dtype=f64),
            "hist_bins": torch.tensor(self.config.hist_bins),
            "hist_min": torch.tensor(self.config.hist_min, dtype=f64),
            "hist_max": torch.tensor(self.config.hist_max, dtype=f64),
            "layers": [{"count": torch.tensor(s.count), **{f.name: getattr(s, f.name)
                        for f in dataclasses.fields(LayerStats) if f.name != "count"}}
                       for s in self.layers],
            **({"input_sumsq": self.input_sumsq} if self.input_sumsq is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "statistics") -> NeuronStats:
        """Inverse of ``to_dict``; ``where`` names the source in errors."""
        try:
            input_sumsq = list(data["input_sumsq"]) if "input_sumsq" in data else None
            config = StatsConfig(int(data["hist_bins"]), float(data["hist_min"]),
                                 float(data["hist_max"]), input_sumsq is not None)
            layers = [LayerStats(int(d["count"]), *(d[f.name] for f in dataclasses.fields(LayerStats)
                                                     if f.name != "count"))
                      for d in data["layers"]]
            theta = float(data["theta"])
        except (KeyError, TypeError, ValueError) as e:
            raise NeuroselError(f"{where}: not a neuron statistics file ({e!r})") from e
        for i, s in enumerate(layers):
            if s.hist.shape != (s.width, config.hist_bins + 2):
                raise NeuroselError(f"{where}: layer {i} histogram has shape {tuple(s.hist.shape)}")
        return cls(theta, config, layers, input_sumsq)


def merge(a: NeuronStats, b: NeuronStats) -> NeuronStats:
    """Statistics of the union of the frames behind ``a`` and ``b`` (e.g. two jobs' shares)."""
    if a.theta != b.theta or a.config != b.config or a.widths != b.widths:
        raise NeuroselError(
            f"cannot merge neuron statistics: theta {a.theta} vs {b.theta}, "
            f"config {a.config} vs {b.config}, widths {a.widths} vs {b.widths}")
    sumsq = None if a.input_sumsq is None or b.input_sumsq is None else \
        [x + y for x, y in zip(a.input_sumsq, b.input_sumsq)]
    return NeuronStats(a.theta, a.config, [x.merged(y) for x, y in zip(a.layers, b.layers)], sumsq)


def save_stats(stats: NeuronStats, path: str | Path) -> None:
    """Write ``stats`` atomically as a tensors-only dict."""
    torch_save(stats.to_dict(), path)


def load_stats(path: str | Path) -> NeuronStats:
    """Read statistics written by ``save_stats`` (``weights_only=True``)."""
    data = torch_load(path)
    if not isinstance(data, dict):
        raise NeuroselError(f"{path}: not a neuron statistics file")
    return NeuronStats.from_dict(data, str(path))


class StatsCollector:
    """Accumulates ``NeuronStats`` from the activations of ``spec``'s layers, read at the input of
    each layer's consumer (``neurosel.fc.taps``: right for shared and functional activations, with
    PyTorch's fused inference paths off inside the block).

    A context manager: hooks exist only inside ``with``. Before each forward, give the frame
    mask (boolean, shape = the activation's leading dims, True = real frame) with
    ``set_mask`` or the ``masked`` context; without a mask every frame counts. ``result`` raises
    ``NeuroselError`` if some layers saw frames and others none.
    """

    def __init__(self, model: nn.Module, spec: FcSpec, config: StatsConfig = StatsConfig()):
        self.model = model
        self.spec = spec
        self.config = config
        widths = fc_widths(model, spec)
        self._linears = [get_linear(model, name) for name in spec.linears]
        sumsq = [torch.zeros(lin.in_features, dtype=torch.float64) for lin in self._linears] \
            if config.input_norms else None
        self._stats = NeuronStats(spec.on_threshold, config,
                                  [LayerStats.empty(d, config.hist_bins) for d in widths], sumsq)
        self._mask: Tensor | None = None
        self._taps = ActivationTaps(model, spec, self._add)
        self._input_hooks: list[torch.utils.hooks.RemovableHandle] = []
        self._workspace = Workspace()  # shared: the layers' hooks run one after the other

    def __enter__(self) -> StatsCollector:
        self._taps.__enter__()
        if self.config.input_norms:
            self._input_hooks = [lin.register_forward_pre_hook(self._add_input(layer))
                                 for layer, lin in enumerate(self._linears)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._input_hooks:
            h.remove()
        self._input_hooks.clear()
        self._taps.__exit__(*exc)

    def set_mask(self, mask: Tensor | None) -> None:
        """Use ``mask`` (bool, leading dims of the activations) for the following forwards."""
        if mask is not None and mask.dtype != torch.bool:
            raise NeuroselError(f"frame mask must be boolean, got {mask.dtype}")
        self._mask = mask

    @contextlib.contextmanager
    def masked(self, mask: Tensor | None) -> Iterator[None]:
        """``set_mask(mask)`` for the duration of the block, then no mask."""
        self.set_mask(mask)
        try:
            yield
        finally:
            self._mask = None

    def _add(self, layer: int, activations: Tensor) -> None:
        stats = self._stats.layers[layer]
        where = f"layer {layer} ({self.spec.activations[layer]})"
        x = masked_rows(activations, self._mask, where, stats.width)
        try:
            stats.update(x, self._stats.theta, self.config, self._workspace)
        except NeuroselError as e:
            raise NeuroselError(f"{where}: {e}") from e

    def _add_input(self, layer: int) -> Callable[..., None]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            assert self._stats.input_sumsq is not None
            x = masked_rows(args[0], self._mask, f"input of {self.spec.linears[layer]}", module.in_features)
            self._stats.input_sumsq[layer] = self._stats.input_sumsq[layer].to(x.device) \
                + x.to(torch.float64).square().sum(0)

        return pre_hook

    def result(self) -> NeuronStats:
        """A copy of the statistics collected so far, on the CPU."""
        self._taps.check_seen()
        sumsq = None if self._stats.input_sumsq is None else [q.cpu().clone() for q in self._stats.input_sumsq]
        return NeuronStats(self._stats.theta, self.config, [s.to("cpu").copy() for s in self._stats.layers], sumsq)


def masked_rows(output: Tensor, mask: Tensor | None, where: str, width: int) -> Tensor:
    """(..., D) activations -> (N, D) detached rows of the frames where ``mask`` is True."""
    if not isinstance(output, Tensor) or output.shape[-1] != width:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise NeuroselError(f"{where}: expected activations (..., {width}), got {shape}")
    x = output.detach().reshape(-1, width)
    if mask is not None:
        if tuple(mask.shape) != tuple(output.shape[:-1]):
            raise NeuroselError(f"{where}: frame mask {tuple(mask.shape)} does not match "
                                f"activations {tuple(output.shape)}")
        x = x[mask.reshape(-1).to(x.device)]
    return x


def collect_stats(
    model: nn.Module,
    spec: FcSpec,
    batches: Iterable[tuple[Any, Tensor | None]],
    config: StatsConfig = StatsConfig(),
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> NeuronStats:
    """One inference pass over ``batches`` of (model input, frame mask or None).

    ``forward(model, input)`` runs the model (default ``model(input)``). The model is put in
    eval mode for the pass and its previous mode restored.
    """
    run = forward or (lambda m, x: m(x))
    was_training = model.training
    model.eval()
    try:
        with StatsCollector(model, spec, config) as collector, torch.inference_mode():
            for inputs, mask in batches:
                with collector.masked(mask):
                    run(model, inputs)
        return collector.result()
    finally:
        model.train(was_training)
