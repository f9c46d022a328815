"""Typed config loading and stage markers."""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from neurosel import config as C
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path, write_text
from neurosel.stage import fingerprint, run_once, status


@dataclass
class Inner:
    width: int = 4
    act: Literal["relu", "sigmoid"] = "relu"


@dataclass
class Outer:
    lr: float = 1e-3
    name: str = "x"
    dims: list[int] = field(default_factory=lambda: [1, 2])
    inner: Inner = field(default_factory=Inner)
    extra: str | None = None


def test_resolve_priority(tmp_path: Path) -> None:
    base = tmp_path / "a.yaml"
    base.write_text("lr: 0.1\ninner:\n  width: 8\n")
    overlay = tmp_path / "tiny.yaml"
    overlay.write_text("train:\n  inner:\n    act: sigmoid\n  dims: [3]\nother:\n  lr: 9\n")
    cfg = C.resolve(Outer, base, overlay, "train", ["lr=2", "inner.width=16"])
    assert cfg == Outer(lr=2.0, dims=[3], inner=Inner(width=16, act="sigmoid"))


def test_overlays_apply_in_order(tmp_path: Path) -> None:
    """Several overlays (comma-separated, as run.sh passes --corpus-size's and --study's) apply left
    to right; a missing one is an error naming it."""
    base = tmp_path / "a.yaml"
    base.write_text("lr: 0.1\nname: base\n")
    (tmp_path / "tiny.yaml").write_text("train:\n  lr: 0.2\n  name: tiny\n")
    (tmp_path / "full.yaml").write_text("train:\n  name: full\n  dims: [5]\n")
    both = f"{tmp_path / 'tiny.yaml'},{tmp_path / 'full.yaml'}"
    assert C.resolve(Outer, base, both, "train") == Outer(lr=0.2, name="full", dims=[5])
    assert C.resolve(Outer, base, "", "train") == Outer(lr=0.1, name="base")
    with pytest.raises(NeuroselError, match="nothing.yaml: no such config file"):
        C.resolve(Outer, base, f"{tmp_path / 'tiny.yaml'},{tmp_path / 'nothing.yaml'}", "train")


@pytest.mark.parametrize(
    "text, message",
    [
        ("lrr: 1\n", "unknown key 'lrr'"),
        ("inner:\n  widht: 1\n", "unknown key 'widht'"),
        ("lr: fast\n", "lr: expected a number"),
        ("dims: 3\n", "dims: expected a list"),
        ("inner:\n  act: tanh\n", "'tanh' is not one of"),
        ("inner:\n  width: 2.5\n", "expected an integer"),
        ("- 1\n", "expected a mapping"),
        ("lr: [1\n", "invalid YAML"),
    ],
)
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(NeuroselError) as e:
        C.resolve(Outer, path)
    assert message in str(e.value) and str(path) in str(e.value)


def test_save_roundtrip(tmp_path: Path) -> None:
    cfg = Outer(dims=[5], extra="y")
    C.save(cfg, tmp_path / "r.yaml")
    assert C.resolve(Outer, tmp_path / "r.yaml") == cfg


def test_atomic_path_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_checkpoints_are_flushed_to_disk_before_the_rename(tmp_path: Path, monkeypatch) -> None:
    import os

    from neurosel import io

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", fsync)
    io.torch_save({"step": 1}, tmp_path / "checkpoint-1.pt")
    write_text(tmp_path / "out.txt", "small")  # the many small files are not synced (docs/reliability.md)
    assert len(synced) == 1 and io.is_temporary(synced[0]) and Path(synced[0]).parent == tmp_path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-1.pt", "out.txt"]


_TERMINATED_WRITER = """
import os, signal, sys
from pathlib import Path
from neurosel.cli import run_main
from neurosel.io import atomic_path

def main(argv):
    with atomic_path(Path(sys.argv[1])) as tmp:
        tmp.write_text("half")
        os.kill(os.getpid(), signal.SIGTERM)  # as scancel or kill would, in the middle of a write
        tmp.write_text("whole")

run_main(main)
"""


def test_sigterm_during_an_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    write_text(target, "old")
    r = subprocess.run([sys.executable, "-c", _TERMINATED_WRITER, str(target)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert "terminated (SIGTERM)" in r.stderr
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_run_once_skips_and_redoes(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("a")
    out = tmp_path / "out"
    calls: list[int] = []
    work = lambda: calls.append(1)  # noqa: E731
    assert run_once("s", out, {"k": 1}, [inp], work)
    assert not run_once("s", out, {"k": 1}, [inp], work)
    assert run_once("s", out, {"k": 2}, [inp], work)  # config changed
    inp.write_text("b")
    assert run_once("s", out, {"k": 2}, [inp], work)  # input changed
    assert run_once("s", out, {"k": 2}, [inp], work, force=True)
    assert len(calls) == 4


def test_killed_work_leaves_no_marker(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def boom() -> None:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_once("s", out, {}, [], boom)
    assert status(out, fingerprint({}, [])) == "new"
