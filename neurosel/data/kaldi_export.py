"""Kaldi data dirs that Kaldi's own tools accept: the export of stage 0, and the rules it keeps.

Kaldi's ``utils/validate_data_dir.sh --no-feats`` must pass on an exported dir and
``utils/fix_data_dir.sh`` must change nothing in it. ``kaldi_rules_problems`` encodes what those two
scripts (and ``validate_text.pl``, ``utt2spk_to_spk2utt.pl``, ``spk2utt_to_utt2spk.pl`` that they
call) require, read from Kaldi's ``egs/wsj/s5/utils``:

- ``utt2spk``, ``spk2utt``, ``text`` and ``wav.scp`` exist; ``utt2spk`` and ``spk2utt`` are not
  empty.
- Every line ends with a newline; no empty lines. Every file's first fields are unique and sorted
  in ``LC_ALL=C`` (byte) order, so ``sort -k1,1 -u`` leaves it unchanged.
- ``utt2spk`` has lines ``<utt> <spk>`` (one space: ``fix_data_dir.sh`` regenerates it so) and is
  also sorted when sorted on the speaker first (``sort -k2 -C``): speaker ids must sort as their
  utterances do, which making them prefixes of the utterance ids achieves.
- ``spk2utt`` is exactly what ``utt2spk_to_spk2utt.pl`` makes of ``utt2spk``: speakers in order
  of first appearance, each with its utterances in ``utt2spk`` order, single spaces.
- ``text``: the utterances of ``utt2spk`` in the same order; valid UTF-8; no transcript that is
  empty; no non-printable character, no carriage return, no whitespace but space and tab; none
  of the symbols ``<s>``, ``</s>``, ``#0`` as a word (``grep -w``).
- Without ``segments``, ``wav.scp`` is indexed by utterance (the ids of ``utt2spk``); with it,
  ``segments`` has lines ``<utt> <recording> <start> <end>`` (single spaces, ``end > start``) for
  the utterances of ``utt2spk``, and ``wav.scp`` holds exactly the recordings ``segments`` names.
  No ``wav.scp`` entry is a path starting with ``~``.
- Optional files, when present: ``reco2file_and_channel`` (``<reco> <file> A|B``) and
  ``reco2dur`` (a positive number) per recording; ``utt2dur`` (positive), ``utt2num_frames``
  (a positive integer), ``utt2lang``, ``utt2uniq``, ``vad.scp``, ``feats.scp``, ``utt2warp``
  per utterance of ``utt2spk``; ``spk2gender`` (``m`` or ``f``), ``cmvn.scp``, ``spk2warp`` per
  speaker of ``spk2utt``.

``export_files`` makes the files of such a dir from Lhotse recordings and supervisions (the files of
Lhotse's ``export_to_kaldi``, plus ``spk2utt``, speaker-sorted ids and ``spk2gender`` instead of
Lhotse's non-Kaldi ``utt2gender``); ``check_data_dir`` checks a dir on disk (``python -m
neurosel.data.kaldi_export DIR`` from the shell).
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from lhotse import Recording, RecordingSet, SupervisionSet

from neurosel.errors import NeuroselError

log = logging.getLogger(__name__)

# Files keyed by utterance, speaker, or recording (the utterance without segments) that Kaldi checks.
PER_UTTERANCE = ("text", "utt2dur", "utt2num_frames", "utt2lang", "utt2uniq", "vad.scp", "feats.scp", "utt2warp")
PER_SPEAKER = ("spk2gender", "cmvn.scp", "spk2warp")
PER_RECORDING = ("reco2dur", "reco2file_and_channel")
KNOWN = ("utt2spk", "spk2utt", "wav.scp", "segments") + PER_UTTERANCE + PER_SPEAKER + PER_RECORDING
REQUIRED = ("utt2spk", "spk2utt", "text", "wav.scp")
# validate_data_dir.sh greps the text for these with -w (LC_ALL=C: word characters are [A-Za-z0-9_])
_ILLEGAL_SYMBOL = re.compile(r"(?<![A-Za-z0-9_])(<s>|</s>|#0)(?![A-Za-z0-9_])")
_FIELDS = re.compile(r"[ \t]+")  # awk's default field separator


def text_problem(words: str) -> str | None:
    """What Kaldi refuses in a transcript (without its utterance id), or None."""
    if not words.strip(" \t"):
        return "empty transcript"
    for ch in words:
        if ch == "\r":
            return "a carriage return (CR) in the transcript"
        if ch.isspace() and ch not in " \t":
            return f"whitespace U+{ord(ch):04X} other than space and tab in the transcript"
        if not ch.isprintable() and not ch.isspace():
            return f"non-printable character U+{ord(ch):04X} in the transcript"
    match = _ILLEGAL_SYMBOL.search(words)
    if match:
        return f"the symbol '{match.group(1)}' in the transcript (Kaldi reserves it)"
    return None


class _Table:
    """One Kaldi file: ``(line number, key, fields, line)`` rows; format problems go to ``problems``."""

    def __init__(self, where: str, data: bytes, problems: list[str]) -> None:
        self.where = where
        self.rows: list[tuple[int, str, list[str], str]] = []
        if data and not data.endswith(b"\n"):
            problems.append(f"{where}: the last line has no newline")
        previous: str | None = None
        lines = data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n") if data else []
        for n, raw in enumerate(lines, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"{where}:{n}: not valid UTF-8 (byte {e.start} of the line)")
                continue
            fields = _FIELDS.split(line.strip(" \t"))
            if not line.strip(" \t"):
                problems.append(f"{where}:{n}: empty line")
                continue
            key = fields[0]
            if line[0] in " \t":
                problems.append(f"{where}:{n}: '{key}': the line starts with whitespace")
            if previous is not None and key.encode() <= previous.encode():
                what = "a duplicate of" if key == previous else "out of LC_ALL=C order after"
                problems.append(f"{where}:{n}: '{key}' is {what} '{previous}'")
            previous = key
            self.rows.append((n, key, fields, line))

    @property
    def keys(self) -> list[str]:
        return [key for _, key, _, _ in self.rows]


def _same_keys(table: _Table, expected: list[str], what: str, problems: list[str]) -> None:
    """``table``'s keys are exactly ``expected`` (both sorted): name the first difference."""
    keys = table.keys
    if keys == expected:
        return
    have, want = set(keys), set(expected)
    extra = next((k for k in keys if k not in want), None)
    missing = next((k for k in expected if k not in have), None)
    if extra is not None:
        problems.append(f"{table.where}: '{extra}' is not one of the {what}")
    elif missing is not None:
        problems.append(f"{table.where}: no line for '{missing}', one of the {what}")


def _fields(table: _Table, count: int, form: str, problems: list[str]) -> None:
    for n, key, fields, _ in table.rows:
        if len(fields) != count:
            problems.append(f"{table.where}:{n}: '{key}' needs the form '{form}'")


def _positive(table: _Table, integer: bool, problems: list[str], low: float = 0.0, high: float = float("inf")) -> None:
    for n, key, fields, _ in table.rows:
        value = fields[1] if len(fields) == 2 else ""
        try:
            number = float(value)
            ok = low < number < high and (not integer or number == int(number))
        except ValueError:
            ok = False
        if not ok:
            kind = "an integer" if integer else "a number"
            bound = f"between {low} and {high}" if high != float("inf") else f"above {low:g}"
            problems.append(f"{table.where}:{n}: '{key}' needs {kind} {bound}, got '{value}'")


def kaldi_rules_problems(files: Mapping[str, bytes], where: str) -> list[str]:
    """Every way the data dir made of ``files`` (name -> content) breaks the rules above; messages
    name ``<where>/<file>:<line>`` and the id."""
    problems: list[str] = []
    for name in REQUIRED:
        if name not in files:
            problems.append(f"{where}/{name}: no such file (Kaldi requires it)")
        elif not files[name] and name != "text":
            problems.append(f"{where}/{name}: empty file")
    if problems:
        return problems
    t = {name: _Table(f"{where}/{name}", files[name], problems) for name in KNOWN if name in files}

    utt2spk = t["utt2spk"]
    _fields(utt2spk, 2, "<utt> <spk>", problems)
    for n, key, fields, line in utt2spk.rows:
        if len(fields) == 2 and line != f"{fields[0]} {fields[1]}":
            problems.append(f"{utt2spk.where}:{n}: '{key}': not '<utt> <spk>' with one space "
                            "(fix_data_dir.sh would rewrite it)")
    pairs = [(fields[1], line) for _, _, fields, line in utt2spk.rows if len(fields) == 2]
    by_speaker = sorted(pairs, key=lambda p: (p[0].encode(), p[1].encode()))
    if pairs != by_speaker:
        i = next(i for i, (a, b) in enumerate(zip(pairs, by_speaker)) if a != b)
        problems.append(f"{utt2spk.where}: not sorted when sorted on the speaker first: '{pairs[i][1]}' where "
                        f"'{by_speaker[i][1]}' belongs (make speaker ids prefixes of utterance ids)")
    utts = utt2spk.keys

    expected_spk2utt: dict[str, list[str]] = {}
    for _, key, fields, _ in utt2spk.rows:
        if len(fields) == 2:
            expected_spk2utt.setdefault(fields[1], []).append(key)
    want = [f"{spk} {' '.join(us)}" for spk, us in expected_spk2utt.items()]
    have = [line for _, _, _, line in t["spk2utt"].rows]
    if have != want:
        i = next((i for i, (a, b) in enumerate(zip(have, want)) if a != b), min(len(have), len(want)))
        got = f"'{have[i]}'" if i < len(have) else "nothing"
        need = f"'{want[i]}'" if i < len(want) else "nothing"
        problems.append(f"{t['spk2utt'].where}:{i + 1}: {got} where utt2spk makes {need} "
                        "(utt2spk_to_spk2utt.pl)")
    speakers = list(expected_spk2utt)

    text = t["text"]
    if not files["text"]:
        problems.append(f"{text.where}: empty file")
    _same_keys(text, utts, "utterances of utt2spk", problems)
    for n, key, _, line in text.rows:
        problem = text_problem(line.strip(" \t")[len(key):])
        if problem:
            problems.append(f"{text.where}:{n}: utterance '{key}': {problem}")

    wav = t["wav.scp"]
    for n, key, fields, _ in wav.rows:
        if len(fields) < 2:
            problems.append(f"{wav.where}:{n}: '{key}' has no audio")
        elif fields[1].startswith("~"):
            problems.append(f"{wav.where}:{n}: '{key}': a path starting with '~' (fopen does not expand it)")
    if "segments" in t:
        segments = t["segments"]
        for n, key, fields, line in segments.rows:
            if len(fields) != 4:
                problems.append(f"{segments.where}:{n}: '{key}' needs the form '<utt> <recording> <start> <end>'")
                continue
            try:
                ok = float(fields[3]) > float(fields[2])
            except ValueError:
                ok = False
            if not ok:
                problems.append(f"{segments.where}:{n}: '{key}': end {fields[3]} is not a number after start {fields[2]}")
            if line != " ".join(fields):
                problems.append(f"{segments.where}:{n}: '{key}': fields not separated by one space "
                                "(fix_data_dir.sh would rewrite it)")
        _same_keys(segments, utts, "utterances of utt2spk", problems)
        recordings = sorted({fields[1] for _, _, fields, _ in segments.rows if len(fields) == 4}, key=str.encode)
        _same_keys(wav, recordings, "recordings that segments names", problems)
    else:
        recordings = utts
        _same_keys(wav, utts, "utterances of utt2spk (no segments: wav.scp is indexed by utterance)", problems)

    for name in PER_UTTERANCE[1:]:
        if name in t:
            _same_keys(t[name], utts, "utterances of utt2spk", problems)
    for name in PER_SPEAKER:
        if name in t:
            _same_keys(t[name], sorted(speakers, key=str.encode), "speakers of spk2utt", problems)
    for name in PER_RECORDING:
        if name in t:
            _same_keys(t[name], recordings, "recordings", problems)
    if "utt2dur" in t:
        _positive(t["utt2dur"], False, problems)
    if "reco2dur" in t:
        _positive(t["reco2dur"], False, problems)
    if "utt2num_frames" in t:
        _positive(t["utt2num_frames"], True, problems)
    for name in ("utt2warp", "spk2warp"):
        if name in t:
            _positive(t[name], False, problems, 0.5, 1.5)
    if "spk2gender" in t:
        for n, key, fields, _ in t["spk2gender"].rows:
            if len(fields) != 2 or fields[1] not in ("m", "f"):
                problems.append(f"{t['spk2gender'].where}:{n}: '{key}' needs the form '<spk> m|f'")
    if "reco2file_and_channel" in t:
        for n, key, fields, _ in t["reco2file_and_channel"].rows:
            if len(fields) != 3 or fields[2] not in ("A", "B"):
                problems.append(f"{t['reco2file_and_channel'].where}:{n}: '{key}' needs the form "
                                "'<recording> <file> A|B'")
    return problems


def data_dir_files(data_dir: Path) -> dict[str, bytes]:
    """The files of ``data_dir`` that Kaldi knows, by name."""
    return {name: (data_dir / name).read_bytes() for name in KNOWN if (data_dir / name).is_file()}


def check_data_dir(data_dir: str | Path) -> None:
    """Raise ``NeuroselError`` naming the first way ``data_dir`` breaks Kaldi's rules (and how
    many more there are); the log lists up to 20."""
    d = Path(data_dir)
    if not d.is_dir():
        raise NeuroselError(f"{d}: data dir does not exist")
    problems = kaldi_rules_problems(data_dir_files(d), str(d))
    if problems:
        for p in problems[:20]:
            log.error("%s", p)
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise NeuroselError(problems[0] + more)


def _no_whitespace(value: str, what: str, sup_id: str, source: str) -> None:
    if not value or any(ch.isspace() for ch in value):
        raise NeuroselError(f"{source}: supervision '{sup_id}': {what} '{value}' is empty or has whitespace, "
                            "which a Kaldi data dir cannot hold")


def _audio(recording: Recording, source: str) -> str:
    """The ``wav.scp`` value of a one-channel, one-source recording: the path of a plain WAV file,
    a ``sox -R ... -t wav - |`` pipe for other file formats, or a command source's pipe."""
    if len(recording.sources) != 1 or recording.num_channels != 1 or recording.transforms:
        raise NeuroselError(f"{source}: recording '{recording.id}': only one-channel recordings with one source "
                            "and no transforms export to Kaldi")
    src = recording.sources[0]
    if src.type == "command":
        return f"{src.source} |"
    if src.type != "file":
        raise NeuroselError(f"{source}: recording '{recording.id}': a '{src.type}' audio source does not export "
                            "to a Kaldi wav.scp")
    path = str(src.source)
    if path.lower().endswith(".wav") and not any(ch.isspace() for ch in path) and not path.startswith("~"):
        return path
    return f"sox -R {shlex.quote(path)} -t wav - |"


def _lines(rows: Iterable[tuple[str, str]]) -> str:
    return "".join(f"{key} {value}\n" for key, value in rows)


def export_files(recordings: RecordingSet, supervisions: SupervisionSet, source: str = "") -> dict[str, str]:
    """The files (name -> text) of a Kaldi data dir for one-channel recordings and their
    supervisions: ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt``, ``utt2dur``, ``reco2dur``;
    ``segments`` unless every supervision is a whole recording of the same id; ``spk2gender`` when
    every speaker has one gender, ``m`` or ``f``; ``utt2lang`` when every supervision has a language.

    Transcripts have their whitespace collapsed to single spaces. A supervision without a speaker is
    its own speaker (Kaldi's advice). When the utterance ids do not sort as their speakers do, every
    utterance id gets its speaker id as a prefix (``<spk>-<utt>``, as Lhotse's ``prefix_spk_id``)
    and the export logs so. Raises ``NeuroselError`` naming ``source`` and the supervision for
    what no Kaldi dir can hold (ids with whitespace, transcripts Kaldi refuses, several channels).
    """
    recs = {r.id: r for r in recordings}
    sups = sorted(supervisions, key=lambda s: s.id.encode())
    rows: list[tuple[str, str, str]] = []  # (utterance id as exported, speaker, supervision id)
    for sup in sups:
        speaker = sup.speaker if sup.speaker is not None else sup.id
        _no_whitespace(sup.id, "the id", sup.id, source)
        _no_whitespace(speaker, "the speaker", sup.id, source)
        rows.append((sup.id, speaker, sup.id))
    if [r[:2] for r in rows] != sorted((r[:2] for r in rows), key=lambda p: (p[1].encode(), p[0].encode())):
        rows = sorted(((f"{spk}-{utt}", spk, sid) for utt, spk, sid in rows), key=lambda r: r[0].encode())
        log.warning("%s: utterance ids do not sort as their speakers do; the Kaldi export prefixes each with its "
                    "speaker id (<spk>-<utt>)", source or "export")
        pairs = [r[:2] for r in rows]
        if pairs != sorted(pairs, key=lambda p: (p[1].encode(), p[0].encode())):
            a, b = next((x, y) for x, y in zip(pairs, pairs[1:]) if x[1].encode() > y[1].encode())
            raise NeuroselError(f"{source}: speaker ids '{a[1]}' and '{b[1]}' do not sort as their utterances "
                                f"'{a[0]}' and '{b[0]}' do, even prefixed: Kaldi cannot hold these ids "
                                "(rename the speakers)")
    by_id = {s.id: s for s in sups}
    texts = []
    for utt, _, sid in rows:
        words = " ".join((by_id[sid].text or "").split())
        problem = text_problem(words)
        if problem:
            raise NeuroselError(f"{source}: supervision '{sid}': {problem}, which Kaldi's validate_data_dir.sh refuses")
        texts.append((utt, words))
    whole = all(utt == by_id[sid].recording_id and abs(by_id[sid].start) < 1e-6
                and abs(by_id[sid].duration - recs[by_id[sid].recording_id].duration) < 1e-3
                for utt, _, sid in rows)
    used = sorted({by_id[sid].recording_id for _, _, sid in rows}, key=str.encode)
    for rid in used:
        _no_whitespace(rid, "the recording id", rid, source)
    files = {
        "wav.scp": _lines((rid, _audio(recs[rid], source)) for rid in used),
        "text": _lines(texts),
        "utt2spk": _lines((utt, spk) for utt, spk, _ in rows),
        "utt2dur": _lines((utt, f"{by_id[sid].duration:.4f}") for utt, _, sid in rows),
        "reco2dur": _lines((rid, f"{recs[rid].duration:.4f}") for rid in used),
    }
    spk2utt: dict[str, list[str]] = {}
    for utt, spk, _ in rows:
        spk2utt.setdefault(spk, []).append(utt)
    files["spk2utt"] = _lines((spk, " ".join(utts)) for spk, utts in spk2utt.items())
    if not whole:
        files["segments"] = _lines((utt, f"{by_id[sid].recording_id} {by_id[sid].start:.4f} {by_id[sid].end:.4f}")
                                   for utt, _, sid in rows)
    genders: dict[str, set[str]] = {}
    for _, spk, sid in rows:
        genders.setdefault(spk, set()).add(str(by_id[sid].gender or "").lower()[:1])
    if all(len(g) == 1 and next(iter(g)) in ("m", "f") for g in genders.values()):
        files["spk2gender"] = _lines((spk, next(iter(g))) for spk, g in sorted(genders.items(), key=lambda x: x[0].encode()))
    languages = [by_id[sid].language for _, _, sid in rows]
    if all(lang and not any(ch.isspace() for ch in lang) for lang in languages):
        files["utt2lang"] = _lines((utt, by_id[sid].language) for utt, _, sid in rows)
    return files


def main(argv: list[str] | None = None) -> int:
    """``python -m neurosel.data.kaldi_export DIR...``: check each dir against Kaldi's rules."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m neurosel.data.kaldi_export DATA_DIR...", file=sys.stderr)
        return 2
    bad = 0
    for d in args:
        problems = kaldi_rules_problems(data_dir_files(Path(d)), d) if Path(d).is_dir() else [f"{d}: no such dir"]
        for p in problems:
            print(f"kaldi_export: error: {p}", file=sys.stderr)
        bad += bool(problems)
        if not problems:
            print(f"{d}: follows Kaldi's data dir rules")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
