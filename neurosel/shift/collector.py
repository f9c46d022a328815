"""One streaming pass that turns a model's FC activations and output log-posteriors into
per-utterance shift signals against an in-domain reference (``neurosel.saliency.NeuronStats``).

Activations are read where the statistics of ``neurosel.saliency.stats`` read them, at each FC
layer's consumer input (``neurosel.fc.taps``), and only their on/off pattern (activation > the
spec's ``on_threshold``) is kept, as a bool tensor, until ``end_batch`` has split the batch into
utterances; nothing of a batch is kept after it.

Usage::

    with ShiftCollector(model, spec, reference, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        for utt_ids, feats, feat_lens in batches:
            log_probs, out_lens = model(feats, feat_lens)       # (B, T', V), (B,)
            collector.end_batch(utt_ids, log_probs, lengths=out_lens)
    signals = collector.result()                                # ShiftSignals

The frames (a mask or lengths, ``neurosel.shift.frames``) are those of the FC layers and the
output, so a model that subsamples time gives its output lengths. Signal names: each of
``NEURON_SIGNALS`` over all FC neurons pooled (each neuron counts once) and per layer as
``<name>.layer<l>``; with ``log_probs``, each of ``OUTPUT_SIGNALS``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, fc_widths
from neurosel.fc.taps import ActivationTaps
from neurosel.saliency.classify import ClassifyConfig, classify_values
from neurosel.saliency.stats import NeuronStats
from neurosel.shift.frames import BatchFrames
from neurosel.shift.neuron_signals import NEURON_SIGNALS, LayerReference, NeuronSignalConfig, neuron_sums
from neurosel.shift.output_signals import OUTPUT_SIGNALS, output_sums
from neurosel.shift.signals import ShiftSignals


@dataclass(frozen=True)
class ShiftConfig:
    """``neurons``: how the neuron signals are computed; ``blank``: the index of the blank (or
    other "no output") unit among the model's outputs, needed for the output signals."""

    neurons: NeuronSignalConfig = field(default_factory=NeuronSignalConfig)
    blank: int | None = None


def layer_references(reference: NeuronStats, widths: list[int], on_threshold: float,
                     config: NeuronSignalConfig) -> list[LayerReference]:
    """What the neuron signals need of ``reference``; ``NeuroselError`` unless it was collected on
    a model with these FC ``widths`` and ``on_threshold`` and every layer has frames."""
    if reference.widths != widths:
        raise NeuroselError(f"reference statistics have FC widths {reference.widths}, the model has {widths}: "
                            "they were collected on another model")
    if reference.theta != on_threshold:
        raise NeuroselError(f"reference statistics use on-threshold {reference.theta}, the model's FC spec "
                            f"{on_threshold}")
    for layer, stats in enumerate(reference.layers):
        if stats.count == 0:
            raise NeuroselError(f"reference statistics: FC layer {layer} has no frames")
    classes = classify_values(reference.on_rate, reference.mean_act,
                              ClassifyConfig(hyper_on_rate=config.hyper_on_rate, hypo_on_rate=config.hypo_on_rate))
    return [LayerReference(s.on_rate, (s.on_count.to(torch.float64) + 0.5) / (s.count + 1),
                           torch.from_numpy(labels == "normal"))
            for s, labels in zip(reference.layers, classes)]


class ShiftCollector:
    """Per-utterance shift signals of ``model``'s FC layers (``spec``) against ``reference``.

    A context manager: the activation taps exist only inside ``with``. After each forward of the
    model, ``end_batch`` names the batch's utterances and real frames and gives the output
    log-posteriors; ``result`` returns the signals of all utterances so far.
    """

    def __init__(self, model: nn.Module, spec: FcSpec, reference: NeuronStats, config: ShiftConfig = ShiftConfig()):
        self.spec = spec
        self.config = config
        self._refs = layer_references(reference, fc_widths(model, spec), spec.on_threshold, config.neurons)
        self._pending: list[Tensor | None] = [None] * len(spec)
        self._taps = ActivationTaps(model, spec, self._record)
        self._utt_ids: list[str] = []
        self._frames: list[int] = []
        self._values: list[list[float]] = []
        self._names: tuple[str, ...] | None = None

    def __enter__(self) -> ShiftCollector:
        self._taps.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._taps.__exit__(*exc)

    def _record(self, layer: int, activations: Tensor) -> None:
        if self._pending[layer] is not None:
            raise NeuroselError(f"FC layer {layer} ran twice without end_batch between: call end_batch after "
                                "each forward of the model")
        width = self._refs[layer].width
        if not isinstance(activations, Tensor) or activations.shape[-1] != width:
            shape = tuple(activations.shape) if isinstance(activations, Tensor) else type(activations).__name__
            raise NeuroselError(f"FC layer {layer}: expected activations (..., {width}), got {shape}")
        # compared in float64 as the statistics are; kept on the CPU, where the reference is
        self._pending[layer] = (activations.detach().to(torch.float64) > self.spec.on_threshold).cpu()

    def end_batch(self, utt_ids: Sequence[str], log_probs: Tensor | None = None, *,
                  frame_mask: Tensor | None = None, lengths: Tensor | None = None) -> None:
        """Close the batch of the last forward: ``utt_ids`` (B ids, in batch order), its output
        ``log_probs`` ((B, T, V) or (N, V) per-frame log-posteriors, or None for the neuron
        signals only; every batch alike), and its real frames as ``frame_mask`` (B, T) bool or
        ``lengths`` (B,) (see ``neurosel.shift.frames``)."""
        pending, self._pending = self._pending, [None] * len(self.spec)
        if all(on is None for on in pending):
            raise NeuroselError("end_batch: the model has not run since the last batch")
        if any(on is None for on in pending):
            layer = pending.index(None)
            raise NeuroselError(f"FC layer {layer}: consumer '{self.spec.consumers[layer]}' did not run in this "
                                "forward while other layers did")
        frames = BatchFrames(*(None if t is None else t.cpu() for t in (frame_mask, lengths)))
        ids = list(utt_ids)
        if len(ids) != frames.batch_size:
            raise NeuroselError(f"end_batch: {len(ids)} utterance ids for a batch of {frames.batch_size}")
        counts = frames.counts
        known = set(self._utt_ids)
        for uid, n in zip(ids, counts):
            if n == 0:
                raise NeuroselError(f"utterance {uid!r}: no frames")
            if uid in known or ids.count(uid) > 1:
                raise NeuroselError(f"utterance {uid!r} appears twice")
        if (log_probs is not None) and self.config.blank is None:
            raise NeuroselError("output signals need the blank index (ShiftConfig.blank)")
        per_layer = [frames.rows(on, f"FC layer {layer}").split(counts) for layer, on in enumerate(pending)]
        outputs = (frames.rows(log_probs.detach().cpu(), "output log-posteriors").split(counts)
                   if log_probs is not None else [None] * len(ids))
        rows = [self._signals([layer[b] for layer in per_layer], outputs[b]) for b in range(len(ids))]
        for uid, (names, _) in zip(ids, rows):
            if names != (self._names or names):
                raise NeuroselError(f"utterance {uid!r}: signals {names}, earlier utterances {self._names} "
                                    "(give log_probs for every batch or for none)")
        self._names = rows[0][0]
        self._utt_ids += ids
        self._frames += counts
        self._values += [values for _, values in rows]

    def _signals(self, on: list[Tensor], log_probs: Tensor | None) -> tuple[tuple[str, ...], list[float]]:
        """One utterance's (n, D_l) on/off frames per layer and (n, V) log-posteriors or None ->
        (signal names, values)."""
        sums = [neuron_sums(x, ref, self.config.neurons) for x, ref in zip(on, self._refs)]
        pooled = torch.stack(sums).sum(0) / sum(ref.width for ref in self._refs)
        names = list(NEURON_SIGNALS)
        values = pooled.tolist()
        for layer, (s, ref) in enumerate(zip(sums, self._refs)):
            names += [f"{name}.layer{layer}" for name in NEURON_SIGNALS]
            values += (s / ref.width).tolist()
        if log_probs is not None:
            assert self.config.blank is not None  # checked by end_batch
            names += OUTPUT_SIGNALS
            values += (output_sums(log_probs, self.config.blank) / log_probs.shape[0]).tolist()
        return tuple(names), values

    def result(self) -> ShiftSignals:
        """The signals of every utterance so far; ``NeuroselError`` for none, or for a forward
        that no ``end_batch`` closed."""
        if any(on is not None for on in self._pending):
            raise NeuroselError("the model ran after the last end_batch; its frames belong to no utterance")
        self._taps.check_seen()
        if not self._utt_ids:
            raise NeuroselError("shift signals: the set has no utterances")
        table = np.array(self._values, dtype=np.float64)
        assert self._names is not None
        return ShiftSignals(tuple(self._utt_ids), np.array(self._frames, dtype=np.int64),
                            {name: table[:, i].copy() for i, name in enumerate(self._names)})
