"""The CNN CTC acoustic model: build, save and load checkpoints, fold norms, and describe the FC
stack for the analysis code (``FcSpec``).

A model checkpoint is a ``torch.save``d dict ``{"model": state_dict, "config": ModelConfig as a
plain dict, ...}`` that loads with ``torch.load(path, weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from neurosel.config import from_dict
from neurosel.errors import NeuroselError
from neurosel.io import torch_load, torch_save
from neurosel.model.cnn import CnnCtcModel, ModelConfig
from neurosel.model.fold import fold_norms
from neurosel.fc import FcSpec

__all__ = ["CnnCtcModel", "FcSpec", "ModelConfig", "build_model", "fold_norms", "load_model", "save_model"]


def build_model(cfg: ModelConfig) -> CnnCtcModel:
    """A freshly initialised model for ``cfg`` (``cfg.vocab_size`` must be set)."""
    try:
        return CnnCtcModel(cfg)
    except ValueError as e:
        raise NeuroselError(f"model config: {e}") from e


def save_model(model: CnnCtcModel, path: str | Path, **extra: Any) -> None:
    """Write ``{"model": state_dict, "config": model.current_config(), **extra}`` atomically.

    ``extra`` must hold only tensors and plain Python values (it is loaded with weights_only=True).
    """
    torch_save({"model": model.state_dict(), "config": asdict(model.current_config()), **extra}, path)


def load_model(path: str | Path) -> tuple[CnnCtcModel, ModelConfig]:
    """Rebuild the model a checkpoint describes and load its weights; returns it in eval mode.

    Raises ``NeuroselError`` naming ``path`` if the file is missing or truncated, has no
    ``model``/``config`` entry, or its weights do not match its config.
    """
    ckpt = torch_load(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise NeuroselError(f"{path}: not a model checkpoint (needs 'model' and 'config' entries)")
    cfg = from_dict(ModelConfig, ckpt["config"], f"{path}: config")
    try:
        model = CnnCtcModel(cfg)
        model.load_state_dict(ckpt["model"])
    except (ValueError, RuntimeError) as e:
        detail = " ".join(str(e).split())[:300]
        raise NeuroselError(f"{path}: weights do not match the config in the checkpoint ({detail})") from e
    return model.eval(), cfg
