"""The `slurm_cluster` fixture stops what it started, and only that: a pytest session of its own,
run in a subprocess, uses the fixture; afterwards the daemons it started are gone, and a cluster
that was already running before it is still running, the same processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slurm_fixture import CLUSTER_SCRIPT, node_state, usable

ROOT = Path(__file__).resolve().parents[1]
PID_RECORD = Path("/run/slurm-ci/cluster.pids")

INNER_TEST = '''
import json, os
from pathlib import Path
from slurm_fixture import slurm_cluster  # noqa: F401

def test_uses_the_cluster(slurm_cluster):
    record = Path("/run/slurm-ci/cluster.pids")
    pids = [line.split() for line in record.read_text().splitlines()] if record.is_file() else []
    Path(os.environ["INNER_REPORT"]).write_text(json.dumps(
        {"started": slurm_cluster.start_seconds > 0, "state": slurm_cluster.node_state, "pids": pids}))
'''


def alive(name: str, pid: str) -> bool:
    """Whether process ``pid`` is still the program ``name``."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def run_inner_session(tmp_path: Path) -> dict:
    (tmp_path / "test_inner.py").write_text(INNER_TEST)
    report = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), str(ROOT)]),
           "INNER_REPORT": str(report)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                        str(tmp_path / "test_inner.py")], capture_output=True, text=True, cwd=tmp_path, env=env,
                       timeout=900)
    if "SLURM TESTS NOT RUN" in r.stdout + r.stderr:
        pytest.skip("no Slurm cluster can start here")
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(report.read_text())


@pytest.mark.slow
def test_the_fixture_stops_what_it_started_and_leaves_a_running_cluster_alone(tmp_path: Path) -> None:
    before = node_state()
    record_before = PID_RECORD.read_text() if PID_RECORD.is_file() else ""
    inner = run_inner_session(tmp_path)
    if usable(before):  # reused: left as it was, the same daemons
        assert not inner["started"]
        assert usable(node_state())
        assert (PID_RECORD.read_text() if PID_RECORD.is_file() else "") == record_before
        assert all(alive(name, pid) for name, pid in inner["pids"])
        return
    # started by the inner session: all of its daemons are gone, no cluster answers
    assert inner["started"] and usable(inner["state"])
    names = sorted(name for name, _ in inner["pids"])
    assert {"slurmctld", "slurmd"} <= set(names), inner
    assert not [(name, pid) for name, pid in inner["pids"] if alive(name, pid)]
    assert node_state() == ""
    status = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 3, status.stderr
