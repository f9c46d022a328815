"""Reading and validating a Kaldi data dir before Lhotse imports it.

Lhotse's importer drops unreadable recordings with a warning; a recipe must instead stop with an
error naming the file, the line and the utterance. The checks follow Kaldi's
``validate_data_dir.sh``: well-formed UTF-8 lines, unique and sorted ids, the same ids in
``text``, ``utt2spk`` and ``wav.scp`` (or ``segments``), non-empty transcripts, readable audio of the
expected sample rate and channel count, segments inside their recording.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from neurosel.errors import NeuroselError


@dataclass(frozen=True)
class AudioCheck:
    """Limits every recording must satisfy."""

    sampling_rate: int = 16000
    min_duration: float = 0.1
    max_duration: float = 60.0


def read_table(path: Path, *, allow_empty_value: bool = False, must_sort: bool = True) -> dict[str, str]:
    """Read a Kaldi ``id value...`` file into an ordered dict, checking every line.

    Errors name ``path:line`` and the id: non-UTF-8 bytes, a line without a value, a duplicate id,
    ids out of ``LC_ALL=C`` sort order (Kaldi tools rely on it).
    """
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file")
    table: dict[str, str] = {}
    previous = None
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NeuroselError(f"{path}:{n}: not valid UTF-8 (byte {e.start})") from e
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise NeuroselError(f"{path}:{n}: '{key}' has no value")
        if key in table:
            raise NeuroselError(f"{path}:{n}: duplicate id '{key}'")
        if must_sort and previous is not None and key.encode() < previous.encode():
            raise NeuroselError(f"{path}:{n}: '{key}' is out of order (sort with LC_ALL=C)")
        table[key] = value
        previous = key
    return table


def _same_ids(a: dict[str, str], a_path: Path, b: dict[str, str], b_path: Path) -> None:
    for key in a:
        if key not in b:
            raise NeuroselError(f"{b_path}: no entry for '{key}' (present in {a_path.name})")
    for key in b:
        if key not in a:
            raise NeuroselError(f"{a_path}: no entry for '{key}' (present in {b_path.name})")


def _check_audio(args: tuple[str, str, AudioCheck, Path]) -> float:
    """Open one ``wav.scp`` entry and return its duration; raise with the reason otherwise."""
    reco_id, source, check, scp = args
    where = f"{scp}: recording '{reco_id}'"
    if source.endswith("|"):
        proc = subprocess.run(source[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            raise NeuroselError(f"{where}: command failed with code {proc.returncode}: {source}")
        import io

        handle: object = io.BytesIO(proc.stdout)
        name = source
    else:
        if not Path(source).is_file():
            raise NeuroselError(f"{where}: audio file {source} does not exist")
        handle, name = source, source
    try:
        audio, rate = sf.read(handle, dtype="float32", always_2d=True)
    except Exception as e:
        raise NeuroselError(f"{where}: cannot read audio {name} ({str(e).splitlines()[0]})") from e
    if not source.endswith("|") and _riff_truncated(Path(source)):
        raise NeuroselError(f"{where}: audio {name} is truncated (shorter than its WAV header says)")
    if rate != check.sampling_rate:
        raise NeuroselError(f"{where}: sample rate {rate} Hz, expected {check.sampling_rate} Hz ({name})")
    if audio.shape[1] != 1:
        raise NeuroselError(f"{where}: {audio.shape[1]} channels, expected mono ({name})")
    duration = len(audio) / rate
    if duration < check.min_duration:
        raise NeuroselError(f"{where}: {duration:.3f} s is shorter than {check.min_duration} s ({name})")
    if duration > check.max_duration:
        raise NeuroselError(f"{where}: {duration:.1f} s is longer than {check.max_duration} s ({name})")
    if not np.any(audio):
        raise NeuroselError(f"{where}: audio is all zeros ({name})")
    return duration


def _riff_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE file's ``data`` chunk declares more bytes than the file holds
    (libsndfile reads such a file without complaint, silently shortened)."""
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return False
        size = path.stat().st_size
        while True:
            chunk = f.read(8)
            if len(chunk) < 8:
                return False
            chunk_size = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return chunk_size != 0xFFFFFFFF and f.tell() + chunk_size > size
            f.seek(chunk_size + (chunk_size & 1), 1)


def validate_data_dir(data_dir: str | Path, check: AudioCheck, num_jobs: int = 1) -> dict[str, float]:
    """Validate a Kaldi data dir; return ``{recording_id: duration}``.

    Raises ``NeuroselError`` at the first problem, naming the file, the line or id, and the reason.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise NeuroselError(f"{d}: data dir does not exist")
    wav = read_table(d / "wav.scp")
    text = read_table(d / "text", allow_empty_value=True)
    utt2spk = read_table(d / "utt2spk")
    for utt, words in text.items():
        if not words.strip():
            raise NeuroselError(f"{d / 'text'}: utterance '{utt}' has an empty transcript")
    _same_ids(text, d / "text", utt2spk, d / "utt2spk")
    segments_path = d / "segments"
    segments = read_table(segments_path) if segments_path.is_file() else None
    if segments is None:
        _same_ids(text, d / "text", wav, d / "wav.scp")
    else:
        _same_ids(text, d / "text", segments, segments_path)
    jobs = [(rid, src, check, d / "wav.scp") for rid, src in wav.items()]
    if num_jobs > 1 and len(jobs) > 50:
        with ProcessPoolExecutor(num_jobs) as pool:
            durations = list(pool.map(_check_audio, jobs, chunksize=max(1, len(jobs) // (8 * num_jobs))))
    else:
        durations = [_check_audio(j) for j in jobs]
    reco2dur = dict(zip(wav, durations))
    if segments is not None:
        _check_segments(segments, segments_path, reco2dur)
    return reco2dur


def _check_segments(segments: dict[str, str], path: Path, reco2dur: dict[str, float]) -> None:
    for utt, value in segments.items():
        fields = value.split()
        if len(fields) != 3:
            raise NeuroselError(f"{path}: '{utt}' needs '<recording> <start> <end>', got '{value}'")
        reco, start_s, end_s = fields
        if reco not in reco2dur:
            raise NeuroselError(f"{path}: '{utt}' names recording '{reco}' that is not in wav.scp")
        try:
            start, end = float(start_s), float(end_s)
        except ValueError as e:
            raise NeuroselError(f"{path}: '{utt}' has non-numeric times '{value}'") from e
        if end == -1:
            end = reco2dur[reco]
        if not 0 <= start < end:
            raise NeuroselError(f"{path}: '{utt}' has start {start} not before end {end}")
        if end > reco2dur[reco] + 0.01:
            raise NeuroselError(
                f"{path}: '{utt}' ends at {end:.2f} s, past the end of '{reco}' ({reco2dur[reco]:.2f} s)"
            )
