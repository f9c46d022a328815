"""Shared pytest configuration: marks, the repository root on sys.path, and the one tiny recipe
run that the end-to-end and kill-and-resume tests share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "e2e: runs the recipe end to end")


@pytest.fixture(scope="session")
def tiny_recipe(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """``./run.sh --corpus-size tiny`` (stages 0-8) in a fresh work dir, once per session:
    (work dir, the finished process; its ``args`` are the command line)."""
    workdir = tmp_path_factory.mktemp("tiny_recipe")
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    command = ["./run.sh", "--corpus-size", "tiny", "--workdir", str(workdir), "--quiet", "true"]
    return workdir, subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)
