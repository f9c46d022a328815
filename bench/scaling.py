"""Scaling: time and peak memory of stages 1 (features), 3 (train) and 5 (saliency) at 1x,
2x and 4x a tiny corpus; time is expected to grow linearly with the data, memory to stay flat.

1x is the tiny overlay's corpus (``egs/synth/conf/tiny.yaml``: its ``train``, ``dev`` and
``ood_adapt`` sizes), taken from the run's stage 0 manifests; kx takes k times as many cuts of
each split (the first by id; a split with too few cuts is repeated under new ids). Each stage runs
through its step script, as ``run.sh`` calls it (tiny overlay, ``--nj``), in a scratch work dir;
CPU time, wall time and peak RSS are those of the step script's process tree (``wait4``).
Stage 3 trains a fixed number of epochs (``--scaling-epochs``, no time cap), so its work is
proportional to the data; stage 5 analyses the run's own model, so only the data changes. Stages
3 and 5 use batches of ``BATCH_SECONDS`` of audio: a tiny corpus then spans many batches, as a
real one does, and batches still filling up are not mistaken for memory that grows with the data.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import yaml

from bench.common import REPO, ChildRun, Metric, Section, check_child, fmt, run_child
from bench.inputs import Workdir, load_cuts, take_count, total_seconds
from neurosel.recipe import layout

CONF = REPO / "egs" / "synth" / "conf"
BATCH_SECONDS = 25.0  # stage 3 and 5 batch size here, so that 1x already fills several batches
TARGET_LINEARITY = 0.1
TARGET_MEMORY = 1.2
STAGES = {1: "features", 3: "train", 5: "saliency"}
# stage 3 again at the ends of the range with glibc's malloc instead of the jemalloc that
# steps/train.sh preloads (steps/common.sh, allocator_env): the memory and time that choice is about
GLIBC = {"NEUROSEL_ALLOCATOR": "glibc"}


def base_sizes(work: Workdir, quick: bool) -> dict[str, int]:
    """Cuts per split at 1x: the tiny overlay's sizes for train, dev and each ood_adapt split
    present in the run (halved with ``quick``)."""
    sizes = yaml.safe_load((CONF / "tiny.yaml").read_text())["corpus"]["sizes"]
    splits = {"train": sizes["train"], "dev": sizes["dev"]}
    for split in layout.adapt_sets(work.manifests):
        splits[split] = sizes["ood_adapt"]
    return {s: max(n // 2, 8) if quick else n for s, n in splits.items()}


def write_manifests(work: Workdir, sizes: dict[str, int], scale: int, out: Path) -> float:
    """Write ``out/data/manifests/cuts_<split>.jsonl.gz`` at ``scale`` x ``sizes``; returns the
    seconds of audio written."""
    manifests = out / "data" / "manifests"
    manifests.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for split, n in sizes.items():
        cuts = take_count(load_cuts(layout.cuts_path(work.manifests, split)), n * scale)
        cuts.to_file(layout.cuts_path(manifests, split))
        seconds += total_seconds(cuts)
    lang = out / "data" / "lang"
    if not lang.exists():
        os.symlink(work.lang, lang)
    return seconds


def stage_command(stage: int, work: Workdir, root: Path, nj: int, epochs: int) -> tuple[list[str], Path]:
    """The step-script command of ``stage`` in work dir ``root`` and the output dir it writes."""
    data = root / "data"
    common = ["--cmd", "utils/run.pl", "--overlay", str(CONF / "tiny.yaml")]
    if stage == 1:
        out = data / "fbank"
        return ["steps/make_fbank.sh", *common, "--nj", str(nj), "--config", str(CONF / "features.yaml"),
                str(data), str(out)], out
    if stage == 3:
        out = root / "exp" / "baseline"
        return ["steps/train.sh", *common, "--config", str(CONF / "train.yaml"), "--overrides",
                f"num_epochs={epochs} max_minutes=0 max_duration={BATCH_SECONDS}", str(data / "fbank"),
                str(data / "lang"), str(out)], out
    out = root / "exp" / "saliency"
    return ["steps/saliency.sh", *common, "--nj", str(nj), "--config", str(CONF / "saliency.yaml"), "--overrides",
            f"max_duration={BATCH_SECONDS} taylor_max_duration={BATCH_SECONDS}", str(work.model),
            str(data / "fbank"), str(data / "lang"), str(out)], out


def linear_fit(scales: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares ``seconds = fixed + per_unit * scale``; returns (fixed, per_unit)."""
    n = len(scales)
    mx, my = sum(scales) / n, sum(seconds) / n
    sxx = sum((x - mx) ** 2 for x in scales)
    per_unit = sum((x - mx) * (y - my) for x, y in zip(scales, seconds)) / sxx
    return my - per_unit * mx, per_unit


def superlinearity(scales: list[int], seconds: list[float]) -> float:
    """The cost of 1x more data at the top of the range over that at the bottom:
    ((t_last - t_mid) / (k_last - k_mid)) / ((t_mid - t_first) / (k_mid - k_first)) with the
    first, second and last scale; 1 = linear (nan with fewer than 3 scales)."""
    if len(scales) < 3:
        return float("nan")
    (k0, t0), (k1, t1), (k2, t2) = (scales[0], seconds[0]), (scales[1], seconds[1]), (scales[-1], seconds[-1])
    low = (t1 - t0) / (k1 - k0)
    return ((t2 - t1) / (k2 - k1)) / low if low > 0 else float("inf")


def run(work: Workdir, scratch: Path, quick: bool, nj: int = 1, epochs: int = 1, repeats: int = 1) -> Section:
    """Measure and return the Scaling section."""
    section = Section("scaling", "Scaling (stages 1, 3, 5 at 1x, 2x, 4x data)")
    start = time.perf_counter()
    sizes = base_sizes(work, quick)
    scales = [1, 2] if quick else [1, 2, 4]
    root = scratch / "scaling"
    audio = {k: write_manifests(work, sizes, k, root / f"x{k}") for k in scales}
    runs: dict[tuple[int, int], list[ChildRun]] = {}
    for rep in range(repeats):
        for k in scales if rep % 2 == 0 else scales[::-1]:
            for stage in STAGES:
                cmd, out = stage_command(stage, work, root / f"x{k}", nj, epochs)
                shutil.rmtree(out, ignore_errors=True)
                log = root / "logs" / f"x{k}_stage{stage}_rep{rep}.log"
                runs.setdefault((stage, k), []).append(check_child(run_child(cmd, log, REPO), cmd, log))
    probe: dict[int, ChildRun] = {}
    for k in (scales[0], scales[-1]):
        cmd, out = stage_command(3, work, root / f"x{k}", nj, epochs)
        shutil.rmtree(out, ignore_errors=True)
        log = root / "logs" / f"x{k}_stage3_glibc.log"
        probe[k] = check_child(run_child(cmd, log, REPO, GLIBC), cmd, log)
    for k in scales:  # the step logs stay in <scratch>/scaling/logs
        shutil.rmtree(root / f"x{k}", ignore_errors=True)

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2

    section.table_header = ["stage", *[f"{k}x: CPU s" for k in scales], *[f"{k}x: wall s" for k in scales],
                            *[f"{k}x: peak MiB" for k in scales], "fixed CPU s", "CPU s per 1x",
                            "superlinearity", f"{scales[-1]}x / 1x memory"]
    for stage, name in STAGES.items():
        secs = [median([r.cpu_seconds for r in runs[(stage, k)]]) for k in scales]
        walls = [median([r.seconds for r in runs[(stage, k)]]) for k in scales]
        mems = [max(r.peak_rss_mb for r in runs[(stage, k)]) for k in scales]
        fixed, per_unit = linear_fit(scales, secs)
        section.table.append([f"{stage} {name}", *map(fmt, secs), *map(fmt, walls), *(f"{m:.0f}" for m in mems),
                              fmt(fixed),
                              fmt(per_unit), fmt(superlinearity(scales, secs)), fmt(mems[-1] / mems[0])])
        if len(scales) >= 3:
            deviation = max(abs(t - (fixed + per_unit * k)) / t for k, t in zip(scales, secs))
            section.metrics.append(Metric(f"stage {stage} ({name}): largest deviation of the CPU time from a line "
                                          "(fixed + per-1x cost), relative", deviation, "", f"<= {TARGET_LINEARITY:g}",
                                          f"scaling.stage{stage}_linearity"))
        section.metrics.append(Metric(f"stage {stage} ({name}): peak RSS at {scales[-1]}x / at 1x", mems[-1] / mems[0],
                                      "", f"<= {TARGET_MEMORY:g}", f"scaling.stage{stage}_memory"))
    lo, hi = scales[0], scales[-1]
    default_cpu = {k: median([r.cpu_seconds for r in runs[(3, k)]]) for k in (lo, hi)}
    section.table.append(["3 train, glibc malloc (NEUROSEL_ALLOCATOR=glibc)",
                          *(fmt(probe[k].cpu_seconds) if k in probe else "-" for k in scales),
                          *(fmt(probe[k].seconds) if k in probe else "-" for k in scales),
                          *(f"{probe[k].peak_rss_mb:.0f}" if k in probe else "-" for k in scales),
                          "-", "-", "-", fmt(probe[hi].peak_rss_mb / probe[lo].peak_rss_mb)])
    section.metrics += [
        Metric(f"stage 3 (train) with glibc malloc: peak RSS at {hi}x / at 1x",
               probe[hi].peak_rss_mb / probe[lo].peak_rss_mb, "", None, "scaling.stage3_memory_glibc"),
        Metric(f"stage 3 (train): CPU time at {hi}x with jemalloc (the default) / with glibc malloc",
               default_cpu[hi] / probe[hi].cpu_seconds, "", None, "scaling.stage3_cpu_jemalloc_over_glibc"),
    ]
    section.notes = [
        "1x = " + ", ".join(f"{n} `{s}`" for s, n in sizes.items()) + " cuts, "
        + ", ".join(f"{k}x = {audio[k] / 60:.1f} min" for k in scales) + " of audio; "
        f"step scripts with `--nj {nj}`, stage 3 for {epochs} epoch(s), stages 3 and 5 with batches of "
        f"{BATCH_SECONDS:g} s; {repeats} run(s) per point "
        "(alternating order), median.",
        "Time is the CPU time (user + system) of the step's process tree, which the machine's other "
        "load inflates far less than wall time (beside it); stage 3's two torch threads count twice.",
        "`fixed CPU s` and `CPU s per 1x` are a least-squares line through the points: the fixed part "
        "is start-up (Python imports, model load, the Taylor pass of stage 5 on a fixed number of "
        "utterances, plots), the slope the cost of the data.",
        f"Linear: every point within {TARGET_LINEARITY:.0%} of that line. `superlinearity` is the cost of "
        "1x more data at 2x-4x over that at 1x-2x (1 = linear; noisy when the fixed part dominates). "
        f"Flat memory: peak RSS at {scales[-1]}x at most {TARGET_MEMORY:g}x that at 1x.",
        "Stage 3 runs with jemalloc, which `steps/train.sh` preloads when Debian's libjemalloc2 is "
        "installed (`allocator_env` in `steps/common.sh`, without decay). The `glibc malloc` row (one run "
        "per point) is stage 3 with `NEUROSEL_ALLOCATOR=glibc`, as it ran before: glibc serves a batch's "
        "large tensors from a heap that keeps the freed blocks the next batch's shapes do not fit, so its "
        "peak grows with the number of batches, memory the allocator keeps rather than data training holds.",
    ]
    section.seconds = time.perf_counter() - start
    return section
