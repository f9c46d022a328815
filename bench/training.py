"""Training: frames per second of stage 3's training step, and the FC stack's achieved FLOP/s as a
fraction of what torch's dense matmul reaches at the same shapes and threads.

The model and batches are the run's: the training config saved in ``exp/baseline/model.pt``
(architecture with its BatchNorm, optimizer, batch size, threads), a fresh model, and batches of
``train`` from the same sampler and dataset stage 3 uses. Timed, interleaved:

- ``step``: ``neurosel.train.loop.train_step`` over the batches (in memory);
- ``load``: building the batches (``CtcDataset``: features from Lilcom, CMVN, BPE targets);
- ``fc``: the FC stack alone (linear, norm, activation, dropout per layer, output layer), forward
  and backward, on the very FC inputs the model computes for those batches;
- ``matmul``: the dense matmuls of the same FC stack (forward, input gradient, weight gradient
  per layer) with ``torch.mm`` on tensors of the same shapes.

FLOPs: 2 per multiply-add, x3 for forward + both backward products.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path

import torch
from torch import Tensor, nn

from bench.common import Metric, Section, fmt, interleaved
from bench.inputs import Workdir, load_cuts
from neurosel.config import from_dict
from neurosel.io import torch_load
from neurosel.model import CnnCtcModel, build_model
from neurosel.recipe import layout
from neurosel.data.batches import CtcDataset, load_bpe, load_cmvn, make_sampler
from neurosel.train.loop import train_step
from neurosel.train.trainer import TrainConfig

TARGET_FRACTION = 0.5


def train_config(work: Workdir) -> TrainConfig:
    """The training config stored in the run's ``model.pt``."""
    return from_dict(TrainConfig, torch_load(work.model)["train_config"], f"{work.model}: train_config")


def fc_layers(model: CnnCtcModel) -> list[nn.Linear]:
    """The FC linears and the output layer, input side first."""
    return list(model.fc) + [model.output]


def fc_inputs(model: CnnCtcModel, batches: list) -> list[Tensor]:
    """Per batch the (frames, in) input of the first FC layer."""
    captured: list[Tensor] = []
    handle = model.fc[0].register_forward_pre_hook(lambda m, args: captured.append(args[0].detach().clone()))
    try:
        with torch.no_grad():
            for b in batches:
                model(b.feats, b.feat_lens)
    finally:
        handle.remove()
    return captured


def fc_stack(model: CnnCtcModel, x: Tensor) -> Tensor:
    """The FC stack as the model's forward runs it, then the output layer and log-softmax."""
    for linear, norm, act in zip(model.fc, model.fc_norm, model.fc_act):
        x = model.dropout(act(norm(linear(x))))
    return model.output(x).log_softmax(dim=-1)


def fc_flops(model: CnnCtcModel, frames: int) -> float:
    """Training FLOPs of the FC stack + output layer on ``frames`` frames (forward + backward)."""
    return 6.0 * frames * sum(layer.in_features * layer.out_features for layer in fc_layers(model))


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Training section."""
    section = Section("train", "Training (stage 3)")
    start = time.perf_counter()
    cfg = train_config(work)
    torch.set_num_threads(cfg.num_threads)
    sp = load_bpe(work.lang)
    cmvn = load_cmvn(layout.cmvn_path(work.fbank))
    torch.manual_seed(cfg.seed)
    model = build_model(replace(cfg.model, vocab_size=sp.get_piece_size()))
    params = list(model.parameters())
    opt_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    cuts = load_cuts(layout.cuts_path(work.fbank, "train"))
    sampler = make_sampler(cuts, cfg.max_duration, shuffle=True, seed=cfg.seed, num_buckets=cfg.num_buckets)
    sampler.set_epoch(0)
    dataset = CtcDataset(sp, cmvn, TrainingAugment(cfg.spec_augment))
    count = 4 if quick else 12
    cut_batches = []
    for cut_batch in sampler:
        cut_batches.append(cut_batch)
        if len(cut_batches) == count:
            break
    batches = [dataset[c] for c in cut_batches]
    input_frames = int(sum(int(b.feat_lens.sum()) for b in batches))

    model.train()
    inputs = fc_inputs(model, batches)
    fc_frames = sum(x.shape[0] for x in inputs)
    grads = [torch.randn(x.shape[0], model.output.out_features) for x in inputs]
    shapes = [(layer.in_features, layer.out_features) for layer in fc_layers(model)]
    mats = [[(torch.randn(x.shape[0], i), torch.randn(o, i), torch.randn(x.shape[0], o)) for i, o in shapes]
            for x in inputs]

    def step_round() -> None:
        for b in batches:
            train_step(model, b, params, optimizer, None, cfg.grad_clip)

    def fc_round() -> None:
        for x, g in zip(inputs, grads):
            x = x.requires_grad_(True)
            fc_stack(model, x).backward(g)
            x.grad = None
        model.zero_grad(set_to_none=True)

    def matmul_round() -> None:
        for per_layer in mats:
            for x, w, g in per_layer:
                torch.mm(x, w.t())
                torch.mm(g, w)
                torch.mm(g.t(), x)

    timings = interleaved({
        "train step (batches in memory)": step_round,
        "batch loading (CtcDataset)": lambda: [dataset[c] for c in cut_batches],
        "FC stack alone, fwd+bwd": fc_round,
        "dense matmul, same shapes": matmul_round,
    }, repeats=3 if quick else 5)
    t_step = timings["train step (batches in memory)"].median_wall
    t_load = timings["batch loading (CtcDataset)"].median_wall
    t_fc = timings["FC stack alone, fwd+bwd"].median_wall
    t_mm = timings["dense matmul, same shapes"].median_wall
    flops = fc_flops(model, fc_frames)
    fraction = (flops / t_fc) / (flops / t_mm)
    cpu = timings["train step (batches in memory)"].median_cpu + timings["batch loading (CtcDataset)"].median_cpu
    section.metrics = [
        Metric("stage 3 input frames per second (step + batch loading)", input_frames / (t_step + t_load),
               "frames/s", None, "train.frames_per_s"),
        Metric("stage 3 input frames per CPU-second (all threads)", input_frames / cpu, "frames/s", None,
               "train.frames_per_cpu_s"),
        Metric("FC stack achieved FLOP/s / dense matmul FLOP/s", fraction, "", f">= {TARGET_FRACTION:g}",
               "train.fc_flops_fraction"),
        Metric("FC FLOPs / whole-step time, as a fraction of dense matmul FLOP/s", (flops / t_step) / (flops / t_mm),
               "", None, "train.step_flops_fraction"),
        Metric("FC stack share of the step time", t_fc / t_step, "", None, "train.fc_share"),
    ]
    section.table_header = ["what", "median wall s", "spread", "FC GFLOP/s"]
    section.table = [[name, fmt(t.median_wall), f"{t.spread:.0%}",
                      fmt(flops / t.median_wall / 1e9) if name != "batch loading (CtcDataset)" else "-"]
                     for name, t in timings.items()]
    widths = " -> ".join(str(s[0]) for s in shapes) + f" -> {shapes[-1][1]}"
    section.notes = [
        f"{len(batches)} batches of `train` (max_duration {cfg.max_duration:g} s), {input_frames} input frames, "
        f"{fc_frames} FC frames after {cfg.model.subsampling}x subsampling; FC widths {widths}; "
        f"{cfg.num_threads} torch threads (the training config's); {len(timings[next(iter(timings))].wall)} "
        "interleaved repeats, medians.",
        "Wall-clock rates on a busy machine mostly measure the load: the CPU-second rate and the "
        "ratios are the numbers to compare between runs.",
        "The FC GFLOP/s column divides the FC stack's training FLOPs by each row's time, so the "
        "`train step` row is the FC work's share of a whole step, not the step's own FLOP rate.",
    ]
    logged = logged_frames_per_s(work.model.parent / "log" / "train.log")
    if logged is not None:
        section.metrics.append(Metric("stage 3 as it ran in the work dir (its train.log)", logged, "frames/s", None,
                                      "train.logged_frames_per_s"))
    section.seconds = time.perf_counter() - start
    return section


def logged_frames_per_s(train_log: Path) -> float | None:
    """The overall frames/s the trainer logged at its end (``wrote ... N frames/s``), if any."""
    if not train_log.is_file():
        return None
    found = re.findall(r"wrote .*?, (\d+) frames/s", train_log.read_text(errors="replace"))
    return float(found[-1]) if found else None
