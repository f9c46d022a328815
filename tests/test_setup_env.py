"""utils/setup_env.sh: silent and quick when nothing is missing; a few console lines, apt's and
pip's output in build/setup_env.log, and that log's tail on the console when a step fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_missing_is_quick_and_silent() -> None:
    t0 = time.monotonic()
    r = subprocess.run([str(ROOT / "utils" / "setup_env.sh")], capture_output=True, text=True, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == ""
    assert time.monotonic() - t0 < 10


def test_a_failing_install_shows_a_few_lines_and_the_logs_tail(tmp_path: Path) -> None:
    """A copy of the script in a folder whose requirements.txt pins a package no index has (pip
    looks at no index: nothing is downloaded): the console has the step, where the full log is,
    the failure with the log's last lines including pip's error, and what to do."""
    (tmp_path / "utils").mkdir()
    shutil.copy(ROOT / "utils" / "setup_env.sh", tmp_path / "utils" / "setup_env.sh")
    (tmp_path / "requirements.txt").write_text("neurosel-no-such-package==0.0.1\n")
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup(name='x', version='0')\n")
    env = {**os.environ, "PIP_NO_INDEX": "1"}
    r = subprocess.run([str(tmp_path / "utils" / "setup_env.sh"), "--no-apt"], capture_output=True, text=True,
                       cwd="/", env=env, timeout=300)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    own = [line for line in lines if line.startswith("setup_env: ")]
    tail = [line for line in lines if line.startswith("  | ")]
    assert len(own) == 3 and len(own) + len(tail) == len(lines), r.stderr
    assert own[0] == ("setup_env: installing the pinned Python packages of requirements.txt into .venv; "
                      "full log: build/setup_env.log")
    assert "failed (exit code 1) after" in own[1] and "last lines of build/setup_env.log" in own[1]
    assert 0 < len(tail) <= 25 and any("No matching distribution found for neurosel-no-such-package" in line
                                       for line in tail), r.stderr
    log = (tmp_path / "build" / "setup_env.log").read_text()
    assert log.startswith("# utils/setup_env.sh --no-apt, ") and "No matching distribution" in log
    assert not (tmp_path / ".venv" / ".requirements.sha256").exists()  # not taken as done
    assert subprocess.run(["git", "check-ignore", "-q", "build/setup_env.log"], cwd=ROOT).returncode == 0
