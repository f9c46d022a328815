"""End to end: wall time of ``./run.sh`` with a per-stage breakdown, read from a finished run.

Two sources, the first that exists wins:

- the console output of ``run.sh`` (``--e2e-log FILE``, or the log a fresh run writes): its
  ``<date> <time> run.sh: stage N: ...`` lines start stages and ``run.sh: done`` ends the run, so
  stage N lasts until the next such line; set-up (``utils/setup_env.sh``) runs before the first
  line and is not counted;
- the step logs under the work dir (``**/log/*.log``, written by the job launchers with
  ``# Started at <date>`` and ``# Ended (code N) at <date>, elapsed time S seconds``): a stage's
  time is the span from its first job's start to its last job's end. Stage 0's corpus synthesis
  and the stage scripts' own up-to-date checks write no step log, so this source undercounts.

A fresh run (``--e2e-fresh``) runs ``./run.sh`` into a scratch work dir and reads its console log.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.common import REPO, Metric, Section, fmt

TARGET_MINUTES = 20.0
STAGE_NAMES = {0: "prepare", 1: "features", 2: "lang", 3: "train", 4: "decode", 5: "saliency", 6: "prune",
               7: "adapt", 8: "report"}
CONSOLE_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) run\.sh: (.*)$")
STARTED_RE = re.compile(r"^# Started at (.+)$")
ENDED_RE = re.compile(r"^# Ended \(code (-?\d+)\) at (.+), elapsed time (\d+) seconds$")


@dataclass
class StageTime:
    """Wall seconds of one stage (None if the run stopped in it); ``problem`` says what went wrong."""

    stage: int
    seconds: float | None
    problem: str = ""


@dataclass
class RunTimes:
    """Per-stage wall times of one run, where they came from, and the run's total."""

    source: str
    stages: list[StageTime]
    total: float
    complete: bool  # every stage 0..8 ran and finished


def console_runs(text: str) -> list[RunTimes]:
    """Stage times of every run in a ``run.sh`` console log that started a stage, in order."""
    runs: list[list[tuple[datetime, str]]] = []
    for line in text.splitlines():
        m = CONSOLE_RE.match(line.strip())
        if not m:
            continue
        when, msg = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"), m.group(2)
        if msg.startswith("recipe "):
            runs.append([])
        if runs:
            runs[-1].append((when, msg))
    out = []
    for events in runs:
        starts = [(t, int(re.match(r"stage (\d+):", msg).group(1))) for t, msg in events
                  if re.match(r"stage \d+:", msg)]
        if not starts:
            continue
        done = [t for t, msg in events if msg.startswith("done")]
        end = done[-1] if done else events[-1][0]
        bounds = [t for t, _ in starts] + [end]
        stages = [StageTime(n, (bounds[i + 1] - t).total_seconds()) for i, (t, n) in enumerate(starts)]
        if not done:  # the last stage started and never finished
            stages[-1] = StageTime(stages[-1].stage, None, "did not finish")
        full = starts[0][1] == 0 and starts[-1][1] >= 8
        out.append(RunTimes("console log", stages, (end - events[0][0]).total_seconds(), bool(done) and full))
    return out


def parse_console(text: str) -> RunTimes | None:
    """Stage times of the last run in a ``run.sh`` console log that started a stage (None if none)."""
    runs = console_runs(text)
    return runs[-1] if runs else None


def combine(runs: list[RunTimes]) -> RunTimes | None:
    """One recipe's stage times from runs of parts of it (e.g. ``--stop-stage 2``, then
    ``--stage 3``), oldest first: each stage's time is that of the latest run that finished it
    (or, if none did, its latest unfinished attempt); the total is their sum."""
    if not runs:
        return None
    if len(runs) == 1:
        return runs[0]
    latest: dict[int, StageTime] = {}
    for run in runs:
        for st in run.stages:
            if st.seconds is not None or st.stage not in latest or latest[st.stage].seconds is None:
                latest[st.stage] = st
    stages = [latest[n] for n in sorted(latest)]
    complete = all(n in latest for n in range(9)) and all(st.seconds is not None for st in stages)
    return RunTimes(f"console logs ({len(runs)} runs)", stages, sum(st.seconds or 0.0 for st in stages), complete)


def stage_of(log: Path, workdir: Path, command: str = "") -> int | None:
    """The stage whose step wrote ``log`` (a path under ``workdir``), from where it lies and, for
    the baseline's decode dir, from its ``command`` (the log's first line): stage 7 decodes the
    ``ood_adapt_*`` sets there for pseudo-labels, under the same log names as stage 4."""
    parts = log.relative_to(workdir).parts
    if parts[:1] == ("data",) and len(parts) > 1:
        return {"manifests": 0, "fbank": 1, "lang": 2}.get(parts[1])
    if parts[:1] != ("exp",) or len(parts) < 2:
        return None
    if parts[1] == "decode" and len(parts) > 2:
        system = parts[2]
        if system == "baseline":
            sets = re.search(r"--sets (\S+)", command)
            pseudo = sets is not None and all(x.startswith("ood_adapt_") for x in sets.group(1).split(","))
            return 7 if pseudo else 4
        return 7 if system.startswith("adapt") else 6
    return {"baseline": 3, "saliency": 5, "prune": 6, "adapt": 7, "log": 8}.get(parts[1])


def _log_date(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%a %b %d %H:%M:%S %Z %Y")


Span = tuple[datetime, datetime, bool]  # start, end, exit code 0


def latest_cluster(spans: list[Span], gap: float = 60.0) -> list[Span]:
    """The spans of the stage's most recent run: walking back from the latest end, spans that end
    at most ``gap`` seconds before the cluster's start join it (older logs a rerun left are dropped)."""
    ordered = sorted(spans, key=lambda s: s[1], reverse=True)
    cluster = [ordered[0]]
    first = ordered[0][0]
    for span in ordered[1:]:
        if (first - span[1]).total_seconds() > gap:
            break
        cluster.append(span)
        first = min(first, span[0])
    return cluster


def parse_step_logs(workdir: Path) -> RunTimes | None:
    """Stage times from the launchers' step logs under ``workdir`` (None if there are none)."""
    spans: dict[int, list[Span]] = {}
    for log in sorted(workdir.glob("**/log/*.log")):
        lines = log.read_text(errors="replace").splitlines()
        stage = stage_of(log, workdir, lines[0] if lines else "")
        if stage is None:
            continue
        started = ended = None
        code = 0
        for line in lines:
            if m := STARTED_RE.match(line):
                started = _log_date(m.group(1))
            elif m := ENDED_RE.match(line):
                code, ended = int(m.group(1)), _log_date(m.group(2))
        if started and ended:
            spans.setdefault(stage, []).append((started, ended, code == 0))
    if not spans:
        return None
    stages = []
    for stage, all_spans in sorted(spans.items()):
        v = latest_cluster(all_spans)
        stages.append(StageTime(stage, (max(e for _, e, _ in v) - min(b for b, _, _ in v)).total_seconds(),
                                "" if all(ok for _, _, ok in v) else "a job failed"))
    # stage 8 (the report) runs without the launcher, so it has no step log
    complete = all(n in spans for n in range(8)) and not any(s.problem for s in stages)
    return RunTimes("step logs", stages, sum(s.seconds or 0.0 for s in stages), complete)


def run_fresh(workdir: Path, corpus_size: str, log_path: Path) -> None:
    """``./run.sh`` into ``workdir`` with its console output in ``log_path`` (raises on failure)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["./run.sh", "--workdir", str(workdir), "--corpus-size", corpus_size, "--quiet", "true"]
    with open(log_path, "w") as log:
        code = subprocess.call(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {code}; see {log_path}")


def run(workdir: Path, console_logs: list[Path], fresh: str | None, scratch: Path) -> Section:
    """The End-to-end section, from ``console_logs`` (one whole run, or runs of its parts in
    order) or ``workdir``'s step logs, or from a fresh run of corpus size ``fresh`` (``default``
    or ``tiny``) in ``scratch``."""
    section = Section("e2e", "End to end (`./run.sh`)")
    start = time.perf_counter()
    if fresh:
        workdir = scratch / f"e2e_{fresh}"
        console_logs = [scratch / f"e2e_{fresh}.log"]
        run_fresh(workdir, fresh, console_logs[0])
    missing = [p for p in console_logs if not p.is_file()]
    if missing:
        raise ValueError(f"{missing[0]}: no such console log")
    times = combine([r for p in console_logs for r in console_runs(p.read_text(errors="replace"))])
    where = ", ".join(map(str, console_logs))
    if times is None:
        times = parse_step_logs(workdir)
        where = str(workdir)
    if times is None:
        section.notes = [f"no run to read: {workdir} has no step logs and no console log with stages was given "
                         "(`--e2e-log FILE` or `--e2e-fresh default`)"]
        section.seconds = time.perf_counter() - start
        return section
    bound = " (a lower bound, from step logs)" if times.source == "step logs" else ""
    section.metrics = [Metric(f"wall time of ./run.sh after set-up{bound}", times.total / 60, "min",
                              f"<= {TARGET_MINUTES:g}" if times.complete else None, "e2e.minutes")]
    section.table_header = ["stage", "name", "wall s", "share"]
    section.table = [[str(s.stage), STAGE_NAMES.get(s.stage, "?") + (f" ({s.problem})" if s.problem else ""),
                      "-" if s.seconds is None else fmt(s.seconds),
                      "-" if s.seconds is None else f"{s.seconds / max(times.total, 1e-9):.0%}"]
                     for s in times.stages]
    section.notes = [f"From the {times.source} of {where}."]
    if not times.complete:
        section.notes.append("Not one whole finished run of stages 0-8: the total is not the recipe's and "
                             "the 20-minute target is not applied.")
    if times.source == "step logs":
        section.notes.append("Step logs miss stage 0's corpus synthesis, stage 8 (no launcher) and the "
                             "up-to-date checks between jobs; stage 7's pseudo-label decodes rewrite stage 4's "
                             "decode logs (only its LM-weight tuning remains); a stage a rerun skipped keeps "
                             "its earlier log. So the total is a lower bound; the console log of one whole "
                             "run (`--e2e-log`) is exact.")
    section.seconds = time.perf_counter() - start
    return section
