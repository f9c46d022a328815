"""What every benchmark shares: interleaved timing, the machine snapshot, child processes whose
peak memory is measured, and the result records that ``bench.report`` renders.

Every number a benchmark reports is a ratio against a reference measured in the same run, with
the reference and the subject run alternately (order reversed on every repeat) after an untimed
warm-up, and the median of the repeats taken: on a shared machine both then see the same load.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Timing:
    """Wall-clock and process CPU seconds, and the process's minor page faults, of each timed
    repeat of one callable."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    faults: list[int] = field(default_factory=list)

    @property
    def median_wall(self) -> float:
        return statistics.median(self.wall)

    @property
    def median_cpu(self) -> float:
        return statistics.median(self.cpu)

    @property
    def spread(self) -> float:
        """(max - min) / median of the wall times: how noisy the repeats were."""
        return (max(self.wall) - min(self.wall)) / max(self.median_wall, 1e-12)


def interleaved(runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Time each callable ``repeats`` times, alternating between them (forward order on even
    repeats, reversed on odd ones) after ``warmup`` untimed rounds. Returns name -> ``Timing``.

    CPU time is ``time.process_time()`` (all threads of this process), so for a single-threaded
    callable ``cpu`` is its compute on one core, however busy the machine is.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(runs)
    out = {name: Timing() for name in names}
    for round_ in range(warmup + repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            wall, cpu = time.perf_counter(), time.process_time()
            runs[name]()
            if round_ >= warmup:
                out[name].wall.append(time.perf_counter() - wall)
                out[name].cpu.append(time.process_time() - cpu)
                out[name].faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults)
    return out


def machine(torch_threads: int | None = None) -> dict[str, Any]:
    """A snapshot of the machine: cores, CPU model, load averages, niceness, versions."""
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "load_average": list(os.getloadavg()),
        "nice": os.nice(0),
        "torch_threads": torch_threads if torch_threads is not None else torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return list(os.getloadavg())


@dataclass
class ChildRun:
    """A finished child process: exit code, wall seconds, peak resident memory (MiB) of it and
    its descendants, whatever JSON it printed last on stdout (or None), and its CPU seconds."""

    returncode: int
    seconds: float
    peak_rss_mb: float
    output: dict[str, Any] | None
    cpu_seconds: float = 0.0  # user + system time of the child and the descendants it waited for


def run_child(cmd: list[str], log_path: Path, cwd: Path = REPO, env: dict[str, str] | None = None) -> ChildRun:
    """Run ``cmd``, stdout+stderr to ``log_path``, under ``bench.childstat``, which measures its
    peak RSS and CPU time (``wait4``: the maximum RSS, and the summed CPU time, over the command
    and every descendant it waited for) without this process's own peak leaking into them."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ, **(env or {}))
    full_env["PATH"] = f"{Path(sys.executable).parent}:{full_env.get('PATH', '')}"
    full_env["PYTHONPATH"] = f"{REPO}:{full_env.get('PYTHONPATH', '')}"
    stats_path = log_path.with_suffix(".stats.json")
    stats_path.unlink(missing_ok=True)
    with open(log_path, "w") as log:
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "bench.childstat", str(stats_path), *cmd], cwd=cwd,
                               env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seconds = time.perf_counter() - start
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else {"peak_rss_mb": 0.0, "cpu_seconds": 0.0}
    output = None
    for line in reversed(log_path.read_text(errors="replace").splitlines()):
        if line.startswith("{") and line.endswith("}"):
            output = json.loads(line)
            break
    return ChildRun(code, seconds, stats["peak_rss_mb"], output, stats["cpu_seconds"])


def check_child(run: ChildRun, cmd: list[str], log_path: Path) -> ChildRun:
    """``run`` if it exited 0, else a RuntimeError naming the command and its log."""
    if run.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-5:])
        raise RuntimeError(f"{' '.join(cmd)} exited {run.returncode}; log {log_path}:\n{tail}")
    return run


@dataclass
class Metric:
    """One reported number; ``target`` is e.g. ``">= 300"`` (None: informative only)."""

    name: str
    value: float
    unit: str = ""
    target: str | None = None
    key: str = ""  # stable id for the history table, e.g. "features.rt_per_core"

    @property
    def met(self) -> bool | None:
        """Whether ``value`` satisfies ``target`` (None without a target)."""
        if self.target is None:
            return None
        op, bound = self.target.split()
        return {">=": self.value >= float(bound), "<=": self.value <= float(bound)}[op]


@dataclass
class Section:
    """One benchmark's outcome: headline metrics, a detail table, notes on method."""

    name: str
    title: str
    metrics: list[Metric] = field(default_factory=list)
    table_header: list[str] = field(default_factory=list)
    table: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    load_start: list[float] = field(default_factory=load_average)
    load_end: list[float] = field(default_factory=list)
    seconds: float = 0.0
    threads: int | None = None  # torch threads the measurement used (None: child processes)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "seconds": self.seconds, "threads": self.threads,
                "load_start": self.load_start, "load_end": self.load_end,
                "metrics": [{"key": m.key, "name": m.name, "value": m.value, "unit": m.unit,
                             "target": m.target, "met": m.met} for m in self.metrics],
                "table_header": self.table_header, "table": self.table, "notes": self.notes}


def fmt(x: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, no exponent for everyday magnitudes."""
    if x == 0 or not (1e-4 <= abs(x) < 1e7):
        return f"{x:.{digits}g}"
    return f"{x:.{max(digits - 1 - math.floor(math.log10(abs(x))), 0)}f}"
