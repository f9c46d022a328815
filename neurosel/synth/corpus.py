"""Generate the synthetic corpus: plan, render every utterance over ``nj`` processes, write one
Kaldi data dir per split, the LM text and ``manifest.json``.

Layout of ``<corpus_dir>``::

    wav/<split>/<utt>.wav       16 kHz mono 16-bit PCM (wav/babble/ holds the babble sources)
    data/<split>/               wav.scp (absolute paths), text, utt2spk, spk2utt, utt2dur
    lm_text.txt                 train sentences plus more from the grammar, none of dev/test/OOD
    manifest.json               config, seed, voices, per-utterance parameters, totals; written last
    .fingerprint                hash of the config and text sources the wavs were made with

Resuming: wavs are written atomically and skipped when present; data dirs are written once all
their wavs exist; a corpus whose manifest carries the same fingerprint is left as it is. A
corpus dir made with another config or seed is refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sys
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable

import soundfile as sf
from tqdm import tqdm

from neurosel.errors import NeuroselError
from neurosel.io import write_json, write_text
from neurosel.synth.config import CorpusConfig, check_config
from neurosel.synth.plan import BABBLE, CorpusPlan, Utterance, plan_corpus, split_names
from neurosel.synth.render import make_utterance, output_paths, speed_utt_id, wav_path
from neurosel.synth.text import load_grammar
from neurosel.synth.tts import check_engines, engine_versions
from neurosel.synth.voices import base_voices

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def make_corpus(cfg: CorpusConfig, corpus_dir: str | Path, nj: int = 2, quiet: bool = False) -> dict[str, Any]:
    """Generate (or finish, or confirm) the corpus in ``corpus_dir``; return the manifest dict."""
    check_config(cfg)
    if nj < 1:
        raise NeuroselError(f"--nj: must be >= 1, got {nj}")
    corpus_dir = Path(corpus_dir).resolve()
    grammar = load_grammar(cfg.grammar_path())
    digest = fingerprint(cfg)
    manifest_file = corpus_dir / "manifest.json"
    if manifest_file.is_file():
        manifest = json.loads(manifest_file.read_text(encoding="utf-8"))
        if manifest.get("fingerprint") == digest:
            log.info("%s: corpus complete with this config and seed; nothing to do", corpus_dir)
            return manifest
    stamp = corpus_dir / ".fingerprint"
    if stamp.is_file() and stamp.read_text(encoding="utf-8").strip() != digest:
        raise NeuroselError(f"{corpus_dir}: made with another config or seed (see {manifest_file.name}); "
                            "remove it or choose another directory")
    engines = {e for pool in (base_voices(cfg.voices, False), base_voices(cfg.voices, True)) for e in pool}
    check_engines(cfg.voices, engines)
    write_text(stamp, digest + "\n")
    plan = plan_corpus(cfg, grammar)
    _remove_stale_temporaries(corpus_dir)
    babble = plan.splits.get(BABBLE, [])
    babble_files = tuple(wav_path(corpus_dir, BABBLE, u.utt_id) for u in babble)
    rest = [u for name in split_names(cfg) for u in plan.splits[name]]
    show = not quiet and sys.stderr.isatty()
    _render_all(babble, cfg, corpus_dir, babble_files, nj, show, "babble sources")
    _render_all(rest, cfg, corpus_dir, babble_files, nj, show, "utterances")
    splits = {name: write_data_dir(corpus_dir, plan.splits[name]) for name in split_names(cfg)}
    write_text(corpus_dir / "lm_text.txt", "".join(f"{s}\n" for s in plan.lm_text))
    manifest = _manifest(cfg, digest, plan, splits, corpus_dir, len(grammar.vocabulary()))
    write_json(manifest_file, manifest)
    log.info("%s: %d utterances, %.2f h", corpus_dir, manifest["totals"]["utterances"], manifest["totals"]["hours"])
    return manifest


def fingerprint(cfg: CorpusConfig) -> str:
    """SHA-256 of the resolved config and the grammar and word lists it reads."""
    h = hashlib.sha256(json.dumps([FORMAT_VERSION, dataclasses.asdict(cfg)], sort_keys=True).encode())
    grammar = cfg.grammar_path()
    for path in [grammar] + sorted((grammar.parent / "lists").glob("*.txt")):
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def write_data_dir(corpus_dir: Path, utts: list[Utterance]) -> dict[str, Any]:
    """Write ``data/<split>/`` for one split's utterances (and their speed-perturbed copies).

    Returns ``{"utterances": n, "hours": h}``. Raises ``NeuroselError`` if any wav is missing.
    """
    rows: list[tuple[str, str, str, Path]] = []
    for u in utts:
        ids = [(u.utt_id, u.speaker.id)] + [(speed_utt_id(u.utt_id, f), speed_utt_id(u.speaker.id, f))
                                             for f in u.speed_factors]
        rows += [(utt, spk, u.text, path) for (utt, spk), path in zip(ids, output_paths(corpus_dir, u))]
    rows.sort(key=lambda r: r[0].encode())
    missing = next((r[3] for r in rows if not r[3].is_file()), None)
    if missing is not None:
        raise NeuroselError(f"{missing}: wav missing; rerun to finish the corpus")
    durations = {utt: _duration(path) for utt, _, _, path in rows}
    spk2utt: dict[str, list[str]] = {}
    for utt, spk, _, _ in rows:
        spk2utt.setdefault(spk, []).append(utt)
    out = corpus_dir / "data" / utts[0].split
    write_text(out / "wav.scp", _lines((utt, str(path)) for utt, _, _, path in rows))
    write_text(out / "text", _lines((utt, text) for utt, _, text, _ in rows))
    write_text(out / "utt2spk", _lines((utt, spk) for utt, spk, _, _ in rows))
    write_text(out / "spk2utt", _lines((spk, " ".join(u)) for spk, u in sorted(spk2utt.items(),
                                                                               key=lambda kv: kv[0].encode())))
    write_text(out / "utt2dur", _lines((utt, f"{d:.4f}") for utt, d in durations.items()))
    return {"utterances": len(rows), "hours": sum(durations.values()) / 3600}


def _render_all(utts: list[Utterance], cfg: CorpusConfig, corpus_dir: Path, babble_files: tuple[Path, ...],
                nj: int, show: bool, what: str) -> None:
    """Render ``utts`` with ``nj`` worker processes (in this process when ``nj`` is 1)."""
    todo = [u for u in utts if not all(p.is_file() for p in output_paths(corpus_dir, u))]
    if len(todo) < len(utts):
        log.info("%d of %d %s already rendered", len(utts) - len(todo), len(utts), what)
    if not todo:
        return
    job = functools.partial(make_utterance, cfg=cfg, corpus_dir=corpus_dir, babble_files=babble_files)
    with tqdm(total=len(todo), desc=what, unit="utt", disable=not show) as bar:
        if nj == 1:
            for u in todo:
                job(u)
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=nj) as pool:
            for _ in pool.map(job, todo, chunksize=4):
                bar.update()


def _remove_stale_temporaries(corpus_dir: Path) -> None:
    """Delete temporary wavs that a killed run left behind (``atomic_path`` names them ``.<name>.*.tmp.wav``)."""
    for tmp in (corpus_dir / "wav").glob("*/.*.tmp.wav"):
        tmp.unlink()


def _manifest(cfg: CorpusConfig, digest: str, plan: CorpusPlan, splits: dict[str, dict[str, Any]],
              corpus_dir: Path, vocabulary: int) -> dict[str, Any]:
    """What was generated: config, voices and per-utterance parameters per split, and totals."""
    described = {}
    for name, utts in plan.splits.items():
        entry: dict[str, Any] = {
            "condition": utts[0].condition,
            "base_utterances": len(utts),
            "speakers": sorted({u.speaker.id for u in utts}),
            "voices": sorted({u.speaker.base_voice for u in utts}),
            "parameter_summary": _summary(u.params for u in utts),
            "per_utterance": {u.utt_id: {"speaker": u.speaker.id, **u.params} for u in utts},
        }
        if utts[0].speed_factors:
            entry["speed_factors"] = list(utts[0].speed_factors)
        if name in splits:
            entry |= {"utterances": splits[name]["utterances"], "hours": round(splits[name]["hours"], 4)}
        described[name] = entry
    return {
        "generator": "neurosel.synth", "fingerprint": digest, "seed": cfg.seed,
        "config": dataclasses.asdict(cfg), "engines": engine_versions(), "sample_rate": 16000,
        "corpus_dir": str(corpus_dir), "grammar": str(cfg.grammar_path()), "vocabulary_size": vocabulary,
        "lm_sentences": len(plan.lm_text),
        "splits": described,
        "totals": {"utterances": sum(s["utterances"] for s in splits.values()),
                   "hours": round(sum(s["hours"] for s in splits.values()), 4)},
    }


def _summary(params: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per parameter: min/mean/max of numbers, counts of strings, counts of list lengths."""
    values: dict[str, list[Any]] = {}
    for p in params:
        for k, v in p.items():
            values.setdefault(k, []).append(len(v) if isinstance(v, list) else v)
    out: dict[str, Any] = {}
    for k, vs in values.items():
        if isinstance(vs[0], str) or k == "babble_sources":
            out[k] = dict(sorted(Counter(map(str, vs)).items()))
        else:
            out[k] = {"min": min(vs), "mean": round(sum(vs) / len(vs), 3), "max": max(vs)}
    return out


def _duration(path: Path) -> float:
    info = sf.info(path)
    return info.frames / info.samplerate


def _lines(pairs: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{a} {b}\n" for a, b in pairs)
