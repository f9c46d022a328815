"""Session fixture `slurm_cluster`: a Slurm cluster that answers `sinfo`, for tests of utils/slurm.pl;
and parse_log, which reads the log files of the job launchers (utils/run.pl, slurm.pl, queue.pl).

If no cluster answers (or its node cannot run jobs), it starts the single-node one of tools/slurm/cluster.sh (root, Debian).
When that is impossible the tests are skipped with a loud message, except under CI=true, where
a cluster that cannot start is a test failure. The cluster is left running after the session
(it is idle and reused by the next one); `tools/slurm/cluster.sh stop` stops it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "tools" / "slurm" / "cluster.sh"


@dataclass(frozen=True)
class SlurmCluster:
    """A cluster answering sinfo: node_state as sinfo prints it, start_seconds (0 if reused)."""

    node_state: str
    start_seconds: float


def node_state() -> str:
    """The first node's state from `sinfo -h -N -o %t` ('' when no cluster answers)."""
    if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
        return ""
    try:
        # `scontrol ping` fails at once without a controller; sinfo alone retries for about 9 s.
        if subprocess.run(["scontrol", "ping"], capture_output=True, timeout=10).returncode != 0:
            return ""
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], capture_output=True, text=True,
                             timeout=10)
    except subprocess.TimeoutExpired:
        return ""
    lines = out.stdout.split()
    return lines[0] if out.returncode == 0 and lines else ""


def _cannot_start(reason: str) -> None:
    message = f"SLURM TESTS NOT RUN: no Slurm cluster answers and none could be started: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    warnings.warn(message)
    pytest.skip(message)


def usable(state: str) -> bool:
    """Whether a node in this sinfo state runs jobs (idle, mixed, allocated, completing)."""
    return state in ("idle", "mix", "alloc", "comp")


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    """A Slurm cluster answering sinfo, started with tools/slurm/cluster.sh when none does."""
    state = node_state()
    if usable(state):
        return SlurmCluster(node_state=state, start_seconds=0.0)
    t0 = time.monotonic()
    try:
        proc = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True,
                              timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        _cannot_start(f"{CLUSTER_SCRIPT} start: {err}")
    elapsed = time.monotonic() - t0
    state = node_state()
    if proc.returncode != 0 or not usable(state):
        _cannot_start(f"{CLUSTER_SCRIPT} start exited {proc.returncode} (node state "
                      f"'{state}'): {proc.stderr.strip()}")
    return SlurmCluster(node_state=state, start_seconds=elapsed)


LOG_PATTERN = re.compile(
    r"# (?P<command>.*)\n# Started at (?P<started>.+)\n# Running on (?P<host>.+)\n#\n"
    r"(?P<output>(?:.*\n)*?)"
    r"# Accounting: time=(?P<time>\d+) threads=(?P<threads>\d+)\n"
    r"# Ended \(code (?P<code>\d+)\) at (?P<ended>.+), elapsed time (?P<elapsed>\d+) seconds\n\Z")


def parse_log(path: Path) -> dict[str, str]:
    """The fields of a utils/{run,slurm,queue}.pl log file: command, started, host, output, time,
    threads, code, ended, elapsed. Fails the test when the file does not have that format."""
    text = path.read_text()
    match = LOG_PATTERN.match(text)
    assert match, f"{path} is not in the launcher log format:\n{text}"
    return match.groupdict()
