"""Typed configuration: YAML (``yaml.safe_load``) into dataclasses, validated with errors that
name the file and the key.

A stage's configuration is one dataclass. It is built from, in increasing priority:
the dataclass defaults, the stage's YAML file, the stage's section of each overlay file in turn
(e.g. ``conf/study_full.yaml`` selected by ``--study full``, then ``conf/tiny.yaml`` selected by
``--corpus-size tiny``; several are given as one comma-separated ``--overlay``), and ``--set
key=value`` overrides from the command line (dotted keys for nested dataclasses: ``--set
model.fc_dim=256``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

from neurosel.errors import NeuroselError

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; an empty file is an empty mapping."""
    path = Path(path)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise NeuroselError(f"{where}: invalid YAML ({getattr(e, 'problem', e)})") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise NeuroselError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b=3"`` -> ``(["a", "b"], 3)``; the value is parsed as YAML (numbers, lists, bools)."""
    if "=" not in text:
        raise NeuroselError(f"--set {text}: expected key=value")
    key, value = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(value) if value != "" else ""


def merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; ``update`` wins. Returns a new dict."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(dict(out[k]), v)
        else:
            out[k] = v
    return out


def resolve(
    cls: type[T],
    config_file: str | Path | None = None,
    overlay_file: str | Path | None = None,
    section: str | None = None,
    overrides: list[str] | None = None,
) -> T:
    """Build ``cls`` from defaults < ``config_file`` < ``overlay_file[section]`` < ``overrides``;
    ``overlay_file`` may name several files separated by commas, applied left to right."""
    data: dict[str, Any] = {}
    source = "defaults"
    if config_file is not None:
        data = load_yaml(config_file)
        source = str(config_file)
    for overlay_path in overlay_paths(overlay_file):
        overlay = load_yaml(overlay_path)
        part = overlay.get(section, {}) if section else overlay
        if not isinstance(part, dict):
            raise NeuroselError(f"{overlay_path}: section '{section}' must be a mapping")
        data = merge(data, part)
        source = f"{source} + {overlay_path}"
    for item in overrides or []:
        keys, value = parse_override(item)
        patch: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            patch = {k: patch}
        data = merge(data, patch)
    return from_dict(cls, data, source)


def overlay_paths(overlay: str | Path | None) -> list[Path]:
    """The overlay files of an ``--overlay`` value: none, one, or several separated by commas."""
    if overlay is None:
        return []
    return [Path(part) for part in str(overlay).split(",") if part.strip()]


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ``NeuroselError``."""
    if not isinstance(data, Mapping):
        raise NeuroselError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise NeuroselError(
            f"{where}: unknown key '{unknown[0]}' for {cls.__name__} "
            f"(known: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}: {k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise NeuroselError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for saving the resolved config beside an artifact)."""
    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else obj


def hashed(obj: Any, *optional: str) -> dict[str, Any]:
    """``to_dict(obj)`` for a stage fingerprint, without the ``optional`` keys that are unset
    (empty or None): a key added to a stage config later does not make every existing run of the
    stage stale while it keeps its default."""
    d = to_dict(obj)
    return {k: v for k, v in d.items() if not (k in optional and v in ("", None, {}))}


def save(obj: Any, path: str | Path) -> None:
    """Write a resolved config as YAML, atomically."""
    from neurosel.io import write_text

    write_text(path, yaml.safe_dump(to_dict(obj), sort_keys=False))


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, value, where)
            except NeuroselError as e:
                errors.append(str(e))
        raise NeuroselError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise NeuroselError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise NeuroselError(f"{where}: expected a list, got {value!r}")
        item = args[0] if args else Any
        seq = [_convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return seq if origin is list else tuple(seq)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise NeuroselError(f"{where}: expected a mapping, got {value!r}")
        vt = args[1] if args else Any
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise NeuroselError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise NeuroselError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise NeuroselError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise NeuroselError(f"{where}: expected a string, got {value!r}")
        return value
    return value
