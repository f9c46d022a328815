"""Stage 0's Kaldi data dir export against what Kaldi's own tools require.

Kaldi is not installed here, so two independent encodings of its rules check every exported dir:
``kaldi_shell_problems`` below runs the sort, awk and cmp pipelines that Kaldi's
``utils/validate_data_dir.sh --no-feats`` and ``utils/fix_data_dir.sh`` run (re-expressed, not
copied: ``LC_ALL=C`` key order with ``sort -C``, ``sort -k2 -C`` on utt2spk, spk2utt as
``utt2spk_to_spk2utt.pl`` makes it, ``sort -k1,1 -u`` leaving every file as it is, the same
utterance list in every per-utterance file), and the library's ``kaldi_rules_problems``, whose
every rule is also shown to catch a dir that breaks it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.kaldi import export_to_kaldi

from fixtures_speech import synthesise
from neurosel.data.kaldi_dir import AudioCheck, validate_data_dir
from neurosel.data.kaldi_export import check_data_dir, data_dir_files, export_files, kaldi_rules_problems
from neurosel.data.prepare import import_kaldi_dir
from neurosel.errors import NeuroselError

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["turn on the light", "open the door", "play some music", "what time is it", "call my sister",
             "set an alarm", "close the window", "stop the music"]
# Per utterance: (speaker, utterance id). Speaker 'b' sorts before 'b.x' but its utterance 'b_2'
# sorts after 'b.x-1': ids that do not sort with their speakers, as Kaldi's rules require.
PREFIXED = [("a", "a-1"), ("a", "a-2"), ("b", "b-1"), ("b", "b-2"), ("c", "c-1"), ("c", "c-2")]
UNPREFIXED = [("s2", "u1"), ("s1", "u2"), ("s2", "u3"), ("s1", "u4"), ("s3", "u5"), ("s3", "u6")]
# Kaldi's fix_data_dir.sh sorts these with sort -k1,1 -u (when present)
FIX_SORTED = ("utt2spk", "spk2utt", "feats.scp", "text", "segments", "wav.scp", "cmvn.scp", "vad.scp",
              "reco2file_and_channel", "spk2gender", "utt2lang", "utt2uniq", "utt2dur", "utt2num_frames")
PER_UTT = ("text", "utt2lang", "utt2uniq", "utt2dur", "utt2num_frames", "vad.scp", "feats.scp")


def sh(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script, "sh", *args], capture_output=True, text=True,
                          env={**os.environ, "LC_ALL": "C"})


def kaldi_shell_problems(d: Path) -> list[str]:
    """What Kaldi's validate_data_dir.sh --no-feats and fix_data_dir.sh would object to or change,
    checked with the same shell tools they use."""
    problems = []
    for name in ("spk2utt", "utt2spk", "text", "wav.scp"):
        if not (d / name).is_file() or (d / name).stat().st_size == 0:
            problems.append(f"no such file or empty: {name}")
    if problems:
        return problems
    present = [p.name for p in sorted(d.iterdir()) if p.is_file()]
    for name in present:
        f = str(d / name)
        if not (d / name).read_bytes().endswith(b"\n"):
            problems.append(f"{name}: invalid newline")
        if sh('awk \'{print $1}\' < "$1" | sort -uC', f).returncode != 0:
            problems.append(f"{name}: keys not sorted or not unique")
        if name in FIX_SORTED and sh('sort -k1,1 -u < "$1" | cmp -s - "$1"', f).returncode != 0:
            problems.append(f"{name}: fix_data_dir.sh would re-sort it")
    if sh('awk \'NF != 2 {exit 1}\' "$1"', str(d / "utt2spk")).returncode != 0:
        problems.append("utt2spk: wrong format")
    if sh('sort -k2 -C "$1"', str(d / "utt2spk")).returncode != 0:
        problems.append("utt2spk: not sorted on the speaker")
    # utt2spk -> spk2utt as utt2spk_to_spk2utt.pl does (speakers in order of first appearance)
    spk2utt = sh('awk \'{ if (!($2 in u)) o[n++] = $2; u[$2] = u[$2] " " $1 } '
                 'END { for (i = 0; i < n; i++) print o[i] u[o[i]] }\' "$1"', str(d / "utt2spk")).stdout
    if spk2utt != (d / "spk2utt").read_text():
        problems.append("spk2utt: not what utt2spk_to_spk2utt.pl makes of utt2spk")
    utt2spk = sh('awk \'{ for (i = 2; i <= NF; i++) print $i, $1 }\' "$1"', str(d / "spk2utt")).stdout
    if utt2spk != (d / "utt2spk").read_text():
        problems.append("utt2spk: not what spk2utt_to_utt2spk.pl makes of spk2utt")
    utts = sh('awk \'{print $1}\' "$1"', str(d / "utt2spk")).stdout
    segmented = (d / "segments").is_file()
    for name in PER_UTT + (("segments",) if segmented else ("wav.scp",)):
        if name in present and sh('awk \'{print $1}\' "$1"', str(d / name)).stdout != utts:
            problems.append(f"{name}: not the utterances of utt2spk")
    if segmented:
        if sh('awk \'NF != 4 || $4 <= $3 {exit 1}\' "$1"', str(d / "segments")).returncode != 0:
            problems.append("segments: badly formatted")
        if sh('awk \'{print $2, $1, $3, $4}\' "$1" | awk \'{print $2, $1, $3, $4}\' | cmp -s - "$1"',
              str(d / "segments")).returncode != 0:
            problems.append("segments: fix_data_dir.sh would rewrite it")
        recordings = sh('awk \'{print $2}\' "$1" | sort -u', str(d / "segments")).stdout
        if sh('awk \'{print $1}\' "$1"', str(d / "wav.scp")).stdout != recordings:
            problems.append("wav.scp: not the recordings of segments")
    else:
        recordings = utts
    if "reco2dur" in present and sh('awk \'{print $1}\' "$1"', str(d / "reco2dur")).stdout != recordings:
        problems.append("reco2dur: not the recordings")
    for name in ("utt2dur", "reco2dur"):
        if name in present and sh('awk \'NF != 2 || !($2 > 0) {exit 1}\' "$1"', str(d / name)).returncode != 0:
            problems.append(f"{name}: bad line")
    if sh('grep -qE \'^\\S+\\s+~\' "$1"', str(d / "wav.scp")).returncode == 0:
        problems.append("wav.scp: tilde")
    text = str(d / "text")
    if sh('LC_ALL=C.UTF-8 grep -q \'[^[:print:][:space:]]\' "$1"', text).returncode == 0:
        problems.append("text: non-printable characters")
    if sh('grep -qwE \'<s>|</s>|#0\' "$1"', text).returncode == 0:
        problems.append("text: illegal symbol")
    if sh('awk \'NF < 2 {exit 1}\' "$1"', text).returncode != 0:
        problems.append("text: empty transcript")
    if "spk2gender" in present:
        if sh('awk \'NF != 2 || ($2 != "m" && $2 != "f") {exit 1}\' "$1"', str(d / "spk2gender")).returncode:
            problems.append("spk2gender: malformed")
        speakers = sh('awk \'{print $1}\' "$1"', str(d / "spk2utt")).stdout
        if sh('awk \'{print $1}\' "$1"', str(d / "spk2gender")).stdout != speakers:
            problems.append("spk2gender: not the speakers of spk2utt")
    return problems


def write_corpus(d: Path, rows: list[tuple[str, str]]) -> Path:
    """A Kaldi data dir of real espeak-ng speech, one utterance per (speaker, utterance id)."""
    (d / "wav").mkdir(parents=True)
    rows = sorted(rows, key=lambda r: r[1].encode())
    for i, (_, utt) in enumerate(rows):
        synthesise(SENTENCES[i % len(SENTENCES)], "en-us", d / "wav" / f"{utt}.wav")
    (d / "wav.scp").write_text("".join(f"{u} {d / 'wav' / u}.wav\n" for _, u in rows))
    (d / "text").write_text("".join(f"{u} {SENTENCES[i % len(SENTENCES)]}\n" for i, (_, u) in enumerate(rows)))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for s, u in rows))
    return d


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """Stage 0 run (through its command line) on a corpus with train, dev and an OOD pair."""
    root = tmp_path_factory.mktemp("corpus")
    for split in ("train", "dev", "ood_adapt_noise", "ood_noise"):
        write_corpus(root / split, PREFIXED)
    data = tmp_path_factory.mktemp("data")
    r = subprocess.run([sys.executable, "-m", "neurosel.bin.prepare", "--set", f"kaldi_root={root}",
                        str(data)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return data / "kaldi"


def test_every_exported_dir_passes_kaldis_checks(exported: Path) -> None:
    dirs = sorted(exported.iterdir())
    assert [d.name for d in dirs] == ["dev", "ood_adapt_noise", "ood_noise", "train"]
    for d in dirs:
        assert {"wav.scp", "text", "utt2spk", "spk2utt", "utt2dur", "reco2dur"} <= {p.name for p in d.iterdir()}
        assert kaldi_shell_problems(d) == [], d
        check_data_dir(d)
        assert (d / "spk2utt").read_text().splitlines()[0] == "a a-1 a-2"
    r = subprocess.run([sys.executable, "-m", "neurosel.data.kaldi_export", *map(str, dirs)], capture_output=True,
                       text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.count("follows Kaldi's data dir rules") == 4, r.stderr


def test_lhotses_own_export_is_refused_as_kaldi_refuses_it(exported: Path, tmp_path: Path) -> None:
    """The issue's reproduction: Lhotse's export_to_kaldi writes no spk2utt."""
    recordings, supervisions = import_kaldi_dir(exported / "train", AudioCheck())
    export_to_kaldi(recordings, supervisions, tmp_path / "lhotse")
    assert "no such file or empty: spk2utt" in kaldi_shell_problems(tmp_path / "lhotse")
    with pytest.raises(NeuroselError, match="spk2utt: no such file"):
        check_data_dir(tmp_path / "lhotse")


def _sets(rows: list[tuple[str, str]], root: Path, *, segmented: bool = False, flac: bool = False,
          gender: str | None = None) -> tuple[RecordingSet, SupervisionSet]:
    """Real audio files and Lhotse manifests for ``rows`` (speaker, utterance id); ``segmented``:
    two utterances per recording."""
    recordings, supervisions = [], []
    rng = np.random.default_rng(0)
    for i, (spk, utt) in enumerate(rows):
        if segmented and i % 2:
            continue
        rec_id = f"rec{i}" if segmented else utt
        path = root / f"{rec_id}.{'flac' if flac else 'wav'}"
        sf.write(path, 0.1 * rng.standard_normal(16000 * 2), 16000, subtype="PCM_16")
        rec = Recording.from_file(path, recording_id=rec_id)
        recordings.append(rec)
        parts = [(spk, utt, 0.0, 2.0)] if not segmented else [(spk, utt, 0.0, 1.0), (*rows[i + 1], 1.0, 1.0)]
        for s, u, start, dur in parts:
            supervisions.append(SupervisionSegment(u, rec.id, start, dur, text=f"hello  {u}\tworld", speaker=s,
                                                   gender=gender))
    return RecordingSet.from_recordings(recordings), SupervisionSet.from_segments(supervisions)


def _write(files: dict[str, str], d: Path) -> Path:
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
    return d


@pytest.mark.parametrize("case", ["prefixed", "unprefixed", "segmented", "flac", "gendered"])
def test_export_shapes_pass_both_checks(case: str, tmp_path: Path) -> None:
    rows = UNPREFIXED if case == "unprefixed" else PREFIXED
    sets = _sets(rows, tmp_path, segmented=case == "segmented", flac=case == "flac",
                 gender="F" if case == "gendered" else None)
    d = _write(export_files(*sets, "test"), tmp_path / "kaldi")
    assert kaldi_shell_problems(d) == []
    assert kaldi_rules_problems(data_dir_files(d), str(d)) == []
    assert len(validate_data_dir(d, AudioCheck())) == len(sets[0])  # stage 0 reads it back, sox pipes and all
    first_text = (d / "text").read_text().splitlines()[0]
    if case == "unprefixed":  # the ids get their speakers as prefixes, so that they sort together
        assert (d / "utt2spk").read_text().splitlines()[:2] == ["s1-u2 s1", "s1-u4 s1"]
        assert (d / "segments").read_text().splitlines()[0] == "s1-u2 u2 0.0000 2.0000"
        assert first_text == "s1-u2 hello u2 world"
        return
    assert first_text == "a-1 hello a-1 world"  # whitespace collapsed
    if case == "segmented":
        assert (d / "segments").read_text().splitlines()[:2] == ["a-1 rec0 0.0000 1.0000", "a-2 rec0 1.0000 2.0000"]
        assert (d / "wav.scp").read_text().count("\n") == 3
    else:
        assert not (d / "segments").exists()  # one utterance per recording, same id: wav.scp by utterance
    if case == "flac":
        assert (d / "wav.scp").read_text().splitlines()[0] == f"a-1 sox -R {tmp_path / 'a-1.flac'} -t wav - |"
    if case == "gendered":
        assert (d / "spk2gender").read_text() == "a f\nb f\nc f\n"
    else:
        assert not (d / "spk2gender").exists()


@pytest.mark.parametrize("text, problem", [("hello <s> world", "'<s>'"), ("hello\u00a0#0", "'#0'"),
                                           ("bell\x07", "non-printable"), ("  ", "empty transcript")])
def test_transcripts_kaldi_refuses_are_an_error(text: str, problem: str, tmp_path: Path) -> None:
    recordings, supervisions = _sets(PREFIXED[:2], tmp_path)
    bad = SupervisionSet.from_segments([s if s.id != "a-2" else
                                        SupervisionSegment(s.id, s.recording_id, s.start, s.duration, text=text,
                                                           speaker=s.speaker) for s in supervisions])
    with pytest.raises(NeuroselError, match=f"manifest.jsonl: supervision 'a-2': .*{problem}"):
        export_files(recordings, bad, "manifest.jsonl")


# --- every rule of the checker catches a dir that breaks it -----------------------------------------

GOOD = {"wav.scp": "a-1 /x/a-1.wav\na-2 /x/a-2.wav\nb-1 /x/b-1.wav\n",
        "text": "a-1 hello world\na-2 good morning\nb-1 good night\n",
        "utt2spk": "a-1 a\na-2 a\nb-1 b\n",
        "spk2utt": "a a-1 a-2\nb b-1\n",
        "utt2dur": "a-1 1.5\na-2 2.0\nb-1 1.0\n"}


def _broken(**changes: str | None) -> dict[str, bytes]:
    files = {**GOOD, **changes}
    return {k.replace("_scp", ".scp"): v.encode() for k, v in files.items() if v is not None}


@pytest.mark.parametrize("changes, message", [
    ({"spk2utt": None}, "spk2utt: no such file"),
    ({"utt2spk": ""}, "utt2spk: empty file"),
    ({"utt2spk": "a-1 a\na-2 a\nb-1 b"}, "utt2spk: the last line has no newline"),
    ({"utt2spk": "a-2 a\na-1 a\nb-1 b\n"}, "utt2spk:2: 'a-1' is out of LC_ALL=C order after 'a-2'"),
    ({"utt2spk": "a-1 a\na-2 a\na-2 a\nb-1 b\n"}, "'a-2' is a duplicate of 'a-2'"),
    ({"utt2spk": "a-1 b\na-2 a\nb-1 b\n", "spk2utt": "b a-1 b-1\na a-2\n"}, "not sorted when sorted on the speaker"),
    ({"utt2spk": "a-1  a\na-2 a\nb-1 b\n"}, "not '<utt> <spk>' with one space"),
    ({"spk2utt": "a a-2 a-1\nb b-1\n"}, "spk2utt:1: 'a a-2 a-1' where utt2spk makes 'a a-1 a-2'"),
    ({"text": "a-1 hello world\nb-1 good night\n"}, "text: no line for 'a-2'"),
    ({"text": "a-1 hello world\na-2\nb-1 good night\n"}, "text:2: utterance 'a-2': empty transcript"),
    ({"text": "a-1 hello world\r\na-2 x\nb-1 y\n"}, "carriage return"),
    ({"text": "a-1 hello <s> world\na-2 x\nb-1 y\n"}, "the symbol '<s>'"),
    ({"text": "a-1 hello world\na-2 x\xa0y\nb-1 y\n"}, "whitespace U+00A0"),
    ({"wav_scp": "a-1 ~/a-1.wav\na-2 /x/a-2.wav\nb-1 /x/b-1.wav\n"}, "starting with '~'"),
    ({"wav_scp": "a-1 /x/a-1.wav\nb-1 /x/b-1.wav\n"}, "wav.scp: no line for 'a-2'"),
    ({"segments": "a-1 r 0 1.5\na-2 r 2.0 1.0\nb-1 r 3 4\n", "wav_scp": "r /x/r.wav\n"}, "end 1.0 is not a number after"),
    ({"segments": "a-1 r 0 1.5\na-2 r 2 3\nb-1 r 3 4\n"}, "wav.scp: 'a-1' is not one of the recordings"),
    ({"utt2dur": "a-1 1.5\na-2 0\nb-1 1.0\n"}, "utt2dur:2: 'a-2' needs a number above 0"),
    ({"spk2gender": "a m\nb x\n"}, "spk2gender:2: 'b' needs the form '<spk> m|f'"),
    ({"spk2gender": "a m\n"}, "spk2gender: no line for 'b'"),
])
def test_each_rule_catches_a_dir_that_breaks_it(changes: dict, message: str) -> None:
    assert kaldi_rules_problems(_broken(), "d") == []
    problems = kaldi_rules_problems(_broken(**changes), "d")
    assert any(message in p for p in problems), problems


def test_a_segmented_corpus_exports_its_segments_times(tmp_path: Path) -> None:
    """Two utterances in one long recording (segments) and a whole-recording one: the export's
    segments give each utterance's times in its recording, as the input's did (the cuts stage 0
    makes are timed from their own start)."""
    d = write_corpus(tmp_path / "corpus" / "train", PREFIXED[:2])
    audio = np.concatenate([sf.read(d / "wav" / f"{u}.wav")[0] for _, u in PREFIXED[:2]])
    sf.write(d / "wav" / "long.wav", audio, 16000, subtype="PCM_16")
    first = sf.info(d / "wav" / "a-1.wav").duration
    (d / "wav.scp").write_text(f"long {d / 'wav' / 'long.wav'}\n")
    (d / "segments").write_text(f"a-1 long 0.0000 {first:.4f}\na-2 long {first:.4f} {len(audio) / 16000:.4f}\n")
    shutil.copytree(d, tmp_path / "corpus" / "dev")
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "neurosel.bin.prepare", "--set", f"kaldi_root={tmp_path / 'corpus'}",
                        str(data)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    exported = data / "kaldi" / "train"
    assert (exported / "segments").read_text() == (d / "segments").read_text()
    assert kaldi_shell_problems(exported) == []
    check_data_dir(exported)
