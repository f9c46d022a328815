"""Small-corpus size profiles of the new-recipe template (``egs/TEMPLATE/conf/profiles/<name>.yaml``):
training length, augmentation, model width and BPE size for about 1, 3 and 10 hours of training
audio, chosen from the hours and merged into a recipe's ``conf/train.yaml`` and ``conf/lang.yaml``
by ``utils/new_recipe.sh --train-hours H``. Each profile's comments say what was measured.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml

from neurosel import config as C
from neurosel.errors import NeuroselError
from neurosel.io import write_text
from neurosel.lang.prepare import LangConfig
from neurosel.train.trainer import TrainConfig

# (profile, hours from, hours to): a profile serves [from, to) hours of training audio; from the
# last bound on, the template's own sizes (some tens of hours) apply.
PROFILES = (("1h", 0.0, 2.0), ("3h", 2.0, 6.0), ("10h", 6.0, 30.0))
# profile section -> (the recipe's config file, the config class it must resolve to)
SECTIONS: dict[str, tuple[str, type]] = {"train": ("train.yaml", TrainConfig), "lang": ("lang.yaml", LangConfig)}


def choose_profile(train_hours: float) -> str | None:
    """The profile for ``train_hours`` of training audio, or None (the template's sizes)."""
    if not train_hours > 0:
        raise NeuroselError(f"training hours must be a positive number, got {train_hours}")
    return next((name for name, low, high in PROFILES if low <= train_hours < high), None)


def apply_profile(profile: Path, conf_dir: Path, note: str) -> list[Path]:
    """Merge each section of ``profile`` into ``conf_dir``'s config file of that section; every
    merged config must resolve (unknown keys and wrong types are errors, nothing written then).
    Each file keeps its leading comment block, followed by ``note``. Returns the files written."""
    sections = C.load_yaml(profile)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise NeuroselError(f"{profile}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    merged: dict[Path, tuple[str, dict[str, Any]]] = {}
    for section, values in sections.items():
        name, cls = SECTIONS[section]
        path = conf_dir / name
        data = C.merge(C.load_yaml(path), values)
        C.from_dict(cls, data, f"{path} with {profile}")
        header = "".join(line + "\n" for line in _leading_comments(path))
        merged[path] = (header + "".join(f"# {line}\n" for line in textwrap.wrap(note, 98)), data)
    for path, (header, data) in merged.items():
        write_text(path, header + yaml.safe_dump(data, sort_keys=False))
    return list(merged)


def _leading_comments(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        if not line.startswith("#"):
            break
        out.append(line)
    return out
