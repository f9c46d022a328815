"""Session fixture `slurm_cluster`: a Slurm cluster that answers `sinfo`, for tests of utils/slurm.pl;
and parse_log, which reads the log files of the job launchers (utils/run.pl, slurm.pl, queue.pl).

If no cluster answers (or its node cannot run jobs), it starts the single-node one of
tools/slurm/cluster.sh (root, Debian: munged, slurmctld, slurmd on 127.0.0.1). When that is
impossible the tests are skipped with a loud message, except under CI=true, where a cluster that
cannot start is a test failure.

At the end of the session the fixture stops what it started, and only that (``cluster.sh stop``
stops the daemons by their recorded PIDs), so `make test` leaves nothing running. A cluster that
already answered when the session began is reused and left running. Test sessions that run at the
same time share one cluster: each holds a lease (a file named by its PID under ``LEASE_DIR``), and
the cluster a test session started is stopped by the last session to end, so that none stops it
under another's jobs. A session that was killed leaves a lease of a dead PID, which the next
session's end clears; until then that cluster runs (``tools/slurm/cluster.sh stop`` stops it).
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "tools" / "slurm" / "cluster.sh"
# Leases of the test sessions using a cluster that test sessions started (root: /run, else /tmp).
LEASE_DIR = Path("/run" if os.access("/run", os.W_OK) else tempfile.gettempdir()) / "neurosel-slurm-tests"
STARTED = LEASE_DIR / "started"  # present while a cluster that a test session started runs


@dataclass(frozen=True)
class SlurmCluster:
    """A cluster answering sinfo: node_state as sinfo prints it, start_seconds (0 if reused),
    started_by_tests (whether a test session started it, so that the last session stops it)."""

    node_state: str
    start_seconds: float
    started_by_tests: bool = False


@contextmanager
def _leases() -> Iterator[None]:
    """Hold the lock that serialises the sessions' start, lease and stop decisions."""
    LEASE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LEASE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _live_leases() -> list[Path]:
    """The leases of sessions still running; a dead session's lease is removed."""
    live = []
    for lease in LEASE_DIR.glob("session.*"):
        pid = lease.name.split(".", 1)[1]
        if pid.isdigit() and Path(f"/proc/{pid}").exists():
            live.append(lease)
        else:
            lease.unlink(missing_ok=True)
    return live


def release_cluster(lease: Path) -> None:
    """End this session's use: drop its lease; the last session out stops a cluster that test
    sessions started (cluster.sh stops only the daemons it recorded starting)."""
    with _leases():
        lease.unlink(missing_ok=True)
        if STARTED.exists() and not _live_leases():
            subprocess.run([str(CLUSTER_SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
            STARTED.unlink(missing_ok=True)


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


def acquire_cluster() -> tuple[SlurmCluster, Path]:
    """A cluster answering sinfo (started with tools/slurm/cluster.sh when none does) and this
    session's lease on it; skips (fails under CI=true) when none can start."""
    lease = LEASE_DIR / f"session.{os.getpid()}"
    with _leases():
        state = node_state()
        if usable(state):
            lease.touch()
            return SlurmCluster(node_state=state, start_seconds=0.0, started_by_tests=STARTED.exists()), lease
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
        STARTED.touch()
        lease.touch()
        return SlurmCluster(node_state=state, start_seconds=elapsed, started_by_tests=True), lease


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A Slurm cluster answering sinfo, started with tools/slurm/cluster.sh when none does, and
    stopped at the end of the session when this session (or another test session still using it)
    started it."""
    cluster, lease = acquire_cluster()
    try:
        yield cluster
    finally:
        release_cluster(lease)


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
