"""The egs/librispeech corpus: LibriSpeech in-domain, MUSAN noise and room impulse responses for
synthetic OOD conditions on the test audio, and LibriSpeech's "other" parts as natural OOD.

``prepare_corpus(cfg, work_dir)`` writes, under ``<work_dir>/corpus``:

    manifests/   Lhotse's librispeech_{recordings,supervisions}_<part>.jsonl.gz (prepare_librispeech)
    audio/<split>/<utt>-<condition>.flac   the rendered OOD audio
    splits/<split>/{recordings,supervisions}.jsonl.gz   stage 0's input (prepare.yaml: manifest_root)
    splits/<split>/mix.jsonl.gz   for a synthetic condition: the Lhotse cuts (RIR and noise tracks,
                                  offsets, SNRs) the audio was rendered from

Splits: ``train`` (``train_parts``), ``dev`` (``dev_part``), ``test`` (``test_part``); per
synthetic condition c, ``ood_adapt_<c>`` (``adapt_part`` corrupted with the adaptation half of
the noises and RIRs) and ``ood_<c>`` (``test_part`` corrupted with the other half); per natural
condition n, ``ood_adapt_<n>`` and ``ood_<n>`` from its two LibriSpeech parts.

A part may be split by speaker: ``<part>/<k>of<n>`` is the k-th of n disjoint speaker groups of the
part (its speakers sorted, dealt out in turn), so a corpus with one held-out part, such as mini
LibriSpeech's ``dev-clean-2``, gives disjoint dev, test and adaptation speakers
(``egs/mini_librispeech``). Corpora are read
with Lhotse's ``prepare_librispeech``, ``prepare_musan`` and ``prepare_rir_noise``, and fetched with
their ``download_*`` functions only when the config says ``download: true``.
"""

from __future__ import annotations

import logging
import re
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lhotse import CutSet, RecordingSet, SupervisionSet
from lhotse.recipes import (download_librispeech, download_musan, download_rir_noise, prepare_librispeech,
                            prepare_musan, prepare_rir_noise)
from lhotse.recipes.librispeech import LIBRISPEECH, MINI_LIBRISPEECH

from neurosel import config as C
from neurosel.corpora.conditions import ConditionConfig, check_rate, corrupt, halves, render
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path
from neurosel.recipe import layout
from neurosel.stage import run_once

log = logging.getLogger(__name__)

SAMPLING_RATE = 16000
_GROUP = re.compile(r"^(?P<part>[^/]+)/(?P<k>[1-9][0-9]*)of(?P<n>[1-9][0-9]*)$")
_SUBSET_KEYS = ("train", "dev", "test", "ood_adapt", "ood")


def parse_part(spec: str) -> tuple[str, int, int]:
    """``"dev-clean-2/1of3"`` -> ``("dev-clean-2", 1, 3)``; a plain part name -> ``(name, 1, 1)``."""
    m = _GROUP.match(spec)
    if m is None:
        if "/" in spec:
            raise ValueError(f"'{spec}': a speaker group is written <part>/<k>of<n>, e.g. dev-clean-2/1of3")
        return spec, 1, 1
    k, n = int(m["k"]), int(m["n"])
    if k > n:
        raise ValueError(f"'{spec}': group {k} of {n} does not exist")
    return m["part"], k, n


def disjoint(a: str, b: str) -> bool:
    """Whether two part specs share no utterance: other parts, or other groups of one split."""
    (pa, ka, na), (pb, kb, nb) = parse_part(a), parse_part(b)
    return pa != pb or (na == nb and ka != kb and na > 1)


def speaker_group(cuts: CutSet, k: int, n: int) -> CutSet:
    """The cuts of the ``k``-th of ``n`` speaker groups: speakers sorted, the i-th (from 0) in group
    ``i % n + 1``; every cut when ``n`` is 1."""
    if n == 1:
        return cuts
    speakers = sorted({s.speaker for c in cuts for s in c.supervisions})
    if len(speakers) < n:
        raise NeuroselError(f"{n} speaker groups asked, the part has {len(speakers)} speaker(s)")
    chosen = {spk for i, spk in enumerate(speakers) if i % n == k - 1}
    return cuts.filter(lambda c: c.supervisions[0].speaker in chosen).to_eager()


@dataclass
class NaturalCondition:
    """An OOD condition that is a corpus part: adaptation audio from ``adapt``, tests on ``test``."""

    adapt: str
    test: str


def _default_conditions() -> dict[str, ConditionConfig]:
    return {
        "noise": ConditionConfig(noise="noise", snr_db=[0.0, 15.0]),
        "music": ConditionConfig(noise="music", snr_db=[5.0, 15.0]),
        "reverb": ConditionConfig(rir="real_rir"),
        "reverb_noise": ConditionConfig(rir="real_rir", noise="noise", snr_db=[5.0, 20.0]),
    }


@dataclass
class LibriSpeechConfig:
    """``egs/librispeech/conf/corpus.yaml``. Relative paths are relative to the work dir."""

    librispeech_dir: str = "corpus/download/LibriSpeech"
    musan_dir: str = "corpus/download/musan"
    rir_dir: str = "corpus/download/RIRS_NOISES"
    download: bool = False  # fetch missing corpora with Lhotse's download_* into the dirs' parents
    train_parts: list[str] = field(default_factory=lambda: ["train-clean-100"])
    dev_part: str = "dev-clean"
    test_part: str = "test-clean"
    adapt_part: str = "dev-clean"  # what the synthetic conditions' adaptation audio is made from
    conditions: dict[str, ConditionConfig] = field(default_factory=_default_conditions)
    natural: dict[str, NaturalCondition] = field(
        default_factory=lambda: {"other": NaturalCondition(adapt="dev-other", test="test-other")})
    # at most this many utterances per kind of split (train, dev, test, ood_adapt, ood); 0 or
    # absent: all. Evenly spaced over the sorted ids, so a subset keeps many speakers.
    subset: dict[str, int] = field(default_factory=dict)
    normalize_text: Literal["none", "lower"] = "none"
    seed: int = 0

    def __post_init__(self) -> None:
        known = set(LIBRISPEECH) | set(MINI_LIBRISPEECH)
        for spec in self.specs():
            parse_part(spec)
        for part in self.parts():
            if part not in known:
                raise ValueError(f"'{part}' is not a LibriSpeech part ({', '.join(sorted(known))})")
        if not self.train_parts:
            raise ValueError("train_parts is empty")
        for name in list(self.conditions) + list(self.natural):
            if not layout.is_split_name(layout.ood_set(name)):
                raise ValueError(f"condition '{name}': use lower-case letters and '_'")
        if set(self.conditions) & set(self.natural):
            raise ValueError(f"conditions and natural share a name: {sorted(set(self.conditions) & set(self.natural))}")
        if not disjoint(self.adapt_part, self.test_part) and self.conditions:
            raise ValueError("adapt_part must differ from test_part (adaptation and test audio are disjoint)")
        if not disjoint(self.dev_part, self.test_part):
            raise ValueError("dev_part and test_part share utterances (tuning on dev never sees the test set)")
        for name, nat in self.natural.items():
            if not disjoint(nat.adapt, nat.test):
                raise ValueError(f"natural condition '{name}': adapt and test are the same part")
        unknown = set(self.subset) - set(_SUBSET_KEYS)
        if unknown:
            raise ValueError(f"subset: unknown key '{sorted(unknown)[0]}' (known: {', '.join(_SUBSET_KEYS)})")

    def specs(self) -> list[str]:
        """Every part spec of the config (a part, or a speaker group of one), without repeats."""
        names = self.train_parts + [self.dev_part, self.test_part]
        names += [self.adapt_part] if self.conditions else []
        for nat in self.natural.values():
            names += [nat.adapt, nat.test]
        return list(dict.fromkeys(names))

    def parts(self) -> list[str]:
        """Every LibriSpeech part the recipe reads, without repeats."""
        return list(dict.fromkeys(parse_part(spec)[0] for spec in self.specs()))


def check_librispeech(corpus_dir: Path, parts: list[str]) -> None:
    """LibriSpeech's layout, before Lhotse reads it (Lhotse skips a missing file with a warning):
    ``<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` lines ``<utt> TEXT`` and an
    ``<utt>.flac`` beside each. Errors name the transcript file, the line and the utterance."""
    for part in parts:
        part_dir = corpus_dir / part
        if not part_dir.is_dir():
            raise NeuroselError(f"{part_dir}: LibriSpeech part '{part}' does not exist (set librispeech_dir in "
                                "conf/corpus.yaml, or download: true)")
        transcripts = sorted(part_dir.glob("*/*/*.trans.txt"))
        if not transcripts:
            raise NeuroselError(f"{part_dir}: no <speaker>/<chapter>/*.trans.txt files")
        for trans in transcripts:
            for n, raw in enumerate(trans.read_bytes().splitlines(), start=1):
                try:
                    fields = raw.decode("utf-8").split(maxsplit=1)
                except UnicodeDecodeError as e:
                    raise NeuroselError(f"{trans}:{n}: not valid UTF-8 (byte {e.start} of the line)") from e
                if not fields:
                    continue
                if len(fields) < 2:
                    raise NeuroselError(f"{trans}:{n}: utterance '{fields[0]}' has an empty transcript")
                if not (trans.parent / f"{fields[0]}.flac").is_file():
                    raise NeuroselError(f"{trans}:{n}: utterance '{fields[0]}': audio "
                                        f"{trans.parent / (fields[0] + '.flac')} does not exist")


def _download(cfg: LibriSpeechConfig, dirs: dict[str, Path]) -> None:
    """Lhotse's download_* for what is missing; each writes ``<parent>/<its folder name>``."""
    for key, name in (("librispeech", "LibriSpeech"), ("musan", "musan"), ("rir", "RIRS_NOISES")):
        if dirs[key].name != name:
            raise NeuroselError(f"download: true needs {key} in a folder named {name}, got {dirs[key]}")
    missing = [p for p in cfg.parts() if not (dirs["librispeech"] / p).is_dir()]
    if missing:
        download_librispeech(dirs["librispeech"].parent, dataset_parts=missing)
    if any(c.noise for c in cfg.conditions.values()) and not dirs["musan"].is_dir():
        download_musan(dirs["musan"].parent)
    if any(c.rir for c in cfg.conditions.values()) and not dirs["rir"].is_dir():
        download_rir_noise(dirs["rir"].parent)


def _noise_and_rirs(cfg: LibriSpeechConfig, dirs: dict[str, Path]) -> dict[str, RecordingSet]:
    """``{part: recordings}`` for every MUSAN and RIR part a condition uses."""
    noise_parts = sorted({c.noise for c in cfg.conditions.values() if c.noise})
    rir_parts = sorted({c.rir for c in cfg.conditions.values() if c.rir})
    out: dict[str, RecordingSet] = {}
    if noise_parts:
        if not dirs["musan"].is_dir():
            raise NeuroselError(f"{dirs['musan']}: MUSAN does not exist (set musan_dir, or download: true)")
        for part in noise_parts:
            if not (dirs["musan"] / part).is_dir():
                raise NeuroselError(f"{dirs['musan'] / part}: MUSAN part '{part}' does not exist")
        for part, manifests in prepare_musan(dirs["musan"], parts=noise_parts).items():
            out[part] = manifests["recordings"]
    if rir_parts:
        if not dirs["rir"].is_dir():
            raise NeuroselError(f"{dirs['rir']}: RIRS_NOISES does not exist (set rir_dir, or download: true)")
        for part, manifests in prepare_rir_noise(dirs["rir"], parts=rir_parts).items():
            out[part] = manifests["recordings"]
    for part, recordings in out.items():
        if len(recordings) == 0:
            raise NeuroselError(f"'{part}': no recordings found (MUSAN {dirs['musan']}, RIRs {dirs['rir']})")
        check_rate(recordings, SAMPLING_RATE, part)
    return out


def _subset(cuts: CutSet, n: int) -> CutSet:
    """At most ``n`` cuts, evenly spaced over the sorted ids (all when ``n`` is 0)."""
    ids = sorted(cuts.ids)
    if n <= 0 or n >= len(ids):
        return cuts
    step = len(ids) / n
    return cuts.subset(cut_ids=[ids[int(i * step)] for i in range(n)])


def _write_split(split_dir: Path, recordings: RecordingSet, supervisions: SupervisionSet) -> None:
    for obj, stem in ((recordings, "recordings"), (supervisions, "supervisions")):
        with atomic_path(split_dir / f"{stem}.jsonl.gz") as tmp:
            obj.to_file(tmp)


def _subset_key(split: str) -> str:
    """The ``subset`` key of a split: train, dev, test, ood_adapt or ood."""
    if layout.is_adapt_set(split):
        return "ood_adapt"
    return "ood" if layout.is_ood_set(split) else split


def _part_splits(cfg: LibriSpeechConfig) -> dict[str, list[str]]:
    """The splits that are LibriSpeech parts as they are: ``{split: [part, ...]}``."""
    out = {"train": list(cfg.train_parts), "dev": [cfg.dev_part], "test": [cfg.test_part]}
    for name, nat in cfg.natural.items():
        out[f"ood_adapt_{name}"] = [nat.adapt]
        out[f"ood_{name}"] = [nat.test]
    return out


def prepare_corpus(cfg: LibriSpeechConfig, work_dir: str | Path, num_jobs: int = 1, force: bool = False) -> list[str]:
    """Prepare every split of the recipe under ``<work_dir>/corpus/splits``; return their names.

    Each split is redone only when its part of the config or its source manifests changed (a
    ``.done`` marker per split); split folders no longer in the config are removed.
    """
    work = Path(work_dir)
    corpus = work / "corpus"
    splits_dir = corpus / "splits"
    dirs = {"librispeech": work / cfg.librispeech_dir, "musan": work / cfg.musan_dir, "rir": work / cfg.rir_dir}
    if cfg.download:
        _download(cfg, dirs)
    check_librispeech(dirs["librispeech"], cfg.parts())
    manifest_dir = corpus / "manifests"
    parts = prepare_librispeech(dirs["librispeech"], dataset_parts=cfg.parts(), output_dir=manifest_dir,
                                normalize_text=cfg.normalize_text, num_jobs=num_jobs)

    def cuts_of(names: list[str], limit: int) -> CutSet:
        groups = [(spec, *parse_part(spec)) for spec in names]
        try:
            cuts = CutSet.from_cuts(c for spec, n, k, of in groups for c in speaker_group(CutSet.from_manifests(
                recordings=parts[n]["recordings"], supervisions=parts[n]["supervisions"]), k, of))
        except NeuroselError as e:
            raise NeuroselError(f"{', '.join(names)}: {e}") from e
        return _subset(cuts, limit)

    def manifests_of(names: list[str]) -> list[Path]:
        return [manifest_dir / f"librispeech_{kind}_{parse_part(n)[0]}.jsonl.gz"
                for n in names for kind in ("recordings", "supervisions")]

    for split, names in _part_splits(cfg).items():
        limit = cfg.subset.get(_subset_key(split), 0)

        def copy_parts(split: str = split, names: list[str] = names, limit: int = limit) -> None:
            cuts = cuts_of(names, limit)
            _write_split(splits_dir / split, RecordingSet.from_recordings(c.recording for c in cuts),
                         SupervisionSet.from_segments(s for c in cuts for s in c.supervisions))

        settings = {"parts": names, "subset": limit, "normalize_text": cfg.normalize_text}
        run_once(f"corpus split {split}", splits_dir / split, settings, manifests_of(names), copy_parts, force=force)

    sources: dict[str, RecordingSet] = {}  # MUSAN and RIR recordings, scanned once if a condition is redone
    for name, condition in cfg.conditions.items():
        # adaptation audio from adapt_part with one half of the noises and RIRs, tests from test_part with the other
        for split, part, half in ((f"ood_adapt_{name}", cfg.adapt_part, 0), (f"ood_{name}", cfg.test_part, 1)):
            limit = cfg.subset.get(_subset_key(split), 0)
            seed = cfg.seed * 1_000_003 + zlib.crc32(split.encode())

            def render_condition(split: str = split, part: str = part, half: int = half, limit: int = limit,
                                 condition: ConditionConfig = condition, seed: int = seed, name: str = name) -> None:
                if not sources:
                    sources.update(_noise_and_rirs(cfg, dirs))
                noise = halves(sources[condition.noise], condition.noise)[half] if condition.noise else None
                rirs = halves(sources[condition.rir], condition.rir)[half] if condition.rir else None
                mixed = corrupt(cuts_of([part], limit), condition, noise, rirs, seed)
                shutil.rmtree(corpus / "audio" / split, ignore_errors=True)  # no stale files of an earlier config
                with atomic_path(splits_dir / split / "mix.jsonl.gz") as tmp:
                    mixed.to_file(tmp)
                recordings, supervisions = render(mixed, corpus / "audio" / split, f"-{name}", num_jobs)
                _write_split(splits_dir / split, recordings, supervisions)

            settings = {"part": part, "subset": limit, "condition": C.to_dict(condition), "seed": seed,
                        "normalize_text": cfg.normalize_text,
                        "musan_dir": str(dirs["musan"].resolve()), "rir_dir": str(dirs["rir"].resolve())}
            run_once(f"corpus split {split}", splits_dir / split, settings, manifests_of([part]), render_condition,
                     force=force)

    wanted = set(_part_splits(cfg)) | {f"{p}{c}" for c in cfg.conditions for p in ("ood_adapt_", "ood_")}
    for old in sorted(p for p in splits_dir.iterdir() if p.is_dir() and p.name not in wanted):
        log.info("removing split %s (no longer in the config)", old.name)
        shutil.rmtree(old)
        shutil.rmtree(corpus / "audio" / old.name, ignore_errors=True)
    return sorted(wanted)
