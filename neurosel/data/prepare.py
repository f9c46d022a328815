"""Stage 0: Kaldi data dirs or Lhotse manifests per split -> validated Lhotse manifests and cuts,
plus a Kaldi data dir export per split.

Outputs under ``<out_dir>`` (normally ``data/``):
``manifests/{recordings,supervisions,cuts}_<split>.jsonl.gz`` and ``kaldi/<split>/``.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
from lhotse.kaldi import export_to_kaldi, load_kaldi_data_dir
from lhotse.qa import validate_recordings_and_supervisions

from neurosel.data.kaldi_dir import AudioCheck, validate_data_dir
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path

log = logging.getLogger(__name__)


@dataclass
class SplitSource:
    """Where one split comes from: a Kaldi data dir, or Lhotse recordings + supervisions."""

    kaldi_dir: str | None = None
    recordings: str | None = None
    supervisions: str | None = None


@dataclass
class PrepareConfig:
    """Stage 0 configuration (``conf/prepare.yaml``; a new corpus's ``conf/corpus.yaml``)."""

    sampling_rate: int = 16000
    min_duration: float = 0.1
    max_duration: float = 60.0
    # A folder holding one Kaldi data dir per split (what the synthetic corpus generator writes).
    kaldi_root: str | None = None
    # Explicit sources per split; they win over kaldi_root for the same split name.
    splits: dict[str, SplitSource] = field(default_factory=dict)


def split_sources(cfg: PrepareConfig, base_dir: str | Path = ".") -> dict[str, SplitSource]:
    """Resolve the configured splits: ``kaldi_root`` subfolders, then explicit ``splits``.

    Relative paths in the config are taken relative to ``base_dir`` (the recipe's work dir).
    """
    base = Path(base_dir)

    def at(p: str | None) -> str | None:
        return None if p is None else str(base / p)

    sources: dict[str, SplitSource] = {}
    if cfg.kaldi_root is not None:
        root = base / cfg.kaldi_root
        if not root.is_dir():
            raise NeuroselError(f"{root}: kaldi_root does not exist")
        for d in sorted(root.iterdir()):
            if (d / "wav.scp").is_file():
                sources[d.name] = SplitSource(kaldi_dir=str(d))
    for name, src in cfg.splits.items():
        sources[name] = SplitSource(at(src.kaldi_dir), at(src.recordings), at(src.supervisions))
    if not sources:
        raise NeuroselError("prepare config names no splits (set kaldi_root or splits)")
    for required in ("train", "dev"):
        if required not in sources:
            raise NeuroselError(f"prepare config has no '{required}' split (found: {', '.join(sources)})")
    return sources


def load_split(name: str, source: SplitSource, cfg: PrepareConfig, num_jobs: int) -> CutSet:
    """Validate one split and return its cuts (one supervision per cut)."""
    check = AudioCheck(cfg.sampling_rate, cfg.min_duration, cfg.max_duration)
    if source.kaldi_dir is not None:
        validate_data_dir(source.kaldi_dir, check, num_jobs=num_jobs)
        recordings, supervisions, _ = load_kaldi_data_dir(
            source.kaldi_dir, sampling_rate=cfg.sampling_rate, use_reco2dur=False, num_jobs=num_jobs
        )
        if supervisions is None:
            raise NeuroselError(f"{source.kaldi_dir}: no utt2spk or segments; cannot make supervisions")
    elif source.recordings is not None and source.supervisions is not None:
        recordings = load_manifest(source.recordings, RecordingSet)
        supervisions = load_manifest(source.supervisions, SupervisionSet)
        for sup in supervisions:
            if not (sup.text or "").strip():
                raise NeuroselError(f"{source.supervisions}: supervision '{sup.id}' has an empty transcript")
        for rec in recordings:
            if rec.sampling_rate != cfg.sampling_rate:
                raise NeuroselError(
                    f"{source.recordings}: recording '{rec.id}' is {rec.sampling_rate} Hz, "
                    f"expected {cfg.sampling_rate} Hz"
                )
    else:
        raise NeuroselError(f"split '{name}': give kaldi_dir, or both recordings and supervisions")
    try:
        validate_recordings_and_supervisions(recordings, supervisions)
    except AssertionError as e:
        raise NeuroselError(f"split '{name}': {e}") from e
    # One cut per supervision, with the supervision's id (= the Kaldi utterance id).
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    return cuts.trim_to_supervisions(keep_overlapping=False).to_eager()


def prepare(cfg: PrepareConfig, out_dir: str | Path, num_jobs: int = 1, base_dir: str | Path = ".") -> list[str]:
    """Run stage 0 for every split; return the split names. Each artifact is written atomically."""
    out = Path(out_dir)
    sources = split_sources(cfg, base_dir)
    for name, source in sources.items():
        cuts = load_split(name, source, cfg, num_jobs)
        recordings = RecordingSet.from_recordings(c.recording for c in cuts)
        supervisions = SupervisionSet.from_segments(s for c in cuts for s in c.supervisions)
        manifests = out / "manifests"
        for obj, stem in ((recordings, "recordings"), (supervisions, "supervisions"), (cuts, "cuts")):
            with atomic_path(manifests / f"{stem}_{name}.jsonl.gz") as tmp:
                obj.to_file(tmp)
        _export_kaldi(recordings, supervisions, out / "kaldi" / name)
        hours = sum(c.duration for c in cuts) / 3600
        log.info("split %s: %d utterances, %.2f h", name, len(cuts), hours)
    return list(sources)


def _export_kaldi(recordings: RecordingSet, supervisions: SupervisionSet, dest: Path) -> None:
    """Kaldi data dir export, written to a temporary folder and renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        export_to_kaldi(recordings, supervisions, tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
