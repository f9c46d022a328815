"""Collect the scored decode dirs of a recipe run into per-system results.

The layout it reads (``exp/decode/``), fixed for every recipe:

* ``<system>/<set>/wer``: a system decoded once (``baseline``, ``prune_hyper``, ...);
* ``<system>.s<seed>/<set>/wer``: one seed of a system run with several seeds;
* ``<system>[.s<seed>]/adapted_<c>/<set>/wer``: a system that adapts one model per OOD condition
  ``c``; its ``ood_<c>`` result is reported under ``ood_<c>`` and its in-domain ``test`` result
  under ``test.<c>`` (what adapting to ``c`` costs in-domain).

Each result keeps the per-utterance error and reference-word counts (from ``errs.txt``) for the
paired bootstrap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neurosel.errors import NeuroselError
from neurosel.recipe import layout

_WER = re.compile(r"%WER (\S+) \[ (\d+) / (\d+), (\d+) ins, (\d+) del, (\d+) sub \]")


@dataclass
class SetResult:
    """One scored decode dir: corpus WER and per-utterance counts (sorted by utterance id)."""

    wer: float
    errors: int
    ref_words: int
    utt_ids: list[str]
    utt_errors: np.ndarray
    utt_ref_words: np.ndarray


@dataclass
class SystemResults:
    """``runs[test_set][seed]`` for one system (seed ``None`` when it ran once)."""

    name: str
    runs: dict[str, dict[int | None, SetResult]] = field(default_factory=dict)


def read_wer(path: Path) -> tuple[float, int, int]:
    """A Kaldi ``%WER`` line -> (wer, errors, reference words)."""
    m = _WER.search(path.read_text(encoding="utf-8"))
    if m is None:
        raise NeuroselError(f"{path}: no '%WER ... [ E / N, ...]' line")
    return float(m.group(1)), int(m.group(2)), int(m.group(3))


def read_utterance_counts(errs: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-utterance (ids, errors, reference words) from the ``#csid`` lines of ``errs.txt``."""
    ids, errors, refs = [], [], []
    for line in errs.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[1] == "#csid":
            c, s, i, d = map(int, parts[2:])
            ids.append(parts[0])
            errors.append(s + i + d)
            refs.append(c + s + d)
    order = np.argsort(np.array(ids, dtype=object)) if ids else np.array([], dtype=int)
    return [ids[k] for k in order], np.array(errors)[order], np.array(refs)[order]


def read_set(set_dir: Path) -> SetResult:
    """Read ``wer`` and ``errs.txt`` of one decode dir."""
    wer, errors, ref_words = read_wer(set_dir / "wer")
    ids, utt_errors, utt_refs = read_utterance_counts(set_dir / "errs.txt")
    if int(utt_errors.sum()) != errors:
        raise NeuroselError(f"{set_dir}: errs.txt has {int(utt_errors.sum())} errors, wer says {errors}")
    return SetResult(wer, errors, ref_words, ids, utt_errors, utt_refs)


def collect(decode_root: str | Path) -> dict[str, SystemResults]:
    """Every scored decode dir under ``decode_root`` (``exp/decode``), by system name."""
    root = Path(decode_root)
    if not root.is_dir():
        raise NeuroselError(f"{root}: no decode results (run stage 4 first)")
    systems: dict[str, SystemResults] = {}
    for wer in sorted(root.glob("*/*/wer")) + sorted(root.glob(f"*/{layout.adapted_name('*')}/*/wer")):
        set_dir = wer.parent
        rel = set_dir.relative_to(root).parts
        name, seed = layout.parse_system_id(rel[0])
        if len(rel) == 3:  # <system>/adapted_<c>/<set>
            condition = layout.adapted_condition(rel[1])
            assert condition is not None  # the glob matched adapted_<c>
            test_set = layout.adapted_test_set(rel[2], condition)
        else:
            test_set = rel[1]
        system = systems.setdefault(name, SystemResults(name))
        system.runs.setdefault(test_set, {})[seed] = read_set(set_dir)
    return systems
