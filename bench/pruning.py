"""Pruning: inference time of models with FC neurons physically removed
(``neurosel.prune.remove.remove_neurons``) divided by the unpruned model's, against the fraction
of FLOPs removed.

For each fraction f, f of every FC layer's neurons (a seeded random choice: which neurons does not
change the cost) are removed from a copy of the run's model. Timed, interleaved with the unpruned
model on the same ``dev`` features in memory, one torch thread (a decode job's setting): the
whole forward pass, and the FC stack alone (``neurosel.recipe.prune_stage.run_fc_stack`` on the first FC
layer's captured inputs, as stage 6 measures it). Efficiency = time saved / FLOPs removed: 1
means time falls exactly with FLOPs.
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from bench.common import Metric, Section, fmt, interleaved
from bench.inputs import Workdir, load_cuts, take_seconds, total_seconds
from neurosel.fc import fc_widths
from neurosel.inference import feature_batches
from neurosel.model import CnnCtcModel, load_model
from neurosel.prune.remove import remove_neurons
from neurosel.recipe import layout
from neurosel.recipe.prune_stage import PruneStageConfig, fc_inputs, run_fc_stack
from neurosel.data.batches import load_cmvn

TARGET_EFFICIENCY = 0.7


def fc_macs(model: nn.Module) -> int:
    """Multiply-adds per FC frame of the FC linears and the output layer."""
    spec = model.fc_spec()
    names = spec.linears + [spec.consumers[-1]]
    return sum(model.get_submodule(n).in_features * model.get_submodule(n).out_features for n in names)


def conv_macs(model: nn.Module, batches: list) -> int:
    """Multiply-adds of every Conv2d over ``batches`` (counted on their outputs with hooks)."""
    total = [0]

    def hook(module: nn.Conv2d, args: object, out: torch.Tensor) -> None:
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total[0] += out.numel() * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.inference_mode():
            for b in batches:
                model(b.feats, b.feat_lens)
    finally:
        for h in handles:
            h.remove()
    return total[0]


def pruned_copy(model: CnnCtcModel, fraction: float, seed: int = 0) -> CnnCtcModel:
    """A copy of ``model`` with ``round(fraction * width)`` random neurons removed per FC layer."""
    pruned = copy.deepcopy(model)
    spec = pruned.fc_spec()
    gen = torch.Generator().manual_seed(seed)
    remove = {layer: torch.randperm(d, generator=gen)[: min(round(fraction * d), d - 1)]
              for layer, d in enumerate(fc_widths(pruned, spec))}
    remove_neurons(pruned, spec, remove)
    return pruned.eval()


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Pruning section."""
    section = Section("prune", "Pruning (stage 6 models)")
    start = time.perf_counter()
    torch.set_num_threads(1)
    model, _ = load_model(work.model)
    cmvn = load_cmvn(layout.cmvn_path(work.fbank))
    cuts = take_seconds(load_cuts(layout.cuts_path(work.fbank, "dev")), 30.0 if quick else 300.0)
    batches = list(feature_batches(cuts, cmvn, PruneStageConfig().max_duration))
    fractions = [0.5] if quick else [0.25, 0.5, 0.75]
    models = {"unpruned": model} | {f"{f:.0%} of FC neurons removed": pruned_copy(model, f) for f in fractions}
    repeats = 3 if quick else 7

    def whole(m: nn.Module) -> None:
        with torch.inference_mode():
            for b in batches:
                m(b.feats, b.feat_lens)

    # Whole models first, in a process that holds what a decode job holds: the FC inputs kept for
    # the FC-only timings (about 60 MiB here) change where glibc's malloc places the next
    # forward's large blocks, and with it how many pages each pass faults in.
    timings = interleaved({f"whole|{name}": lambda m=m: whole(m) for name, m in models.items()}, repeats)
    inputs = fc_inputs(model, batches)
    fc_frames = sum(x.shape[0] for x in inputs)
    conv = conv_macs(model, batches)

    def fc_only(m: nn.Module) -> None:
        with torch.inference_mode():
            for x in inputs:
                run_fc_stack(m, m.fc_spec(), x)

    timings |= interleaved({f"fc|{name}": lambda m=m: fc_only(m) for name, m in models.items()}, repeats)
    base_fc = fc_macs(model) * fc_frames
    t0_whole = timings["whole|unpruned"].median_cpu
    t0_fc = timings["fc|unpruned"].median_cpu
    section.table_header = ["model", "FC widths", "FC FLOPs removed", "model FLOPs removed",
                            "FC time / unpruned", "FC efficiency", "model time / unpruned", "model efficiency",
                            "page faults per model pass"]
    effs_fc, effs_whole = [], []
    for name, m in models.items():
        fc = fc_macs(m) * fc_frames
        fc_removed = 1 - fc / base_fc
        model_removed = (base_fc - fc) / (base_fc + conv)
        r_fc = timings[f"fc|{name}"].median_cpu / t0_fc
        r_whole = timings[f"whole|{name}"].median_cpu / t0_whole
        eff_fc = (1 - r_fc) / fc_removed if fc_removed else float("nan")
        eff_whole = (1 - r_whole) / model_removed if model_removed else float("nan")
        if fc_removed:
            effs_fc.append(eff_fc)
            effs_whole.append(eff_whole)
        section.table.append([name, ",".join(map(str, fc_widths(m, m.fc_spec()))), f"{fc_removed:.1%}",
                              f"{model_removed:.1%}", fmt(r_fc), fmt(eff_fc) if fc_removed else "-", fmt(r_whole),
                              fmt(eff_whole) if fc_removed else "-",
                              f"{statistics.median(timings[f'whole|{name}'].faults):.0f}"])
    section.metrics = [
        Metric("FC stack: time saved / FC FLOPs removed (worst fraction)", min(effs_fc), "",
               f">= {TARGET_EFFICIENCY:g}", "prune.fc_efficiency"),
        Metric("whole model: time saved / model FLOPs removed (worst fraction)", min(effs_whole), "",
               f">= {TARGET_EFFICIENCY:g}", "prune.model_efficiency"),
        Metric("FC stack + output layer share of the model's FLOPs", base_fc / (base_fc + conv), "", None,
               "prune.fc_flops_share"),
    ]
    section.notes = [
        f"{len(cuts)} utterances of `dev`, {total_seconds(cuts):.1f} s of audio, {fc_frames} FC frames; "
        f"one torch thread; {len(timings['whole|unpruned'].wall)} interleaved repeats, medians of CPU time.",
        "FC FLOPs: the FC linears and the output layer. Model FLOPs add the convolutions; "
        "element-wise work (activations, pooling, log-softmax) is not counted.",
        "Page faults: the median number of minor page faults of a whole-model pass over the batches. "
        "glibc's malloc gives freed heap memory back to the system and faults it in again on the next "
        "batch in some passes and not in others: that, not the model, is most of the noise in the "
        "whole-model ratios. The whole models are timed before the FC inputs are captured for the "
        "FC-only timings, which would otherwise change where the allocator places the forward's blocks.",
    ]
    section.seconds = time.perf_counter() - start
    return section
