"""Clusters: what the job launchers and data-parallel training give on this machine.

Decoding: stage 4's step, ``steps/decode.sh`` with the run's model and tuned ``decode.yaml``, on
the run's evaluation sets (``test`` and the ``ood_*`` sets; ``test`` alone with ``--quick``), with
``--nj 1`` and ``--nj 2``, through ``utils/run.pl`` and through ``utils/slurm.pl`` on the test
cluster (``tools/slurm/cluster.sh``: used when it is up, else started and stopped again; without
it the Slurm rows are left out with a note). Timed: the wall time of the whole step as a user
sees it (the up-to-date check, the decode jobs, the merge), into a fresh scratch dir each time;
the four runs alternate (order reversed on every repeat) after an untimed warm-up of each.
Speed-up = wall(--nj 1) / wall(--nj 2) per launcher; slurm.pl's overhead = its wall minus run.pl's
at equal ``--nj``.

Training: ``steps/train.sh`` (stage 3, the default ``train.yaml``) for a fixed number of steps
from scratch in a fresh exp dir, as 1 process x 1 torch thread (the reference), 1 process x 2
threads and 2 processes x 1 thread (``--num-procs 2``: torch.distributed over the same global
batches). Timed: seconds per step from the timestamps of the training log's progress lines,
from the first to the last, so start-up (imports, data loading, process group) and the first
``log_every`` steps are left out.

``--quick`` (a smoke run): the first ``QUICK_CUTS`` cuts of ``test`` (decoded), ``train`` and ``dev``
(trained on) in a scratch features dir, one repeat without warm-up, 12 training steps.
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

from bench.common import REPO, Metric, Section, check_child, fmt, run_child
from bench.inputs import Workdir, load_cuts, take_count
from neurosel.recipe import layout

CLUSTER = REPO / "tools" / "slurm" / "cluster.sh"
TRAIN_CONFIG = REPO / "egs" / "synth" / "conf" / "train.yaml"
LAUNCHER_OPTS = "--mem 2G"  # the same options for both launchers; run.pl accepts and ignores them
PROGRESS = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO neurosel\.train: epoch \d+ step (\d+): loss")
ENDED = re.compile(r"^# Ended \(code \d+\) at .*, elapsed time ([\d.]+) seconds")
TRAIN_LAYOUTS = [(1, 1), (1, 2), (2, 1)]  # (processes, torch threads each); (1, 1) is the reference
QUICK_CUTS = {"test": 40, "dev": 40, "train": 600}  # --quick: the first cuts of each set (by id)


def eval_sets(work: Workdir, quick: bool) -> list[str]:
    """``test`` and the run's ``ood_*`` evaluation sets (not the ``ood_adapt_*`` ones)."""
    if quick:
        return ["test"]
    return [layout.TEST] + [n for n in layout.test_sets(work.fbank) if layout.is_ood_set(n)]


def quick_fbank(work: Workdir, dest: Path) -> Path:
    """A features dir with the first ``QUICK_CUTS`` cuts of the run's sets (same feature files) and
    its other files linked: what ``--quick`` decodes and trains on."""
    dest.mkdir(parents=True, exist_ok=True)
    for path in work.fbank.iterdir():
        if path.is_file() and path.name not in {layout.cuts_name(s) for s in layout.splits(work.fbank)}:
            (dest / path.name).symlink_to(path)
    for name, count in QUICK_CUTS.items():
        take_count(load_cuts(layout.cuts_path(work.fbank, name)), count).to_file(layout.cuts_path(dest, name))
    return dest


def step_root(work: Workdir, scratch: Path) -> Path:
    """Where to run step scripts: ``REPO`` when the run's feature paths are relative to it, else a
    scratch folder with this checkout's ``steps/`` and ``utils/`` and the run's work dir linked
    at the path its manifests name it by (read only: the steps write into scratch)."""
    storage_root = work.storage_root()
    if storage_root == REPO:
        return REPO
    root = scratch / "root"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    for name in ("steps", "utils", "conf"):
        if (REPO / name).exists():
            (root / name).symlink_to(REPO / name)
    rel = work.root.relative_to(storage_root)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).symlink_to(work.root)
    return root


def slurm_cluster() -> tuple[bool, bool, str]:
    """(usable, started here, why not): the test cluster, started if it is not up."""
    try:
        if subprocess.run([str(CLUSTER), "status"], capture_output=True, text=True).returncode == 0:
            return True, False, ""
        started = subprocess.run([str(CLUSTER), "start"], capture_output=True, text=True)
    except OSError as e:
        return False, False, str(e)
    if started.returncode == 0:
        return True, True, ""
    lines = (started.stderr or started.stdout).strip().splitlines()
    return False, False, lines[-1] if lines else f"exit code {started.returncode}"


def longest_job(log_dir: Path) -> float:
    """The longest decode job's elapsed seconds, from the launcher's ``# Ended`` lines."""
    seconds = [float(m.group(1)) for log in log_dir.glob("decode.*.log")
               for line in log.read_text(errors="replace").splitlines() if (m := ENDED.match(line))]
    return max(seconds) if seconds else float("nan")


def seconds_per_step(log: Path) -> tuple[float, int]:
    """(seconds per step, steps timed) between the first and the last progress line of a train log."""
    points = [(datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp(), int(m.group(2)))
              for line in log.read_text(errors="replace").splitlines() if (m := PROGRESS.match(line))]
    if len(points) < 2:
        raise RuntimeError(f"{log}: fewer than two progress lines, cannot time the steps")
    (t0, s0), (t1, s1) = points[0], points[-1]
    return (t1 - t0) / (s1 - s0), s1 - s0


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Clusters section."""
    section = Section("cluster", "Clusters (launchers and data-parallel training)")
    start = time.perf_counter()
    base = scratch / "cluster"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    root = step_root(work, base)
    repeats = 1 if quick else 2
    sets = eval_sets(work, quick)
    fbank = quick_fbank(work, base / "fbank_quick") if quick else work.fbank
    usable, started, why = slurm_cluster()
    launchers = ["run.pl"] + (["slurm.pl"] if usable else [])
    if not usable:
        section.notes.append(f"**slurm.pl rows left out**: the test cluster could not be started ({why}).")

    try:
        decode = time_decoding(work, fbank, root, base, launchers, sets, repeats, warmup=0 if quick else 1)
    finally:
        if started:
            subprocess.run([str(CLUSTER), "stop"], capture_output=True, text=True)
    steps, log_every = (12, 3) if quick else (60, 10)
    train = time_training(work, fbank, root, base, steps, log_every, repeats)

    walls = {k: statistics.median(v["wall"]) for k, v in decode.items()}
    for launcher in launchers:
        section.metrics.append(Metric(f"decode step, {launcher}: speed-up of --nj 2 over --nj 1 (wall)",
                                      walls[(launcher, 1)] / walls[(launcher, 2)], "x", None,
                                      f"cluster.decode_speedup_{launcher.replace('.', '_')}"))
    if "slurm.pl" in launchers:
        for nj in (1, 2):
            section.metrics.append(Metric(f"decode step, --nj {nj}: slurm.pl's wall time minus run.pl's",
                                          walls[("slurm.pl", nj)] - walls[("run.pl", nj)], "s", None,
                                          f"cluster.slurm_overhead_nj{nj}"))
    per_step = {k: statistics.median(v["per_step"]) for k, v in train.items()}
    section.metrics += [
        Metric("training, 2 processes x 1 thread over 1 process x 2 threads: speed-up per step",
               per_step[(1, 2)] / per_step[(2, 1)], "x", None, "cluster.train_2proc_vs_2threads"),
        Metric("training, 2 processes x 1 thread over 1 process x 1 thread: speed-up per step",
               per_step[(1, 1)] / per_step[(2, 1)], "x", None, "cluster.train_2proc_vs_1"),
        Metric("training, 1 process x 2 threads over 1 process x 1 thread: speed-up per step",
               per_step[(1, 1)] / per_step[(1, 2)], "x", None, "cluster.train_2threads_vs_1"),
    ]

    def spread(xs: list[float]) -> str:
        return f"{(max(xs) - min(xs)) / statistics.median(xs):.0%}" if len(xs) > 1 else "-"

    section.table_header = ["step", "launcher", "layout", "wall s (median)", "longest decode job s",
                            "s per training step", "speed-up", "spread of the repeats"]
    for (launcher, nj), v in decode.items():
        speedup = walls[(launcher, 1)] / walls[(launcher, nj)]
        section.table.append([f"decode ({', '.join(sets)})", launcher, f"--nj {nj}", fmt(walls[(launcher, nj)]),
                              fmt(statistics.median(v["job"])), "-", f"{speedup:.2f}x vs --nj 1", spread(v["wall"])])
    for (procs, threads), v in train.items():
        section.table.append([f"train ({steps} steps)", "run.pl", f"{procs} process{'es' if procs > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
                              fmt(statistics.median(v["wall"])), "-", fmt(per_step[(procs, threads)]),
                              f"{per_step[(1, 1)] / per_step[(procs, threads)]:.2f}x vs 1 x 1",
                              spread(v["per_step"])])
    timed = train[(1, 1)]["timed"]
    section.notes = [
        f"Decoding: `steps/decode.sh --cmd \"<launcher> {LAUNCHER_OPTS}\" --nj N --config "
        f"{work.decode_config.name}` with `{work.model.relative_to(work.root)}` of `{work.root}` on "
        f"{', '.join(f'`{s}`' for s in sets)}"
        + (f" (`--quick`: the first {QUICK_CUTS['test']} cuts, and training on the first {QUICK_CUTS['train']} of "
           "`train`)" if quick else " (whole sets)")
        + "; wall time of the whole step (up-to-date check, the N decode "
        "jobs, the merge job) into a fresh dir; `longest decode job s` is the launcher's elapsed time of the "
        "slowest decode job (its own log), so wall minus it is start-up, merge and the launcher's waiting. "
        + ("No warm-up (`--quick`), " if quick else f"Each of the {len(decode)} runs once untimed, then ")
        + f"{repeats} timed repeat(s) alternating (order reversed every repeat), median.",
        *section.notes,
        f"Training: `steps/train.sh --num-procs P` with `{TRAIN_CONFIG.relative_to(REPO)}` and "
        f"`max_steps={steps} max_minutes=0 log_every={log_every} num_threads=T`, from scratch each time in a "
        f"fresh exp dir, on the run's `train` features; every layout draws the same global batches. "
        f"`s per training step` spans the training log's progress lines from step {log_every} to step "
        f"{steps} ({timed} steps): start-up and the first {log_every} steps are excluded; `wall s` is the "
        f"whole step script including them. {repeats} run(s) per layout, alternating order, median.",
        "Nice value and load as recorded above: on a machine shared with other work the ratios understate "
        "what two idle cores give.",
    ]
    section.seconds = time.perf_counter() - start
    return section


def time_decoding(work: Workdir, fbank: Path, root: Path, base: Path, launchers: list[str], sets: list[str],
                  repeats: int, warmup: int) -> dict[tuple[str, int], dict[str, list[float]]]:
    """(launcher, nj) -> {"wall": [...], "job": [...]} over the timed repeats, after ``warmup``
    untimed rounds."""
    runs = [(launcher, nj) for launcher in launchers for nj in (1, 2)]
    out: dict[tuple[str, int], dict[str, list[float]]] = {r: {"wall": [], "job": []} for r in runs}
    for round_ in range(warmup + repeats):
        for launcher, nj in runs if round_ % 2 == 0 else runs[::-1]:
            dest = base / "decode" / f"{launcher}_nj{nj}"
            shutil.rmtree(dest, ignore_errors=True)
            cmd = ["steps/decode.sh", "--cmd", f"utils/{launcher} {LAUNCHER_OPTS}", "--nj", str(nj),
                   "--config", str(work.decode_config), "--sets", ",".join(sets), str(work.model), str(fbank),
                   str(work.lang), str(dest)]
            log = base / "logs" / f"decode_{launcher}_nj{nj}_{round_}.log"
            result = check_child(run_child(cmd, log, root), cmd, log)
            if round_ >= warmup:
                out[(launcher, nj)]["wall"].append(result.seconds)
                out[(launcher, nj)]["job"].append(longest_job(dest / "log"))
    return out


def time_training(work: Workdir, fbank: Path, root: Path, base: Path, steps: int, log_every: int,
                  repeats: int) -> dict[tuple[int, int], dict[str, list[float]]]:
    """(processes, threads) -> {"wall": [...], "per_step": [...], "timed": steps timed}."""
    out: dict[tuple[int, int], dict] = {layout: {"wall": [], "per_step": [], "timed": 0} for layout in TRAIN_LAYOUTS}
    for rep in range(repeats):
        for procs, threads in TRAIN_LAYOUTS if rep % 2 == 0 else TRAIN_LAYOUTS[::-1]:
            exp = base / "train" / f"p{procs}_t{threads}"
            shutil.rmtree(exp, ignore_errors=True)
            cmd = ["steps/train.sh", "--cmd", "utils/run.pl", "--quiet", "true", "--config", str(TRAIN_CONFIG),
                   "--num-threads", str(threads), *(["--num-procs", str(procs)] if procs > 1 else []),
                   "--overrides", f"max_steps={steps} max_minutes=0 log_every={log_every} num_threads={threads}",
                   str(fbank), str(work.lang), str(exp)]
            log = base / "logs" / f"train_p{procs}_t{threads}_{rep}.log"
            result = check_child(run_child(cmd, log, root), cmd, log)
            per_step, timed = seconds_per_step(exp / "log" / "train.log")
            out[(procs, threads)]["wall"].append(result.seconds)
            out[(procs, threads)]["per_step"].append(per_step)
            out[(procs, threads)]["timed"] = timed
            shutil.copy(exp / "log" / "train.log", log.with_suffix(".train.log"))
            shutil.rmtree(exp, ignore_errors=True)
    return out
