"""The inputs of the micro-benchmarks: a finished recipe run (its work dir) and bounded subsets of
its cut sets, so that a benchmark costs the same whatever the size of the corpus behind it."""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from lhotse import CutSet, load_manifest

from bench.common import REPO
from neurosel.recipe import layout


@dataclass
class Workdir:
    """A recipe work dir after stages 0-4 (``data/manifests``, ``data/fbank``, ``data/lang``,
    ``exp/baseline/model.pt``, ``exp/decode/baseline/decode.yaml``)."""

    root: Path

    @property
    def manifests(self) -> Path:
        return self.root / "data" / "manifests"

    @property
    def fbank(self) -> Path:
        return self.root / "data" / "fbank"

    @property
    def lang(self) -> Path:
        return self.root / "data" / "lang"

    @property
    def model(self) -> Path:
        return self.root / "exp" / "baseline" / "model.pt"

    @property
    def decode_config(self) -> Path:
        return self.root / "exp" / "decode" / "baseline" / "decode.yaml"

    def storage_root(self) -> Path:
        """The folder the manifests' relative feature paths (``egs/synth/data/fbank/...``) are
        relative to: the root of the checkout the run was made in (``REPO`` for ``egs/synth``; the
        other checkout's root for a run in another tree). Found as the nearest ancestor of the work
        dir under which the first feature file of a manifest exists; ``REPO`` when the paths are
        absolute or resolve nowhere."""
        splits = layout.splits(self.fbank)
        if not splits:
            return REPO
        with gzip.open(layout.cuts_path(self.fbank, splits[0]), "rt") as f:
            first = f.readline()
        storage = (json.loads(first).get("features") or {}).get("storage_path", "") if first.strip() else ""
        if not storage or Path(storage).is_absolute():
            return REPO
        for folder in [self.root, *self.root.parents]:
            if (folder / storage).exists():
                return folder
        return REPO

    def missing(self) -> list[Path]:
        """The required files that are not there."""
        need = [layout.cuts_path(self.manifests, "train"), layout.cuts_path(self.fbank, "train"),
                layout.cmvn_path(self.fbank), self.lang / "bpe.model", self.lang / "TLG.fst", self.model,
                self.decode_config]
        return [p for p in need if not p.is_file()]


def find_workdir(path: str | Path | None) -> Workdir:
    """``path`` if given, else ``egs/synth`` (the default recipe's work dir); it must hold a
    finished run of stages 0-4 (ValueError listing what is missing otherwise)."""
    root = Path(path) if path else REPO / "egs" / "synth"
    work = Workdir(root.resolve())
    missing = work.missing()
    if missing:
        raise ValueError(f"{root} is not a finished run of stages 0-4 (missing {', '.join(map(str, missing))}); "
                         f"point --workdir at one, e.g. a `./run.sh --corpus-size tiny --workdir DIR` run")
    return work


def load_cuts(path: Path) -> CutSet:
    """An eager CutSet from a manifest file."""
    return load_manifest(path, CutSet).to_eager()


def take_seconds(cuts: CutSet, seconds: float) -> CutSet:
    """The first cuts by id until their total duration reaches ``seconds``; if the set is too
    small, further copies of it follow with ids suffixed ``_copy<k>`` (same audio and features,
    distinct ids), so any amount of data can be asked for."""
    ordered = sorted(cuts, key=lambda c: c.id)
    if not ordered:
        raise ValueError("cannot take audio from an empty cut set")
    chosen, total, k = [], 0.0, 0
    while total < seconds:
        for cut in ordered:
            chosen.append(cut if k == 0 else cut.with_id(f"{cut.id}_copy{k}"))
            total += cut.duration
            if total >= seconds:
                break
        k += 1
    return CutSet.from_cuts(chosen)


def take_count(cuts: CutSet, count: int) -> CutSet:
    """The first ``count`` cuts by id, with ``_copy<k>`` copies if the set has fewer."""
    ordered = sorted(cuts, key=lambda c: c.id)
    if not ordered:
        raise ValueError("cannot take cuts from an empty cut set")
    chosen = [c if i < len(ordered) else c.with_id(f"{c.id}_copy{i // len(ordered)}")
              for i, c in ((i, ordered[i % len(ordered)]) for i in range(count))]
    return CutSet.from_cuts(chosen)


def total_seconds(cuts: CutSet) -> float:
    """Summed duration of ``cuts`` in seconds."""
    return float(sum(c.duration for c in cuts))
