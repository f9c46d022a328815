"""Stage 0: Kaldi data dirs or Lhotse manifests per split -> validated Lhotse manifests and cuts,
plus a Kaldi data dir export per split.

Outputs under ``<out_dir>`` (normally ``data/``):
``manifests/{recordings,supervisions,cuts}_<split>.jsonl.gz`` and ``kaldi/<split>/``.
Every split is validated and imported, and its Kaldi export made and checked against Kaldi's
rules (``kaldi_export``), before anything is written, so a corpus with one bad split leaves no
output at all.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lhotse import CutSet, RecordingSet, SupervisionSet, load_manifest
from lhotse.kaldi import load_kaldi_data_dir
from lhotse.qa import validate_recordings_and_supervisions

from neurosel.data.kaldi_dir import AudioCheck, audio_problems, validate_data_dir
from neurosel.data.kaldi_export import export_files, kaldi_rules_problems
from neurosel.errors import NeuroselError
from neurosel.io import atomic_dir, atomic_path
from neurosel.recipe import layout

log = logging.getLogger(__name__)

# Kaldi data dir files Lhotse's importer reads besides wav.scp (reco2dur comes from validation)
_KALDI_FILES = ("wav.scp", "text", "utt2spk", "segments", "spk2gender", "utt2lang")


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
    # Audio whose peak level is below this many dBFS is refused as practically silent. -60 dBFS is 32
    # steps of 16-bit audio; the quietest utterance of the default synthetic corpus peaks at -22.3 dBFS.
    min_peak_dbfs: float = -60.0
    # A folder holding one Kaldi data dir per split (what the synthetic corpus generator writes).
    kaldi_root: str | None = None
    # A folder holding one folder per split with recordings.jsonl.gz and supervisions.jsonl.gz
    # (what a recipe's own preparation with Lhotse's prepare_* functions writes).
    manifest_root: str | None = None
    # Explicit sources per split; they win over kaldi_root and manifest_root for the same name.
    splits: dict[str, SplitSource] = field(default_factory=dict)


def split_sources(cfg: PrepareConfig, base_dir: str | Path = ".") -> dict[str, SplitSource]:
    """Resolve the configured splits: ``kaldi_root`` and ``manifest_root`` subfolders, then the
    explicit ``splits``. Checks the split names (``train``, ``dev``, ``test``,
    ``ood_adapt_<condition>``, ``ood_<condition>``), that ``train`` and ``dev`` exist and that
    every ``ood_adapt_<c>`` has its test set ``ood_<c>``.

    Relative paths in the config are taken relative to ``base_dir`` (the recipe's work dir).
    """
    base = Path(base_dir)

    def at(p: str | None) -> str | None:
        return None if p is None else str(base / p)

    sources: dict[str, SplitSource] = {}
    for key, root_name in (("kaldi_root", cfg.kaldi_root), ("manifest_root", cfg.manifest_root)):
        if root_name is None:
            continue
        root = base / root_name
        if not root.is_dir():
            raise NeuroselError(f"{root}: {key} does not exist")
        for d in sorted(root.iterdir()):
            if key == "kaldi_root" and (d / "wav.scp").is_file():
                sources[d.name] = SplitSource(kaldi_dir=str(d))
            elif key == "manifest_root" and (d / "recordings.jsonl.gz").is_file():
                sources[d.name] = SplitSource(recordings=str(d / "recordings.jsonl.gz"),
                                              supervisions=str(d / "supervisions.jsonl.gz"))
    for name, src in cfg.splits.items():
        sources[name] = SplitSource(at(src.kaldi_dir), at(src.recordings), at(src.supervisions))
    if not sources:
        raise NeuroselError("prepare config names no splits (set splits, kaldi_root or manifest_root; "
                            "for a new recipe, edit its conf/corpus.yaml)")
    for name in sources:
        if not layout.is_split_name(name):
            raise NeuroselError(f"split '{name}': not a split name (train, dev, test, ood_adapt_<condition>, "
                                "ood_<condition>; a condition is lower-case letters and '_')")
    for required in ("train", "dev"):
        if required not in sources:
            raise NeuroselError(f"prepare config has no '{required}' split (found: {', '.join(sources)})")
    for name in sources:
        if layout.is_adapt_set(name) and layout.ood_set(layout.condition_of(name)) not in sources:
            raise NeuroselError(f"split '{name}' has no test set '{layout.ood_set(layout.condition_of(name))}'")
    return sources


def import_kaldi_dir(data_dir: str | Path, check: AudioCheck, num_jobs: int = 1) -> tuple[RecordingSet, SupervisionSet]:
    """Validate a Kaldi data dir (see ``kaldi_dir``), then import it with Lhotse's
    ``load_kaldi_data_dir``: one recording per ``wav.scp`` line (file or pipe command), one
    supervision per utterance (per ``segments`` line when there is one).

    Lhotse gets the durations measured by the validation as ``reco2dur`` of a staging copy of
    the dir, so it neither rereads the audio nor needs ``kaldi_native_io`` for pipe commands.
    """
    d = Path(data_dir)
    durations = validate_data_dir(d, check, num_jobs=num_jobs)
    with tempfile.TemporaryDirectory(prefix="kaldi_import.") as tmp:
        staging = Path(tmp)
        for name in _KALDI_FILES:
            if (d / name).is_file():
                os.symlink((d / name).resolve(), staging / name)
        (staging / "reco2dur").write_text("".join(f"{reco} {dur!r}\n" for reco, dur in durations.items()))
        recordings, supervisions, _ = load_kaldi_data_dir(staging, sampling_rate=check.sampling_rate,
                                                          use_reco2dur=True, num_jobs=1)
    if supervisions is None:
        raise NeuroselError(f"{d}: no utt2spk or segments; cannot make supervisions")
    return recordings, supervisions


def _load_manifests(source: SplitSource, check: AudioCheck,
                    num_jobs: int = 1) -> tuple[RecordingSet, SupervisionSet]:
    """Lhotse recordings and supervisions, checked: rate, audio files present and readable (neither
    truncated nor practically silent, of the rate and duration the manifest says), transcripts and
    durations (errors name the manifest and the id)."""
    recordings = load_manifest(source.recordings, RecordingSet)
    supervisions = load_manifest(source.supervisions, SupervisionSet)
    for rec in recordings:
        if rec.sampling_rate != check.sampling_rate:
            raise NeuroselError(f"{source.recordings}: recording '{rec.id}' is {rec.sampling_rate} Hz, "
                                f"expected {check.sampling_rate} Hz")
        for src in rec.sources:
            if src.type == "file" and not Path(src.source).is_file():
                raise NeuroselError(f"{source.recordings}: recording '{rec.id}': audio file {src.source} "
                                    "does not exist")
    audio = [(rec.id, src.source if src.type == "file" else f"{src.source} |", rec.duration)
             for rec in recordings if len(rec.sources) == 1
             for src in rec.sources if src.type in ("file", "command")]
    problems = audio_problems(audio, f"{source.recordings}: recording", check, num_jobs)
    if problems:
        raise NeuroselError(problems[0])
    for sup in supervisions:
        if not (sup.text or "").strip():
            raise NeuroselError(f"{source.supervisions}: supervision '{sup.id}' has an empty transcript")
        if not check.min_duration <= sup.duration <= check.max_duration:
            raise NeuroselError(f"{source.supervisions}: supervision '{sup.id}' lasts {sup.duration:.2f} s, "
                                f"outside [{check.min_duration}, {check.max_duration}] s")
    return recordings, supervisions


def load_split(name: str, source: SplitSource, cfg: PrepareConfig, num_jobs: int) -> CutSet:
    """Validate one split and return its cuts (one supervision per cut, cut id = utterance id)."""
    check = AudioCheck(cfg.sampling_rate, cfg.min_duration, cfg.max_duration, cfg.min_peak_dbfs)
    if source.kaldi_dir is not None:
        recordings, supervisions = import_kaldi_dir(source.kaldi_dir, check, num_jobs)
    elif source.recordings is not None and source.supervisions is not None:
        recordings, supervisions = _load_manifests(source, check, num_jobs)
    else:
        raise NeuroselError(f"split '{name}': give kaldi_dir, or both recordings and supervisions")
    try:
        validate_recordings_and_supervisions(recordings, supervisions)
    except AssertionError as e:
        raise NeuroselError(f"split '{name}': {e}") from e
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions)
    return cuts.trim_to_supervisions(keep_overlapping=False).to_eager()


def prepare(cfg: PrepareConfig, out_dir: str | Path, num_jobs: int = 1, base_dir: str | Path = ".") -> list[str]:
    """Run stage 0 for every split; return the split names. Every split is loaded and checked
    before the first artifact is written; each artifact is written atomically."""
    out = Path(out_dir)
    sources = split_sources(cfg, base_dir)
    loaded = {name: load_split(name, source, cfg, num_jobs) for name, source in sources.items()}
    exports = {}
    for name, cuts in loaded.items():
        # one recording per id: the cuts of a segmented recording share it; a cut's supervisions
        # are timed from the cut's start, the manifest's and the export's from the recording's
        recordings = RecordingSet.from_recordings({c.recording.id: c.recording for c in cuts}.values())
        supervisions = SupervisionSet.from_segments(s.with_offset(c.start) for c in cuts for s in c.supervisions)
        exports[name] = (recordings, supervisions, kaldi_export(recordings, supervisions, name, sources[name],
                                                                out / "kaldi" / name))
    for name, cuts in loaded.items():
        recordings, supervisions, files = exports[name]
        manifests = out / "manifests"
        for obj, stem in ((recordings, "recordings"), (supervisions, "supervisions"), (cuts, "cuts")):
            with atomic_path(manifests / f"{stem}_{name}.jsonl.gz") as tmp:
                obj.to_file(tmp)
        write_kaldi_dir(files, out / "kaldi" / name)
        hours = sum(c.duration for c in cuts) / 3600
        log.info("split %s: %d utterances, %.2f h", name, len(cuts), hours)
    return list(sources)


def kaldi_export(recordings: RecordingSet, supervisions: SupervisionSet, name: str, source: SplitSource,
                 dest: Path) -> dict[str, str]:
    """The files of split ``name``'s Kaldi data dir (``kaldi_export.export_files``), checked against
    Kaldi's rules before anything is written; a break of them is an error naming ``dest``."""
    origin = source.kaldi_dir or source.supervisions or f"split '{name}'"
    files = export_files(recordings, supervisions, origin)
    problems = kaldi_rules_problems({k: v.encode() for k, v in files.items()}, str(dest))
    if problems:
        raise NeuroselError(f"{problems[0]} (the Kaldi export of split '{name}' breaks Kaldi's rules; "
                            f"{len(problems)} problems)")
    return files


def write_kaldi_dir(files: dict[str, str], dest: Path) -> None:
    """Write a Kaldi data dir's files to a temporary folder renamed into place (a full disk is an
    error naming ``dest``)."""
    with atomic_dir(dest) as tmp:
        for file_name, text in files.items():
            write_kaldi_file(tmp / file_name, text)


def write_kaldi_file(path: Path, text: str) -> None:
    """One file of a Kaldi data dir, UTF-8 (a function of its own so that a test can make it fail)."""
    path.write_text(text, encoding="utf-8")
