"""Resumable training checkpoints ``<exp-dir>/checkpoint-<step>.pt``.

A checkpoint is a dict of tensors and plain Python values only (it loads with
``torch.load(weights_only=True)``): ``model``, ``config`` (ModelConfig dict, so ``load_model``
reads it), ``train_config``, ``optimizer``, ``scheduler``, ``sampler`` (Lhotse sampler state),
``rng`` (python, numpy and torch generator states) and ``progress`` (step, epoch, losses, ...).
A multi-process run writes the same entries (``rng`` is rank 0's) and ``rng_per_process``, every
process's RNG states by rank. Saving is atomic; only the newest ``keep_last`` checkpoints are kept.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurosel.errors import NeuroselError
from neurosel.io import torch_load, torch_save

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)\.pt$")
REQUIRED_KEYS = ("model", "config", "train_config", "optimizer", "scheduler", "sampler", "rng", "progress")


def rng_state() -> dict[str, Any]:
    """The python, numpy and torch global RNG states as tensors and plain values."""
    version, py_state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of ``rng_state``."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npy = state["numpy"]
    np.random.set_state((npy["name"], npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])


def seed_rngs(seed: int) -> None:
    """Seed the python, numpy and torch global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def checkpoint_path(exp_dir: str | Path, step: int) -> Path:
    """``<exp_dir>/checkpoint-<step>.pt``."""
    return Path(exp_dir) / f"checkpoint-{step}.pt"


def list_checkpoints(exp_dir: str | Path) -> list[Path]:
    """Resumable checkpoints in ``exp_dir``, oldest (smallest step) first."""
    found = []
    for p in Path(exp_dir).glob("checkpoint-*.pt"):
        m = CHECKPOINT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def save_checkpoint(exp_dir: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` as ``checkpoint-<step>.pt`` atomically, then delete all but the newest
    ``keep_last`` checkpoints. Returns the new checkpoint's path."""
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise ValueError(f"checkpoint state lacks {missing}")
    path = checkpoint_path(exp_dir, step)
    torch_save(state, path)
    for old in list_checkpoints(exp_dir)[:-keep_last]:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a resumable checkpoint; ``NeuroselError`` naming the file if it is unreadable or
    lacks an entry."""
    state = torch_load(path)
    missing = [k for k in REQUIRED_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise NeuroselError(f"{path}: not a resumable checkpoint (missing {', '.join(missing)})")
    return state


def average_model_states(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the ``model`` state dicts in ``paths`` (floating tensors); integer
    buffers such as BatchNorm's ``num_batches_tracked`` are taken from the last checkpoint."""
    if not paths:
        raise ValueError("no checkpoints to average")
    states = [torch_load(p)["model"] for p in paths]
    averaged = {}
    for name, last in states[-1].items():
        if last.is_floating_point():
            averaged[name] = (sum(s[name].double() for s in states) / len(states)).to(last.dtype)
        else:
            averaged[name] = last.clone()
    return averaged
