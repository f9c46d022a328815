"""Pseudo-speakers for the synthetic corpus: a TTS voice with a speaking rate and a pitch.

A base voice is an espeak-ng accent with a variant (``en-us+m3``), or a flite/festival voice
(``slt``, ``kal_diphone``). Every base voice is either *seen* (train, dev and test speak with it;
test with speed x pitch combinations train never had) or *unseen* (held out for the OOD sets), as
the config lists them; a pseudo-speaker is a base voice times one speed factor times one pitch
factor. OOD speakers are therefore new voice/variant combinations of the same engines, never a
seen voice at another speed.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from neurosel.errors import NeuroselError

ENGINES = ("espeak", "flite", "festival")


@dataclass
class EspeakVoices:
    """espeak-ng base voices: every accent combined with every variant."""

    accents: list[str] = field(default_factory=lambda: [
        "en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc"])
    train_variants: list[str] = field(default_factory=lambda: [
        "m1", "m2", "m3", "m5", "m6", "m8", "f1", "f2", "f3", "f5", "klatt", "klatt3", "klatt5",
        "adam", "benjamin", "caleb", "edward", "Henrique", "miguel", "anika", "linda", "steph"])
    unseen_variants: list[str] = field(default_factory=lambda: [
        "m4", "m7", "f4", "klatt2", "antonio", "Hugo", "Annie", "Andrea"])
    weight: float = 0.6  # share of each split's utterances


@dataclass
class NamedVoices:
    """flite or festival base voices by name.

    ``f0_hz`` is the voice's mean F0 that a pitch factor scales; a voice without an entry keeps
    its own pitch (its speakers differ by speed only).
    """

    train: list[str] = field(default_factory=list)
    unseen: list[str] = field(default_factory=list)
    f0_hz: dict[str, float] = field(default_factory=dict)
    weight: float = 0.0


@dataclass
class VoiceConfig:
    """The voice pool: engines, their seen/unseen voices, and the speed/pitch factors."""

    espeak: EspeakVoices = field(default_factory=EspeakVoices)
    flite: NamedVoices = field(default_factory=lambda: NamedVoices(
        train=["kal16", "kal", "slt", "awb", "rms"], unseen=[],
        f0_hz={"kal16": 95.0, "kal": 95.0, "slt": 170.0, "awb": 130.0}, weight=0.4))
    festival: NamedVoices = field(default_factory=lambda: NamedVoices(
        train=["kal_diphone"], f0_hz={"kal_diphone": 105.0}))
    speeds: list[float] = field(default_factory=lambda: [0.85, 0.92, 1.0, 1.08, 1.15])
    pitches: list[float] = field(default_factory=lambda: [0.8, 0.9, 1.0, 1.1, 1.2])


@dataclass(frozen=True)
class Speaker:
    """One pseudo-speaker: ``engine`` voice ``voice`` at relative ``speed`` and ``pitch``."""

    engine: str
    voice: str
    speed: float
    pitch: float

    @property
    def id(self) -> str:
        """Kaldi speaker id without '-' (so that ``<spk>-...`` utterance ids sort by speaker)."""
        short = {"espeak": "es", "flite": "fl", "festival": "fe"}[self.engine]
        name = re.sub(r"[^a-z0-9+]", "", self.voice.lower()).replace("+", "_")
        return f"{short}_{name}_s{round(self.speed * 100):03d}_p{round(self.pitch * 100):03d}"

    @property
    def base_voice(self) -> str:
        """``engine:voice``, the voice without speed and pitch."""
        return f"{self.engine}:{self.voice}"


def base_voices(cfg: VoiceConfig, unseen: bool) -> dict[str, list[str]]:
    """Voice names per engine (engines with weight 0 omitted): the seen or the unseen ones."""
    out: dict[str, list[str]] = {}
    if cfg.espeak.weight > 0:
        variants = cfg.espeak.unseen_variants if unseen else cfg.espeak.train_variants
        out["espeak"] = [f"{a}+{v}" for a in cfg.espeak.accents for v in variants]
    for engine in ("flite", "festival"):
        named: NamedVoices = getattr(cfg, engine)
        if named.weight > 0:
            out[engine] = list(named.unseen if unseen else named.train)
    return out


def speaker_pool(cfg: VoiceConfig, unseen: bool) -> dict[str, list[Speaker]]:
    """Every pseudo-speaker per engine, in a fixed order (voices x speeds x pitches)."""
    pool: dict[str, list[Speaker]] = {}
    for engine, voices in base_voices(cfg, unseen).items():
        speakers: dict[str, Speaker] = {}
        for voice in voices:
            pitches = cfg.pitches if _has_pitch(cfg, engine, voice) else [1.0]
            for speed in cfg.speeds:
                for pitch in pitches:
                    spk = Speaker(engine, voice, float(speed), float(pitch))
                    speakers.setdefault(spk.id, spk)
        pool[engine] = list(speakers.values())
    return pool


def assign_speakers(
    pool: dict[str, list[Speaker]],
    weights: dict[str, float],
    n_utts: int,
    utts_per_speaker: int,
    rng: np.random.Generator,
) -> list[Speaker]:
    """Speaker of each of ``n_utts`` utterances, in utterance order.

    Utterances are shared among engines by ``weights`` (largest remainder), each engine uses
    ``ceil(n / utts_per_speaker)`` speakers drawn from its pool (all of them if fewer), and the
    speakers take turns; the resulting list is shuffled by ``rng``.
    """
    engines = [e for e in ENGINES if e in pool and pool[e] and weights.get(e, 0) > 0]
    if not engines:
        raise NeuroselError("voices: no engine has both a positive weight and voices for this split")
    total = sum(weights[e] for e in engines)
    exact = [n_utts * weights[e] / total for e in engines]
    counts = [math.floor(x) for x in exact]
    for i in sorted(range(len(engines)), key=lambda i: counts[i] - exact[i])[: n_utts - sum(counts)]:
        counts[i] += 1
    out: list[Speaker] = []
    for engine, count in zip(engines, counts):
        if count == 0:
            continue
        order = rng.permutation(len(pool[engine]))
        n_speakers = min(len(order), math.ceil(count / utts_per_speaker))
        chosen = [pool[engine][i] for i in order[:n_speakers]]
        out.extend(chosen[i % n_speakers] for i in range(count))
    return [out[i] for i in rng.permutation(len(out))]


def engine_weights(cfg: VoiceConfig) -> dict[str, float]:
    """Configured share of utterances per engine."""
    return {"espeak": cfg.espeak.weight, "flite": cfg.flite.weight, "festival": cfg.festival.weight}


def check_voice_config(cfg: VoiceConfig) -> None:
    """Raise ``NeuroselError`` naming the key for empty or overlapping voice lists and bad factors."""
    if not any(w > 0 for w in engine_weights(cfg).values()):
        raise NeuroselError("voices: every engine weight is 0; give espeak, flite or festival a weight > 0")
    for key, values in (("voices.speeds", cfg.speeds), ("voices.pitches", cfg.pitches)):
        if not values or any(not 0.5 <= v <= 2.0 for v in values):
            raise NeuroselError(f"{key}: expected a non-empty list of factors in [0.5, 2.0], got {values}")
    for engine, weight in engine_weights(cfg).items():
        if weight < 0:
            raise NeuroselError(f"voices.{engine}.weight: must be >= 0, got {weight}")
    if cfg.espeak.weight > 0:
        e = cfg.espeak
        for key, values in (("accents", e.accents), ("train_variants", e.train_variants),
                            ("unseen_variants", e.unseen_variants)):
            if not values:
                raise NeuroselError(f"voices.espeak.{key}: empty list while voices.espeak.weight > 0")
        _disjoint("voices.espeak", e.train_variants, e.unseen_variants)
    for engine in ("flite", "festival"):
        named: NamedVoices = getattr(cfg, engine)
        if named.weight > 0:
            if not named.train:
                raise NeuroselError(f"voices.{engine}.train: empty list while voices.{engine}.weight > 0")
            _disjoint(f"voices.{engine}", named.train, named.unseen)
    if not any(base_voices(cfg, unseen=True).values()):
        raise NeuroselError("voices: no unseen voice for the OOD sets (voices.espeak.unseen_variants, "
                            "voices.flite.unseen, voices.festival.unseen)")


def _has_pitch(cfg: VoiceConfig, engine: str, voice: str) -> bool:
    return engine == "espeak" or voice in getattr(cfg, engine).f0_hz


def _disjoint(key: str, train: list[str], unseen: list[str]) -> None:
    both = sorted(set(train) & set(unseen))
    if both:
        raise NeuroselError(f"{key}: '{both[0]}' is listed as both a train and an unseen voice")
