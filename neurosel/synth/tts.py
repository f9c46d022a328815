"""Run the Debian TTS engines (espeak-ng, flite, festival) to 16 kHz float audio.

All three are byte-deterministic for a given command line, so a pseudo-speaker and a sentence
always give the same samples. Speed and pitch are relative factors (1.0 = the voice's default):
espeak-ng gets ``-s 175*speed`` words per minute and ``-p 50+100*(pitch-1)`` (its 0-99 pitch
scale, about +-20 % F0 for pitch 0.8-1.2); flite and festival get a duration stretch of
``1/speed`` and a target mean F0 of ``f0_hz[voice]*pitch``.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from neurosel.errors import NeuroselError
from neurosel.synth.voices import Speaker, VoiceConfig

SAMPLE_RATE = 16000
ESPEAK_DEFAULT_WPM = 175
FESTIVAL_F0_STD_HZ = 14.0
PROGRAMS = {"espeak": ("espeak-ng", "espeak-ng"), "flite": ("flite", "flite"),
            "festival": ("text2wave", "festival festvox-kallpc16k")}
DEBIAN_PACKAGES = ("espeak-ng", "flite", "festival", "festvox-kallpc16k", "sox")


def synthesize(speaker: Speaker, text: str, voices: VoiceConfig) -> np.ndarray:
    """Speak ``text`` with ``speaker``: float64 samples in [-1, 1] at 16 kHz, shape ``(n,)``."""
    with tempfile.TemporaryDirectory(prefix="neurosel-tts-") as tmp:
        wav = Path(tmp) / "tts.wav"
        cmd, stdin = _command(speaker, text, voices, wav)
        proc = subprocess.run(cmd, input=stdin, capture_output=True)
        if proc.returncode != 0 or not wav.is_file():
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise NeuroselError(f"{speaker.engine} failed for voice {speaker.voice} on {text!r}: "
                                f"{err[-1] if err else 'no output'}")
        audio, rate = sf.read(wav, dtype="float64", always_2d=True)
    audio = audio.mean(axis=1)
    if audio.size == 0:
        raise NeuroselError(f"{speaker.engine} voice {speaker.voice} produced no audio for {text!r}")
    return to_16k(audio, rate)


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Resample ``audio`` (shape ``(n,)``) from ``rate`` to 16 kHz with a polyphase filter."""
    if rate == SAMPLE_RATE:
        return audio
    g = np.gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g)


def check_engines(voices: VoiceConfig, engines: set[str]) -> None:
    """Raise ``NeuroselError`` when an engine in ``engines`` or one of its configured voices is missing.

    The message names the Debian package to install, or the config key of the missing voice.
    """
    for engine in sorted(engines):
        program, package = PROGRAMS[engine]
        if shutil.which(program) is None:
            raise NeuroselError(f"{program} not found: install the Debian package(s) {package} "
                                f"(apt-get install {package})")
    if "espeak" in engines:
        known_accents, known_variants = _espeak_voices()
        for accent in voices.espeak.accents:
            if accent not in known_accents:
                raise NeuroselError(f"voices.espeak.accents: espeak-ng has no voice '{accent}'")
        for key in ("train_variants", "unseen_variants"):
            for variant in getattr(voices.espeak, key):
                if variant not in known_variants:
                    raise NeuroselError(f"voices.espeak.{key}: espeak-ng has no variant '{variant}' "
                                        "(see espeak-ng --voices=variant)")
    if "flite" in engines:
        known = set(_run(["flite", "-lv"]).split(":", 1)[-1].split())
        for key in ("train", "unseen"):
            for voice in getattr(voices.flite, key):
                if voice not in known:
                    raise NeuroselError(f"voices.flite.{key}: flite has no voice '{voice}' "
                                        f"(has: {', '.join(sorted(known))})")
    if "festival" in engines:
        for key in ("train", "unseen"):
            for voice in getattr(voices.festival, key):
                if not list(Path("/usr/share/festival/voices").glob(f"*/{voice}")):
                    raise NeuroselError(f"voices.festival.{key}: festival voice '{voice}' is not "
                                        "installed (e.g. apt-get install festvox-kallpc16k)")


def engine_versions() -> dict[str, str]:
    """Debian package versions of the engines and sox (recorded in the manifest); {} without dpkg."""
    if shutil.which("dpkg-query") is None:
        return {}
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", *DEBIAN_PACKAGES],
                          capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)


def _command(speaker: Speaker, text: str, voices: VoiceConfig, wav: Path) -> tuple[list[str], bytes | None]:
    """The engine command line writing ``wav``, and its stdin."""
    if speaker.engine == "espeak":
        wpm = round(ESPEAK_DEFAULT_WPM * speaker.speed)
        pitch = int(np.clip(round(50 + 100 * (speaker.pitch - 1)), 0, 99))
        return ["espeak-ng", "-v", speaker.voice, "-s", str(wpm), "-p", str(pitch), "-w", str(wav),
                text], None
    named = voices.flite if speaker.engine == "flite" else voices.festival
    f0 = named.f0_hz.get(speaker.voice)
    if speaker.engine == "flite":
        cmd = ["flite", "-voice", speaker.voice, "--setf", f"duration_stretch={1 / speaker.speed:.4f}"]
        if f0 is not None:
            cmd += ["--setf", f"int_f0_target_mean={f0 * speaker.pitch:.2f}"]
        return cmd + ["-t", text, "-o", str(wav)], None
    cmd = ["text2wave", "-eval", f"(voice_{speaker.voice})",
           "-eval", f"(Parameter.set 'Duration_Stretch {1 / speaker.speed:.4f})"]
    if f0 is not None:
        cmd += ["-eval", f"(set! int_lr_params '((target_f0_mean {f0 * speaker.pitch:.2f}) "
                         f"(target_f0_std {FESTIVAL_F0_STD_HZ * speaker.pitch:.2f}) "
                         "(model_f0_mean 170) (model_f0_std 34)))"]
    return cmd + ["-o", str(wav)], text.encode()


@functools.cache
def _espeak_voices() -> tuple[frozenset[str], frozenset[str]]:
    """(language/voice names, variant file names) that this espeak-ng knows."""
    accents: set[str] = set()
    for line in _run(["espeak-ng", "--voices"]).splitlines()[1:]:
        cols = line.split()
        if len(cols) >= 5:
            accents.update({cols[1], cols[4].split("/")[-1].lower()})
    variants = {line.split()[4].split("/", 1)[-1] for line in
                _run(["espeak-ng", "--voices=variant"]).splitlines()[1:] if len(line.split()) >= 5}
    return frozenset(accents), frozenset(variants)


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
