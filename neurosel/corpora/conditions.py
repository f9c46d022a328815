"""Synthetic out-of-domain conditions for recorded speech: reverberation with room impulse
responses (RIRs) and additive MUSAN noise, music or speech at a drawn SNR, with Lhotse's own
augmentation (``Cut.reverb_rir``, ``CutSet.mix``), rendered once to FLAC files so that every later
stage reads plain recordings.

Adaptation and test sets of a condition draw their noises and RIRs from disjoint halves of the
noise and RIR recordings (``halves``), so a test set never hears a noise instance the adaptation
audio had. Every draw comes from ``random.Random(seed)`` over cuts sorted by id: the same seed
gives the same audio.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
from lhotse import CutSet, Recording, RecordingSet, SupervisionSet
from lhotse.utils import fastcopy

from neurosel.errors import NeuroselError
from neurosel.io import atomic_path

log = logging.getLogger(__name__)

NoiseKind = Literal["noise", "music", "speech"]  # MUSAN parts
RirKind = Literal["real_rir", "sim_rir"]  # parts of Lhotse's RIRS_NOISES recipe
_PEAK = 0.99  # rendered audio is scaled down to this peak when a mix would clip


@dataclass
class ConditionConfig:
    """One synthetic OOD condition: reverberation by an RIR of part ``rir`` and/or MUSAN part
    ``noise`` added at an SNR drawn uniformly from ``snr_db`` (dB, [low, high])."""

    noise: NoiseKind | None = None
    snr_db: list[float] = field(default_factory=lambda: [5.0, 15.0])
    rir: RirKind | None = None

    def __post_init__(self) -> None:
        if self.noise is None and self.rir is None:
            raise ValueError("a condition needs noise, rir or both")
        if len(self.snr_db) != 2 or self.snr_db[0] > self.snr_db[1]:
            raise ValueError(f"snr_db must be [low, high], got {self.snr_db}")


def halves(recordings: RecordingSet, what: str) -> tuple[RecordingSet, RecordingSet]:
    """Split ``recordings`` (sorted by id) into two disjoint halves, alternating: (adaptation
    half, test half). ``what`` names the recordings in the error when there are fewer than two."""
    ordered = sorted(recordings, key=lambda r: r.id)
    if len(ordered) < 2:
        raise NeuroselError(f"{what}: {len(ordered)} recording(s); an adaptation and a test half need at least 2")
    return RecordingSet.from_recordings(ordered[0::2]), RecordingSet.from_recordings(ordered[1::2])


def check_rate(recordings: RecordingSet, sampling_rate: int, what: str) -> None:
    """Every recording must have the speech's sampling rate (no resampling happens here)."""
    for rec in recordings:
        if rec.sampling_rate != sampling_rate:
            source = rec.sources[0].source if rec.sources else rec.id
            raise NeuroselError(f"{what}: {source} is {rec.sampling_rate} Hz, expected {sampling_rate} Hz")


def corrupt(cuts: CutSet, condition: ConditionConfig, noise: RecordingSet | None, rirs: RecordingSet | None,
            seed: int) -> CutSet:
    """Lazily corrupted copies of ``cuts`` (same ids, in id order): each reverberated with an RIR
    drawn from ``rirs`` (its first channel, output energy kept) if the condition has one, then
    mixed with noise recordings from ``noise`` drawn by ``CutSet.mix`` at a random offset until
    the utterance is covered."""
    rng = random.Random(seed)
    ordered = sorted(cuts, key=lambda c: c.id)
    if condition.rir is not None:
        if rirs is None:
            raise NeuroselError(f"condition needs RIRs of part '{condition.rir}'")
        rir_list = sorted(rirs, key=lambda r: r.id)
        ordered = [c.reverb_rir(rng.choice(rir_list), affix_id=False) for c in ordered]
    out = CutSet.from_cuts(ordered)
    if condition.noise is not None:
        if noise is None:
            raise NeuroselError(f"condition needs MUSAN part '{condition.noise}'")
        noise_cuts = CutSet.from_manifests(recordings=noise).to_eager()
        out = out.mix(noise_cuts, snr=tuple(condition.snr_db), preserve_id="left", seed=rng.randrange(2**31),
                      random_mix_offset=True)
    return out.to_eager()


def render(cuts: CutSet, audio_dir: Path, id_suffix: str, num_jobs: int = 1) -> tuple[RecordingSet, SupervisionSet]:
    """Write the audio of every cut to ``audio_dir/<utterance id><id_suffix>.flac`` (16-bit, scaled down to
    a 0.99 peak if it would clip) and return the recordings and supervisions of the files, with
    ids ``<utterance id><id_suffix>`` and the cut's transcript and speaker (one supervision per cut)."""
    audio_dir.mkdir(parents=True, exist_ok=True)
    cut_list = list(cuts)
    jobs = [(cut_list[i::num_jobs], audio_dir, id_suffix) for i in range(max(num_jobs, 1))]
    if num_jobs > 1 and len(cut_list) > 1:
        with ProcessPoolExecutor(num_jobs) as pool:
            parts = list(pool.map(_render_share, jobs))
    else:
        parts = [_render_share(job) for job in jobs]
    pairs = sorted((pair for part in parts for pair in part), key=lambda p: p[0].id)
    return (RecordingSet.from_recordings(r for r, _ in pairs),
            SupervisionSet.from_segments(s for _, s in pairs))


def _render_share(job: tuple[list, Path, str]) -> list:
    """Render some cuts (one worker's share); returns (recording, supervision) pairs."""
    import torch

    torch.set_num_threads(1)  # Lhotse's FFT convolution: one thread per worker process
    cuts, audio_dir, id_suffix = job
    out = []
    for cut in cuts:
        new_id = f"{cut.supervisions[0].id}{id_suffix}"  # the utterance id (Lhotse's cut ids add a channel)
        audio = cut.load_audio()[0].astype(np.float64)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > _PEAK:
            audio *= _PEAK / peak
        path = audio_dir / f"{new_id}.flac"
        with atomic_path(path) as tmp:
            sf.write(tmp, audio, cut.sampling_rate, subtype="PCM_16", format="FLAC")
        recording = Recording.from_file(path, recording_id=new_id)
        supervision = fastcopy(cut.supervisions[0], id=new_id, recording_id=new_id, start=0.0,
                               duration=recording.duration)
        out.append((recording, supervision))
    return out
