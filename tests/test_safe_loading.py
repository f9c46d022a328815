"""Safe loading: no checkpoint, statistics, config or CMVN file can run code when neurosel reads it.

Two halves: the source never calls a loader that unpickles arbitrary objects (checked on the
syntax tree of every module of neurosel/), and every loader, given a file crafted to run code on
unpickling, refuses it with a one-line error naming the file while the code does not run. A last
test loads every checkpoint of a real tiny recipe run the strict way.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosel.cli import run_main
from neurosel.config import load_yaml
from neurosel.errors import NeuroselError
from neurosel.io import torch_load
from neurosel.model import load_model
from neurosel.saliency.stats import load_stats
from neurosel.saliency.taylor import load_taylor
from neurosel.train.checkpoint import load_checkpoint
from neurosel.data.batches import load_cmvn

PACKAGE = Path(__file__).resolve().parents[1] / "neurosel"


class RunsCode:
    """Unpickling this object calls ``os.mkdir(sentinel)``: the proof that code ran."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return os.mkdir, (self.sentinel,)


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call as (dotted callee name, node), e.g. ('torch.load', node)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            elif parts:  # a method of a call's result, e.g. model.to(device).eval(): not a bare name
                parts.append("<call>")
            out.append((".".join(reversed(parts)), node))
    return out


def _keyword(node: ast.Call, name: str) -> object:
    for kw in node.keywords:
        if kw.arg == name and isinstance(kw.value, ast.Constant):
            return kw.value.value
    return None


def test_source_uses_only_safe_loaders() -> None:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = node.module if isinstance(node, ast.ImportFrom) else ""
            for name in names + [module or ""]:
                if name.split(".")[0] in ("pickle", "cPickle", "dill", "joblib", "marshal", "shelve"):
                    problems.append(f"{where}:{node.lineno}: imports {name}")
        for callee, node in _calls(tree):
            line = f"{where}:{node.lineno}: {callee}"
            if callee in ("torch.load", "torch.jit.load") and _keyword(node, "weights_only") is not True:
                problems.append(f"{line} without weights_only=True")
            if callee in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") is not False:
                problems.append(f"{line} without allow_pickle=False")
            if callee in ("yaml.load", "yaml.load_all", "yaml.unsafe_load", "yaml.full_load", "yaml.full_load_all"):
                problems.append(f"{line}: use yaml.safe_load")
            if callee in ("eval", "exec"):
                problems.append(line)
    assert problems == []
    # and the one torch.load there is goes through neurosel.io.torch_load
    loads = [(p, n.lineno) for p in PACKAGE.rglob("*.py") for c, n in _calls(ast.parse(p.read_text()))
             if c == "torch.load"]
    assert [p.name for p, _ in loads] == ["io.py"]


LOADERS = [("torch_load", torch_load), ("load_model", load_model), ("load_checkpoint", load_checkpoint),
           ("load_stats", load_stats), ("load_taylor", load_taylor)]


@pytest.mark.parametrize("name, loader", LOADERS, ids=[n for n, _ in LOADERS])
def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path, name: str, loader) -> None:
    sentinel = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "config": RunsCode(sentinel)}, evil)
    with pytest.raises(NeuroselError) as e:
        loader(evil)
    assert str(evil) in str(e.value) and "\n" not in str(e.value)
    assert not sentinel.exists()


def test_cmvn_statistics_with_a_pickled_array_are_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "code-ran"
    evil = tmp_path / "cmvn.npz"
    np.savez(evil, mean=np.array([RunsCode(sentinel)], dtype=object), std=np.ones(1))
    with pytest.raises(NeuroselError, match="cmvn.npz: cannot read CMVN statistics"):
        load_cmvn(evil)
    assert not sentinel.exists()


def test_yaml_config_with_a_python_tag_is_refused(tmp_path: Path) -> None:
    sentinel = tmp_path / "code-ran"
    conf = tmp_path / "train.yaml"
    conf.write_text(f"lr: !!python/object/apply:os.mkdir ['{sentinel}']\n")
    with pytest.raises(NeuroselError, match=r"train\.yaml:1: invalid YAML"):
        load_yaml(conf)
    assert not sentinel.exists()


def test_entry_point_refuses_such_a_model_with_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    from neurosel.bin import decode as decode_cli

    sentinel = tmp_path / "code-ran"
    evil = tmp_path / "model.pt"
    torch.save({"model": RunsCode(sentinel), "config": {}}, evil)
    monkeypatch.setattr(sys, "argv", ["decode"])
    with pytest.raises(SystemExit) as e:
        run_main(decode_cli.main, ["decode", "--sets", "test", str(evil), str(tmp_path), str(tmp_path),
                                   str(tmp_path / "out")])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert e.value.code == 1 and len(errors) == 1 and str(evil) in errors[0]
    assert not sentinel.exists()


@pytest.mark.slow
@pytest.mark.e2e
def test_every_file_of_a_recipe_run_loads_the_strict_way(tiny_recipe) -> None:
    workdir, result = tiny_recipe
    assert result.returncode == 0
    checkpoints = sorted(workdir.rglob("*.pt"))
    assert len(checkpoints) > 20
    for path in checkpoints:
        torch.load(path, map_location="cpu", weights_only=True)
    for path in sorted(workdir.rglob("*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            [npz[k] for k in npz.files]
