"""Saliency: stage 5's statistics pass (``neurosel.saliency.stats`` hooks) against a plain
inference pass over the same data, and its peak memory when the data doubles.

Time: on the same batches of reference-set audio (``dev`` then each ``ood_adapt_<c>``), already
in memory, interleaved: ``collect_stats`` as stage 5 calls it, and the model's forward alone in
inference mode. One torch thread, as a stage 5 job has. A second pair of rows includes reading
the features (``reference_stats`` against ``log_posteriors``), as the stage runs them.

Memory: ``python -m bench.saliency child`` runs ``reference_stats`` over 1x, 2x and 4x the
audio in its own process (``bench.common.run_child`` measures its peak RSS), and again at 1x and
4x with glibc told to hand freed memory back at once, to tell the allocator's retention from the
pass's own.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from lhotse import CutSet

from bench.common import REPO, ChildRun, Metric, Section, check_child, fmt, interleaved, run_child
from bench.inputs import Workdir, find_workdir, load_cuts, take_seconds, total_seconds
from neurosel.inference import feature_batches, log_posteriors
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.recipe.saliency_stage import SaliencyStageConfig, reference_sets, reference_stats
from neurosel.saliency.stats import collect_stats
from neurosel.data.batches import load_cmvn

TARGET_RATIO = 1.2
TARGET_MEMORY = 1.1


def reference_audio(work: Workdir, seconds: float) -> CutSet:
    """``seconds`` of audio from the reference sets, the same share from each."""
    refs = reference_sets(work.fbank)
    parts = [take_seconds(load_cuts(layout.cuts_path(work.fbank, r)), seconds / len(refs)) for r in refs]
    return CutSet.from_cuts([c for p in parts for c in p])


def child(argv: list[str]) -> None:
    """Entry of the memory child: stats pass over ``--seconds`` of reference audio; prints JSON."""
    parser = argparse.ArgumentParser(prog="bench.saliency child")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = find_workdir(args.workdir)
    model, _ = load_model(work.model)
    cuts = reference_audio(work, args.seconds)
    start = time.perf_counter()
    stats = reference_stats(model, cuts, load_cmvn(layout.cmvn_path(work.fbank)), SaliencyStageConfig())
    print(json.dumps({"seconds": time.perf_counter() - start, "frames": stats.layers[0].count,
                      "activation_mb": stats.layers[0].count * sum(stats.widths) * 8 / 2**20,
                      "audio_seconds": total_seconds(cuts)}))


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Saliency section."""
    section = Section("saliency", "Saliency (stage 5 statistics pass)")
    start = time.perf_counter()
    torch.set_num_threads(1)
    cfg = SaliencyStageConfig()
    model, model_cfg = load_model(work.model)
    spec = model.fc_spec()
    stats_cfg = cfg.stats_config(model_cfg.fc_activation)
    cmvn = load_cmvn(layout.cmvn_path(work.fbank))
    cuts = reference_audio(work, 40.0 if quick else 300.0)
    seconds = total_seconds(cuts)
    batches = list(feature_batches(cuts, cmvn, cfg.max_duration))

    def forward(m: torch.nn.Module, b: object) -> object:
        return m(b.feats, b.feat_lens)

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b.feats, b.feat_lens)

    timings = interleaved({
        "plain inference pass (batches in memory)": plain,
        "statistics pass (batches in memory)": lambda: collect_stats(model, spec, ((b, None) for b in batches),
                                                                     stats_cfg, forward),
        "plain inference pass, reading features": lambda: [None for _ in log_posteriors(model, cuts, cmvn,
                                                                                          cfg.max_duration)],
        "statistics pass, reading features (reference_stats)": lambda: reference_stats(model, cuts, cmvn, cfg),
    }, repeats=3 if quick else 7)
    t = {name: x.median_cpu for name, x in timings.items()}
    ratio = t["statistics pass (batches in memory)"] / t["plain inference pass (batches in memory)"]
    ratio_io = (t["statistics pass, reading features (reference_stats)"]
                / t["plain inference pass, reading features"])

    base = 60.0 if quick else 300.0
    sizes = [1, 2] if quick else [1, 2, 4]
    trim = {"MALLOC_TRIM_THRESHOLD_": "0"}  # glibc hands freed heap memory back at once

    def measure(k: int, env: dict[str, str]) -> ChildRun:
        cmd = [sys.executable, "-m", "bench.saliency", "child", "--workdir", str(work.root), "--seconds",
               str(base * k)]
        log = scratch / "saliency" / f"child_{k}x{'_trim' if env else ''}.log"
        return check_child(run_child(cmd, log, work.storage_root(), env), cmd, log)

    memory = [(k, measure(k, {})) for k in sizes]
    trimmed = [(k, measure(k, trim)) for k in (sizes[0], sizes[-1])]
    peak_ratio = memory[1][1].peak_rss_mb / memory[0][1].peak_rss_mb
    (_, first), (_, last) = memory[0], memory[-1]
    growth = (last.peak_rss_mb - first.peak_rss_mb) / (last.output["activation_mb"] - first.output["activation_mb"])
    trimmed_ratio = trimmed[1][1].peak_rss_mb / trimmed[0][1].peak_rss_mb

    section.metrics = [
        Metric("statistics pass / plain inference pass (CPU time, batches in memory)", ratio, "",
               f"<= {TARGET_RATIO:g}", "saliency.time_ratio"),
        Metric("the same, both reading their features", ratio_io, "", None, "saliency.time_ratio_with_io"),
        Metric("peak RSS at 2x data / at 1x data", peak_ratio, "", f"<= {TARGET_MEMORY:g}",
               "saliency.peak_rss_ratio"),
        Metric(f"peak RSS growth from 1x to {sizes[-1]}x / float64 size of the added FC activations",
               growth, "", None, "saliency.peak_rss_growth_per_activation_mb"),
        Metric(f"peak RSS at {sizes[-1]}x / at 1x with glibc returning freed memory (MALLOC_TRIM_THRESHOLD_=0)",
               trimmed_ratio, "", None, "saliency.peak_rss_ratio_trimmed"),
    ]
    section.table_header = ["what", "median CPU s", "median wall s", "spread"]
    section.table = [[name, fmt(x.median_cpu), fmt(x.median_wall), f"{x.spread:.0%}"] for name, x in timings.items()]
    section.table += [[f"child process, {k}x = {run.output['audio_seconds']:.0f} s of audio "
                       f"({run.output['activation_mb']:.0f} MiB of FC activations): peak RSS {run.peak_rss_mb:.0f} MiB",
                       fmt(run.output["seconds"]), fmt(run.seconds), "-"] for k, run in memory]
    section.table += [[f"the same with MALLOC_TRIM_THRESHOLD_=0, {k}x: peak RSS {run.peak_rss_mb:.0f} MiB",
                       fmt(run.output["seconds"]), fmt(run.seconds), "-"] for k, run in trimmed]
    section.notes = [
        f"{len(cuts)} utterances, {seconds:.1f} s of audio from {', '.join(reference_sets(work.fbank))} "
        f"in {len(batches)} batches (max_duration {cfg.max_duration:g} s); one torch thread; "
        f"{len(timings[next(iter(timings))].wall)} interleaved repeats, medians of CPU time.",
        "Flat memory target: peak RSS grows by at most 10% when the data doubles. The growth per "
        "MiB of FC activations the extra data produces would be about 1 if the pass kept them and "
        "is about 0 when memory is flat. With `MALLOC_TRIM_THRESHOLD_=0` glibc gives freed heap "
        "memory back at once: growth that goes away then is the allocator keeping freed memory, "
        "not data the pass holds. Children's timings (last rows) are single runs.",
    ]
    section.seconds = time.perf_counter() - start
    return section


if __name__ == "__main__":
    if sys.argv[1:2] != ["child"]:
        sys.exit("usage: python -m bench.saliency child --workdir DIR --seconds S")
    child(sys.argv[2:])
