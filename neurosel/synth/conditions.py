"""Acoustic conditions applied to 16 kHz float audio (numpy/scipy; sox only for GSM, with -R).

Every function takes and returns float64 sample arrays of shape ``(n,)`` at 16 kHz, and draws
any randomness from the ``numpy.random.Generator`` it is given. Levels are mean squares; the
speech level is the *active* level (frames within 40 dB of the loudest frame), so leading and
trailing silence does not lower it and an SNR means speech-while-talking over noise.
"""

from __future__ import annotations

import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfilt

from neurosel.errors import NeuroselError

SAMPLE_RATE = 16000
TELEPHONE_RATE = 8000
FRAME = 320  # 20 ms
ACTIVE_RANGE_DB = 40.0
PEAK_LIMIT = 0.99


def active_level(x: np.ndarray) -> float:
    """Mean square of the 20 ms frames within 40 dB of the loudest frame of ``x`` (shape ``(n,)``)."""
    n = max(1, len(x) // FRAME)
    frames = np.resize(x, n * FRAME).reshape(n, FRAME) if len(x) >= FRAME else x[None, :]
    power = np.mean(frames**2, axis=1)
    loud = power >= power.max() * 10 ** (-ACTIVE_RANGE_DB / 10)
    return float(np.mean(power[loud])) if power.max() > 0 else 0.0


def set_level(x: np.ndarray, level_dbfs: float) -> np.ndarray:
    """Scale ``x`` so that its active level is ``level_dbfs`` (dB relative to full scale 1.0)."""
    level = active_level(x)
    if level <= 0:
        raise NeuroselError("cannot set the level of digital silence")
    return x * np.sqrt(10 ** (level_dbfs / 10) / level)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g*noise`` with ``g`` such that active_level(speech) / mean(g*noise)^2 is ``snr_db``.

    ``noise`` must have the length of ``speech``.
    """
    if len(noise) != len(speech):
        raise ValueError(f"noise has {len(noise)} samples, speech {len(speech)}")
    gain = np.sqrt(active_level(speech) / (np.mean(noise**2) * 10 ** (snr_db / 10)))
    return speech + gain * noise


def coloured_noise(n: int, alpha: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise of ``n`` samples with power spectrum ~ 1/f^alpha (0 white, 1 pink, 2 brown)."""
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    freqs[0] = freqs[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum * freqs ** (-alpha / 2), n)
    return noise / (np.std(noise) + 1e-12)


def pad_silence(x: np.ndarray, lead_s: float, trail_s: float) -> np.ndarray:
    """``x`` with ``lead_s`` and ``trail_s`` seconds of zeros before and after it."""
    return np.concatenate([np.zeros(round(lead_s * SAMPLE_RATE)), x, np.zeros(round(trail_s * SAMPLE_RATE))])


def babble(sources: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Sum of ``sources`` (speech signals), each looped from a random offset to ``n`` samples and
    scaled to the same active level; normalised to unit mean square."""
    out = np.zeros(n)
    for src in sources:
        looped = np.resize(np.roll(src, -int(rng.integers(len(src)))), n)
        level = active_level(looped)
        if level > 0:
            out += looped / np.sqrt(level)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def room_impulse_response(t60: float, drr_db: float, predelay_ms: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic RIR: a unit direct path, then after ``predelay_ms`` a Gaussian tail decaying by
    60 dB in ``t60`` seconds, scaled so that direct / tail energy is ``drr_db``. Shape ``(t60*16k,)``."""
    n = max(round(t60 * SAMPLE_RATE), round(predelay_ms * SAMPLE_RATE / 1000) + 2)
    start = round(predelay_ms * SAMPLE_RATE / 1000) + 1
    t = np.arange(n - start) / SAMPLE_RATE
    tail = rng.standard_normal(n - start) * np.exp(-3 * np.log(10) * t / t60)
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    rir = np.zeros(n)
    rir[0] = 1.0
    rir[start:] = tail
    return rir


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``rir``; the output keeps the reverberant tail (``len(x)+len(rir)-1``)."""
    return fftconvolve(x, rir)


def telephone(x: np.ndarray, codec: str, low_hz: float, high_hz: float) -> np.ndarray:
    """A telephone channel: ``low_hz``-``high_hz`` band-pass, 8 kHz, ``codec`` (``mulaw`` or
    ``gsm``), back to 16 kHz. Same length as ``x``; no energy above 4 kHz."""
    sos = butter(6, [low_hz, high_hz], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = resample_poly(sosfilt(sos, x), 1, 2)
    if codec == "mulaw":
        coded = mulaw_decode(mulaw_encode(narrow))
    elif codec == "gsm":
        coded = gsm_roundtrip(narrow)
    else:
        raise NeuroselError(f"telephone.codecs: unknown codec '{codec}' (mulaw or gsm)")
    return np.resize(resample_poly(coded, 2, 1), len(x))


def mulaw_encode(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """8-bit mu-law codes (0..255) of ``x`` in [-1, 1]: companding then a uniform 256-level quantiser."""
    y = np.sign(x) * np.log1p(mu * np.minimum(np.abs(x), 1.0)) / np.log1p(mu)
    return np.clip(np.floor((y + 1) / 2 * (mu + 1)), 0, mu).astype(np.uint8)


def mulaw_decode(codes: np.ndarray, mu: int = 255) -> np.ndarray:
    """Inverse of ``mulaw_encode``: each code maps to the centre of its interval (never exactly 0)."""
    y = (codes.astype(np.float64) + 0.5) / (mu + 1) * 2 - 1
    return np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu


def gsm_roundtrip(x: np.ndarray) -> np.ndarray:
    """Encode 8 kHz ``x`` with GSM 06.10 full rate and decode it again (``sox -R``, no dither)."""
    with tempfile.TemporaryDirectory(prefix="neurosel-gsm-") as tmp:
        src, coded, out = (Path(tmp) / name for name in ("in.wav", "coded.gsm", "out.wav"))
        sf.write(src, to_int16(x), TELEPHONE_RATE, subtype="PCM_16")
        for cmd in (["sox", "-R", str(src), str(coded)], ["sox", "-R", str(coded), "-b", "16", str(out)]):
            proc = subprocess.run(cmd, capture_output=True)
            if proc.returncode != 0:
                raise NeuroselError(f"sox failed ({' '.join(cmd)}): {proc.stderr.decode(errors='replace').strip()}")
        decoded, _ = sf.read(out, dtype="float64")
    return np.resize(decoded, len(x))


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Kaldi-style speed perturbation (tempo and pitch together): ``len(x)/factor`` samples."""
    ratio = Fraction(factor).limit_denominator(100)
    return resample_poly(x, ratio.denominator, ratio.numerator)


def peak_limit(x: np.ndarray) -> np.ndarray:
    """Scale ``x`` down so that no sample exceeds 0.99 in magnitude (no clipping)."""
    peak = np.max(np.abs(x))
    return x * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else x


def to_int16(x: np.ndarray) -> np.ndarray:
    """Round float samples in [-1, 1] to 16-bit PCM."""
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
