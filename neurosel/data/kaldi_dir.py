"""Reading and validating a Kaldi data dir before Lhotse imports it.

Lhotse's importer drops unreadable recordings with a warning; a recipe must instead stop with an
error naming the file, the line and the id. The checks follow Kaldi's ``validate_data_dir.sh``:
well-formed UTF-8 lines, unique and sorted ids (``LC_ALL=C``), the same ids in ``text``,
``utt2spk`` and ``wav.scp`` (or ``segments``), ``spk2utt`` and ``reco2dur`` consistent with them,
non-empty transcripts, readable audio (files or Kaldi pipe commands ``cmd ... |``) of the expected
sample rate and channel count, neither truncated nor practically silent, segments inside their
recording. Every problem of a data dir is collected: the error names the first, the log lists them
all.

Truncated audio is named as such: a WAV file (or a pipe command's WAV output) whose ``data`` chunk
declares more bytes than arrive, and a file of another format (FLAC, ...) that fails to decode, or
decodes fewer frames, before the frame count its header declares. (``sox x.flac -t wav - |`` on a
truncated FLAC exits 0 and writes a WAV header declaring the full length, then less audio.)

Practically silent audio: a peak level below ``AudioCheck.min_peak_dbfs`` (default -60 dBFS, 32
steps of 16-bit audio; one step is -90.3 dBFS). The quietest of the 8400 utterances of the default
synthetic corpus peaks at -22.3 dBFS, so the default leaves real speech a margin of over 35 dB
while a recording scaled down to about the level of one 16-bit step is refused. The peak, not the
RMS level, is used: it does not fall as the silence around an utterance grows.
"""

from __future__ import annotations

import io
import logging
import re
import subprocess
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import soundfile as sf

from neurosel.errors import NeuroselError

log = logging.getLogger(__name__)

_LOGGED_PROBLEMS = 20  # problems listed in the log; the rest are counted


@dataclass(frozen=True)
class AudioCheck:
    """Limits every utterance (a recording, or a segment when there is a ``segments`` file) and
    every recording must satisfy."""

    sampling_rate: int = 16000
    min_duration: float = 0.1
    max_duration: float = 60.0
    # Audio whose peak level is below this (dBFS, 0 = full scale) is practically silent.
    min_peak_dbfs: float = -60.0


def read_table(path: Path, *, allow_empty_value: bool = False, must_sort: bool = True) -> dict[str, str]:
    """Read a Kaldi ``id value...`` file into an ordered dict; raise at its first bad line.

    Errors name ``path:line`` and the id: non-UTF-8 bytes, a line without a value, a duplicate id,
    ids out of ``LC_ALL=C`` sort order (Kaldi tools rely on it).
    """
    problems: list[str] = []
    table = read_entries(path, problems, allow_empty_value=allow_empty_value, must_sort=must_sort)
    if problems:
        raise NeuroselError(problems[0])
    return table.values


@dataclass
class Entries:
    """A Kaldi ``id value...`` file: ``values`` in file order and the 1-based line of each id."""

    path: Path
    values: dict[str, str]
    lines: dict[str, int]

    def at(self, key: str) -> str:
        """``path:line`` of ``key``, for messages."""
        return f"{self.path}:{self.lines[key]}"


def read_entries(path: Path, problems: list[str], *, allow_empty_value: bool = False,
                 must_sort: bool = True) -> Entries:
    """Read ``path`` line by line, appending one message per bad line to ``problems``.

    Bad lines (not UTF-8, no value, duplicate id) are left out of the result; an id out of order
    is kept. A missing file is one problem and an empty result.
    """
    entries = Entries(path, {}, {})
    if not path.is_file():
        problems.append(f"{path}: no such file")
        return entries
    previous: str | None = None
    for n, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            key = raw.decode("utf-8", errors="replace").split(maxsplit=1)[0]
            problems.append(f"{path}:{n}: '{key}': not valid UTF-8 (byte {e.start} of the line)")
            continue
        parts = line.strip().split(maxsplit=1)
        key = parts[0]
        value = parts[1].strip() if len(parts) > 1 else ""
        if key in entries.values:
            problems.append(f"{path}:{n}: duplicate id '{key}' (first on line {entries.lines[key]})")
            continue
        if must_sort and previous is not None and key.encode() < previous.encode():
            problems.append(f"{path}:{n}: '{key}' is out of order after '{previous}' (sort with LC_ALL=C)")
        previous = key
        if not value and not allow_empty_value:
            problems.append(f"{path}:{n}: '{key}' has no value")
            continue
        entries.values[key] = value
        entries.lines[key] = n
    return entries


def _same_ids(a: Entries, b: Entries, problems: list[str]) -> None:
    """One problem per id that is in one file and not in the other, at the line that has it."""
    for key in a.values:
        if key not in b.values:
            problems.append(f"{a.at(key)}: '{key}' has no entry in {b.path.name}")
    for key in b.values:
        if key not in a.values:
            problems.append(f"{b.at(key)}: '{key}' has no entry in {a.path.name}")


def _check_spk2utt(spk2utt: Entries, utt2spk: Entries, problems: list[str]) -> None:
    """``spk2utt`` must list, for every speaker of ``utt2spk``, exactly its utterances."""
    expected: dict[str, set[str]] = {}
    for utt, spk in utt2spk.values.items():
        expected.setdefault(spk, set()).add(utt)
    for spk, value in spk2utt.values.items():
        listed = set(value.split())
        if spk not in expected:
            problems.append(f"{spk2utt.at(spk)}: speaker '{spk}' is not a speaker of utt2spk")
        elif listed != expected[spk]:
            utt = sorted(listed ^ expected[spk])[0]
            side = "does not list" if utt in expected[spk] else "lists"
            problems.append(f"{spk2utt.at(spk)}: speaker '{spk}' {side} utterance '{utt}', unlike utt2spk")
    for spk, utts in expected.items():
        if spk not in spk2utt.values:
            utt = sorted(utts)[0]
            problems.append(f"{utt2spk.at(utt)}: speaker '{spk}' of '{utt}' has no entry in spk2utt")


@dataclass(frozen=True)
class _AudioJob:
    reco_id: str
    source: str  # a file path, or a shell command ending with '|'
    where: str  # "wav.scp:line: recording 'id'"
    check: AudioCheck
    check_duration: bool  # False with segments: the limits then apply to the segments


_ARK_OFFSET = re.compile(r".+\.ark:\d+$")


def _check_audio(job: _AudioJob) -> tuple[float | None, str | None]:
    """Open one ``wav.scp`` entry: ``(duration, None)``, or ``(None, problem)``."""
    source, where = job.source, job.where
    is_pipe = source.endswith("|")
    if is_pipe:
        proc = subprocess.run(source[:-1], shell=True, capture_output=True)
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()
            reason = f": {detail[-1]}" if detail else ""
            return None, f"{where}: command failed with code {proc.returncode}{reason} ({source})"
        if not proc.stdout:
            return None, f"{where}: command wrote no audio to its output ({source})"
        declared = _riff_declared_frames(io.BytesIO(proc.stdout), len(proc.stdout))
        if declared is not None:
            frames, arrived, rate = declared
            return None, (f"{where}: audio is truncated: the WAV its command writes declares {frames / rate:.3f} s, "
                          f"only {arrived / rate:.3f} s arrive (a truncated input file?) ({source})")
        handle: object = io.BytesIO(proc.stdout)
    else:
        if not Path(source).is_file():
            hint = " (Kaldi archive offsets are not supported: write files)" if _ARK_OFFSET.match(source) else ""
            return None, f"{where}: audio file {source} does not exist{hint}"
        handle = source
    if not is_pipe:
        with open(source, "rb") as f:
            declared = _riff_declared_frames(f, Path(source).stat().st_size)
        if declared is not None:
            frames, arrived, rate = declared
            return None, (f"{where}: audio {source} is truncated: its WAV header declares {frames / rate:.3f} s, "
                          f"the file holds {arrived / rate:.3f} s")
    decoded = _decode(handle)
    if isinstance(decoded, str):
        return None, f"{where}: {decoded.format(source=source)}"
    audio, rate = decoded
    if rate != job.check.sampling_rate:
        return None, f"{where}: sample rate {rate} Hz, expected {job.check.sampling_rate} Hz ({source})"
    if audio.shape[1] != 1:
        return None, f"{where}: {audio.shape[1]} channels, expected mono ({source})"
    duration = len(audio) / rate
    if job.check_duration:
        problem = _duration_problem(duration, job.check)
        if problem:
            return None, f"{where}: {problem} ({source})"
    if not np.any(audio):
        return None, f"{where}: audio is all zeros ({source})"
    peak_dbfs = 20 * float(np.log10(np.max(np.abs(audio))))
    if peak_dbfs < job.check.min_peak_dbfs:
        return None, (f"{where}: audio {source} is practically silent: peak level {peak_dbfs:.1f} dBFS, below "
                      f"min_peak_dbfs {job.check.min_peak_dbfs:g} dBFS")
    return duration, None


def _decode(handle: object) -> tuple[np.ndarray, int] | str:
    """``(audio float32 frames x channels, sample rate)``, or a problem (``{source}`` in it
    stands for the file or command). Decoding that fails, or ends, before the frame count the
    header declares is a truncated file."""
    try:
        f = sf.SoundFile(handle)
    except Exception as e:  # libsndfile's errors have no common type
        return f"cannot read audio {{source}} ({_first_line(e)})"
    with f:
        rate, declared = f.samplerate, f.frames
        blocks: list[np.ndarray] = []
        try:
            for block in f.blocks(blocksize=16384, dtype="float32", always_2d=True):
                blocks.append(block)
        except Exception as e:
            got = sum(len(b) for b in blocks)
            if 0 < declared and got < declared:
                return (f"audio {{source}} is truncated: its header declares {declared / rate:.3f} s, decoding fails "
                        f"after {got / rate:.3f} s ({_first_line(e)})")
            return f"cannot read audio {{source}} ({_first_line(e)})"
        audio = np.concatenate(blocks) if blocks else np.zeros((0, f.channels), np.float32)
    if 0 < declared and len(audio) < declared:
        return (f"audio {{source}} is truncated: its header declares {declared / rate:.3f} s, only "
                f"{len(audio) / rate:.3f} s decode")
    return audio, rate


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__).replace("{", "{{").replace("}", "}}")


def _duration_problem(duration: float, check: AudioCheck) -> str | None:
    if duration < check.min_duration:
        return f"{duration:.3f} s is shorter than {check.min_duration} s"
    if duration > check.max_duration:
        return f"{duration:.1f} s is longer than {check.max_duration} s"
    return None


def _riff_declared_frames(f: BinaryIO, size: int) -> tuple[int, int, int] | None:
    """For a RIFF/WAVE stream of ``size`` bytes whose ``data`` chunk declares more bytes than the
    stream holds (libsndfile reads it without complaint, silently shortened): ``(declared frames,
    frames present, sample rate)``; otherwise None."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    frame_bytes, rate = 0, 0
    while True:
        chunk = f.read(8)
        if len(chunk) < 8:
            return None
        chunk_size = int.from_bytes(chunk[4:], "little")
        if chunk[:4] == b"fmt ":
            fmt = f.read(min(chunk_size, 16))
            if len(fmt) < 16:
                return None
            rate = int.from_bytes(fmt[4:8], "little")
            frame_bytes = int.from_bytes(fmt[12:14], "little")  # block align
            f.seek(chunk_size - len(fmt) + (chunk_size & 1), 1)
            continue
        if chunk[:4] == b"data":
            present = size - f.tell()
            if chunk_size == 0xFFFFFFFF or chunk_size <= present or not frame_bytes or not rate:
                return None
            return chunk_size // frame_bytes, max(present, 0) // frame_bytes, rate
        f.seek(chunk_size + (chunk_size & 1), 1)


def _check_segments(segments: Entries, reco2dur: dict[str, float | None], check: AudioCheck,
                    problems: list[str]) -> None:
    """Each line ``<utt> <recording> <start> <end>`` names a recording of ``wav.scp`` and lies
    inside it (``end`` -1: to the end); its duration is within the limits. Recordings whose audio
    failed (duration ``None``) were reported already."""
    for utt, value in segments.values.items():
        where = segments.at(utt)
        fields = value.split()
        if len(fields) != 3:
            problems.append(f"{where}: '{utt}' needs '<recording> <start> <end>', got '{value}'")
            continue
        reco, start_s, end_s = fields
        if reco not in reco2dur:
            problems.append(f"{where}: '{utt}' names recording '{reco}' that is not in wav.scp")
            continue
        try:
            start, end = float(start_s), float(end_s)
        except ValueError:
            problems.append(f"{where}: '{utt}' has non-numeric times '{start_s} {end_s}'")
            continue
        length = reco2dur[reco]
        if length is None:
            continue
        if end == -1:
            end = length
        if not 0 <= start < end:
            problems.append(f"{where}: '{utt}' has start {start} not before end {end}")
        elif end > length + 0.01:
            problems.append(f"{where}: '{utt}' ends at {end:.2f} s, past the end of '{reco}' ({length:.2f} s)")
        else:
            problem = _duration_problem(end - start, check)
            if problem:
                problems.append(f"{where}: '{utt}' {problem}")


def _check_reco2dur(reco2dur_file: Entries, measured: dict[str, float | None], problems: list[str]) -> None:
    """Given durations must be numbers within 1 % (at least 50 ms) of the audio's."""
    for reco, value in reco2dur_file.values.items():
        try:
            given = float(value)
        except ValueError:
            problems.append(f"{reco2dur_file.at(reco)}: '{reco}' has a non-numeric duration '{value}'")
            continue
        actual = measured.get(reco)
        if actual is not None and abs(given - actual) > max(0.05, 0.01 * actual):
            problems.append(f"{reco2dur_file.at(reco)}: '{reco}' says {given:.3f} s but its audio lasts "
                            f"{actual:.3f} s")


def _run_audio_jobs(jobs: list[_AudioJob], num_jobs: int) -> list[tuple[float | None, str | None]]:
    if num_jobs > 1 and len(jobs) > 50:
        with ProcessPoolExecutor(num_jobs) as pool:
            return list(pool.map(_check_audio, jobs, chunksize=max(1, len(jobs) // (8 * num_jobs))))
    return [_check_audio(job) for job in jobs]


def audio_problems(entries: list[tuple[str, str, float]], where: str, check: AudioCheck,
                   num_jobs: int = 1) -> list[str]:
    """The problems of recordings given as ``(id, file path or 'command |', duration a manifest
    declares)``, messages starting ``<where> '<id>'``: unreadable, truncated, practically silent,
    other rate or channels, or lasting other than declared (by more than 1 %, at least 50 ms)."""
    jobs = [_AudioJob(reco, source, f"{where} '{reco}'", check, False) for reco, source, _ in entries]
    problems = []
    for job, (reco, _, declared), (duration, problem) in zip(jobs, entries, _run_audio_jobs(jobs, num_jobs)):
        if problem:
            problems.append(problem)
        elif duration is not None and abs(duration - declared) > max(0.05, 0.01 * declared):
            problems.append(f"{job.where}: its audio lasts {duration:.3f} s, the manifest says {declared:.3f} s "
                            f"({job.source})")
    return problems


def data_dir_problems(data_dir: Path, check: AudioCheck, num_jobs: int = 1) -> tuple[list[str], dict[str, float]]:
    """Every problem of a Kaldi data dir (messages naming file, line and id) and the duration in
    seconds of each readable recording of ``wav.scp``."""
    problems: list[str] = []
    wav = read_entries(data_dir / "wav.scp", problems)
    text = read_entries(data_dir / "text", problems, allow_empty_value=True)
    utt2spk = read_entries(data_dir / "utt2spk", problems)
    for utt, words in text.values.items():
        if not words.strip():
            problems.append(f"{text.at(utt)}: utterance '{utt}' has an empty transcript")
    _same_ids(text, utt2spk, problems)
    segments = read_entries(data_dir / "segments", problems) if (data_dir / "segments").is_file() else None
    _same_ids(text, segments if segments is not None else wav, problems)
    if (data_dir / "spk2utt").is_file():
        _check_spk2utt(read_entries(data_dir / "spk2utt", problems), utt2spk, problems)
    reco2dur_file = read_entries(data_dir / "reco2dur", problems) if (data_dir / "reco2dur").is_file() else None
    if reco2dur_file is not None:
        _same_ids(wav, reco2dur_file, problems)

    jobs = [_AudioJob(reco, source, f"{wav.at(reco)}: recording '{reco}'", check, segments is None)
            for reco, source in wav.values.items()]
    results = _run_audio_jobs(jobs, num_jobs)
    measured: dict[str, float | None] = {}
    for job, (duration, problem) in zip(jobs, results):
        measured[job.reco_id] = duration
        if problem:
            problems.append(problem)
    if segments is not None:
        _check_segments(segments, measured, check, problems)
    if reco2dur_file is not None:
        _check_reco2dur(reco2dur_file, measured, problems)
    return problems, {k: v for k, v in measured.items() if v is not None}


def validate_data_dir(data_dir: str | Path, check: AudioCheck, num_jobs: int = 1) -> dict[str, float]:
    """Validate a Kaldi data dir; return ``{recording_id: duration in seconds}``.

    Raises ``NeuroselError`` naming the first problem (file, line, id, reason) and how many more
    there are; with more than one, the log lists them.
    """
    d = Path(data_dir)
    if not d.is_dir():
        raise NeuroselError(f"{d}: data dir does not exist")
    problems, durations = data_dir_problems(d, check, num_jobs)
    if not problems:
        return durations
    if len(problems) > 1:
        for p in problems[:_LOGGED_PROBLEMS]:
            log.error("%s", p)
        if len(problems) > _LOGGED_PROBLEMS:
            log.error("... and %d more problems in %s", len(problems) - _LOGGED_PROBLEMS, d)
        raise NeuroselError(f"{problems[0]} (and {len(problems) - 1} more problems in this data dir, "
                            "listed in the log)")
    raise NeuroselError(problems[0])
