"""Render one planned utterance to its wav file(s): TTS, level, silence, noise floor, condition.

The signal chain (all at 16 kHz, float until the final 16-bit rounding):
TTS -> active level ``level_dbfs`` -> leading/trailing silence -> [reverb: convolve a synthetic
RIR, restore the level] -> coloured noise floor at ``floor_snr_db`` (so no utterance contains
digital silence, not even a reverb tail) -> [noise: babble or coloured noise at ``snr_db``;
telephone: band-pass, 8 kHz, codec, 16 kHz] -> peak limit -> 16-bit PCM.
Training utterances also get speed-perturbed copies of that final signal (as Kaldi's
``sox speed`` does on recorded audio). Signal randomness comes from ``rng_for(seed, split,
index, 1)``, so an utterance renders the same bytes in any process and any order.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf

from neurosel.errors import NeuroselError
from neurosel.io import atomic_path
from neurosel.synth import conditions as cond
from neurosel.synth.config import CorpusConfig
from neurosel.synth.plan import Utterance, rng_for
from neurosel.synth.tts import SAMPLE_RATE, synthesize


def speed_utt_id(utt_id: str, factor: float) -> str:
    """Kaldi's id of a speed-perturbed copy: ``sp0.9-<utt>`` (the speaker gets the same prefix)."""
    return f"sp{factor:g}-{utt_id}"


def wav_path(corpus_dir: Path, split: str, utt_id: str) -> Path:
    """``<corpus_dir>/wav/<split>/<utt_id>.wav``."""
    return corpus_dir / "wav" / split / f"{utt_id}.wav"


def output_paths(corpus_dir: Path, utt: Utterance) -> list[Path]:
    """Every wav file an utterance produces: its own and one per speed factor."""
    ids = [utt.utt_id] + [speed_utt_id(utt.utt_id, f) for f in utt.speed_factors]
    return [wav_path(corpus_dir, utt.split, i) for i in ids]


def make_utterance(utt: Utterance, cfg: CorpusConfig, corpus_dir: Path, babble_files: tuple[Path, ...]) -> None:
    """Write the utterance's wav files that do not exist yet, each atomically.

    ``babble_files`` are the babble source wavs in plan order (needed by noisy conditions only).
    """
    paths = output_paths(corpus_dir, utt)
    if all(p.is_file() for p in paths):
        return
    audio = render(utt, cfg, babble_files)
    signals = [audio] + [cond.peak_limit(cond.speed_perturb(audio, f)) for f in utt.speed_factors]
    for path, signal in zip(paths, signals):
        if not path.is_file():
            with atomic_path(path) as tmp:
                sf.write(tmp, cond.to_int16(signal), SAMPLE_RATE, subtype="PCM_16", format="WAV")


def render(utt: Utterance, cfg: CorpusConfig, babble_files: tuple[Path, ...]) -> np.ndarray:
    """The utterance's final float signal in [-1, 1] at 16 kHz, shape ``(n,)``."""
    p = utt.params
    speech = cond.set_level(synthesize(utt.speaker, utt.text, cfg.voices), float(p["level_dbfs"]))
    if utt.condition == "babble_source":
        return cond.peak_limit(speech)
    rng = rng_for(cfg.seed, utt.split, utt.index, 1)
    x = cond.pad_silence(speech, float(p["lead_s"]), float(p["trail_s"]))
    if utt.condition in ("reverb", "reverb_noise"):
        rir = cond.room_impulse_response(float(p["t60_s"]), float(p["drr_db"]), float(p["predelay_ms"]), rng)
        x = cond.set_level(cond.reverberate(x, rir), float(p["level_dbfs"]))
    x = cond.mix_at_snr(x, cond.coloured_noise(len(x), float(p["floor_alpha"]), rng), float(p["floor_snr_db"]))
    if utt.condition in ("noise", "reverb_noise"):
        if p["noise_type"] == "babble":
            sources = [read_babble(babble_files[i]) for i in p["babble_sources"]]
            noise = cond.babble(sources, len(x), rng)
        else:
            noise = cond.coloured_noise(len(x), float(p["noise_alpha"]), rng)
        x = cond.mix_at_snr(x, noise, float(p["snr_db"]))
    if utt.condition == "telephone":
        x = cond.telephone(x, str(p["codec"]), *cfg.telephone.band_hz)
    return cond.peak_limit(x)


@functools.lru_cache(maxsize=256)
def read_babble(path: Path) -> np.ndarray:
    """One babble source signal (written before any noisy utterance), read once per process."""
    if not path.is_file():
        raise NeuroselError(f"{path}: babble source missing")
    return sf.read(path, dtype="float64")[0]
