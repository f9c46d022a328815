"""The bad-input matrix: one test per kind of bad input, each through a stage's command-line entry
point as the recipe runs it. Every row asserts the three promises of the reliability issue:

1. a one-line error that names the thing (file, utterance, key, checkpoint, job log) and the
   problem;
2. a non-zero exit;
3. earlier artifacts intact: every file that was in the output folder before has the same bytes
   after, and no temporary file of an atomic write is left behind.

Rows that need a real Slurm cluster use tests/slurm_fixture.py; the disk-full row mounts a small
tmpfs (root). Related single-purpose tests elsewhere: tests/test_prepare.py (the stage-0 audio and
transcript checks without the intact-artifacts promise), tests/test_config_stage.py (config
errors at library level), tests/test_model.py (mismatched and truncated model files),
tests/test_slurm.py (utils/slurm.pl reporting failed and cancelled jobs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
from fixtures_speech import TinySpeech, synthesise, tiny_speech  # noqa: F401  (session fixture)
from scipy.signal import resample_poly
from slurm_fixture import slurm_cluster  # noqa: F401  (session fixture)

from neurosel.bin import decode as decode_cli
from neurosel.bin import prepare as prepare_cli
from neurosel.bin import train as train_cli
from neurosel.cli import run_main
from neurosel.io import is_temporary
from neurosel.model import ModelConfig, build_model, save_model
from neurosel.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = {"train": ["turn on the light", "open the door", "play some music"],
             "dev": ["what time is it", "call my sister"]}
TINY_TRAIN = ["model.conv_channels=[4,4]", "model.fc_dims=[32,32]", "num_threads=1", "num_epochs=0",
              "max_duration=6", "checkpoint_every=2", "warmup_steps=2", "lr_schedule=noam", "log_every=1"]


# --- helpers ----------------------------------------------------------------------------------

def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder``: relative path -> bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_intact(folder: Path, before: dict[str, bytes]) -> None:
    """Promise 3: the files of ``before`` are all there with the same bytes; no temporary files.
    Stage markers (``.done``) are not artifacts: a stage removes its marker when a redo starts,
    so that work a failed redo may have begun is never taken as done (neurosel.stage.run_once)."""
    after = snapshot(folder)
    changed = [p for p, data in before.items() if after.get(p) != data and Path(p).name != ".done"]
    assert changed == [], f"earlier artifacts changed or lost: {changed}"
    left = [p for p in after if is_temporary(p)]
    assert left == [], f"temporary files left behind: {left}"


def run_cli(main: Callable, argv: list[str], prog: str, capsys, monkeypatch) -> tuple[int, list[str]]:
    """Run an entry point as ``python -m neurosel.bin.<prog>`` does; returns (exit code, the
    ``<prog>: error:`` lines it printed)."""
    monkeypatch.setattr(sys, "argv", [prog])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    err = capsys.readouterr().err
    return e.value.code, [line for line in err.splitlines() if line.startswith(f"{prog}: error:")]


def assert_one_line_error(code: int, errors: list[str], *names: str) -> str:
    """Promises 1 and 2: exit code 1, exactly one error line, naming each of ``names``."""
    assert code == 1, (code, errors)
    assert len(errors) == 1, errors
    for name in names:
        assert name in errors[0], (name, errors[0])
    return errors[0]


# --- stage 0: audio, transcripts, config ---------------------------------------------------------

def write_split(root: Path, split: str) -> None:
    d = root / split
    d.mkdir(parents=True)
    rows = []
    for i, text in enumerate(SENTENCES[split]):
        utt = f"spk{i % 2}-{split}-{i}"
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(exist_ok=True)
        synthesise(text, "en-us", wav)
        rows.append((utt, f"spk{i % 2}", wav, text))
    rows.sort()
    (d / "wav.scp").write_text("".join(f"{u} {w}\n" for u, _, w, _ in rows))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t in rows))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _, _ in rows))


@pytest.fixture(scope="module")
def stage0(tmp_path_factory) -> tuple[Path, Path]:
    """(a small Kaldi corpus with train and dev, the data dir stage 0 made from it)."""
    root = tmp_path_factory.mktemp("corpus")
    for split in SENTENCES:
        write_split(root, split)
    data = tmp_path_factory.mktemp("data")
    assert prepare_cli.main(["--set", f"kaldi_root={root}", str(data)]) == 0
    assert (data / "manifests" / ".done").is_file()
    return root, data


def first_utterance(corpus: Path) -> tuple[str, Path, Path]:
    """(utterance id, its audio file, the text file) of the first train utterance."""
    utt, wav = (corpus / "train" / "wav.scp").read_text().splitlines()[0].split()
    return utt, Path(wav), corpus / "train" / "text"


def _rewrite_wav(wav: Path, audio: np.ndarray, rate: int) -> None:
    sf.write(wav, audio, rate, subtype="PCM_16")


def missing_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    wav.unlink()
    return [wav.name, "does not exist"]


def truncated_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    data = wav.read_bytes()
    wav.write_bytes(data[: len(data) // 2])
    return [wav.name, "truncated"]


def corrupt_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    wav.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4)
    return [wav.name, "cannot read audio"]


def silent_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    _rewrite_wav(wav, np.zeros_like(audio), rate)
    return [wav.name, "all zeros"]


def practically_silent_audio(corpus: Path) -> list[str]:
    """Real speech scaled to a peak of -90 dBFS (about one 16-bit step): not bit-exact zero."""
    _, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    _rewrite_wav(wav, audio / np.max(np.abs(audio)) * 10 ** (-90 / 20), rate)
    return [wav.name, "practically silent", "dBFS"]


def _as_flac(corpus: Path, command: bool) -> Path:
    """The first utterance's audio as a real FLAC file, which wav.scp then names (a path, or the
    Kaldi pipe ``sox -R x.flac -t wav - |``); the WAV goes."""
    utt, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    flac = wav.with_suffix(".flac")
    sf.write(flac, audio, rate, subtype="PCM_16")
    wav.unlink()
    scp = corpus / "train" / "wav.scp"
    value = f"sox -R {flac} -t wav - |" if command else str(flac)
    scp.write_text(scp.read_text().replace(f"{utt} {wav}\n", f"{utt} {value}\n"))
    return flac


def _cut_flac(flac: Path) -> None:
    data = flac.read_bytes()
    flac.write_bytes(data[: len(data) // 2])


def truncated_flac(corpus: Path) -> list[str]:
    flac = _as_flac(corpus, command=False)
    _cut_flac(flac)
    return [flac.name, "is truncated"]


def truncated_flac_through_sox(corpus: Path) -> list[str]:
    """sox exits 0 on a truncated FLAC and writes less audio than its WAV header declares."""
    flac = _as_flac(corpus, command=True)
    _cut_flac(flac)
    return [flac.name, "is truncated"]


def flac_cut_to_its_header(corpus: Path) -> list[str]:
    """Was reported as '0.000 s is shorter than 0.3 s'."""
    flac = _as_flac(corpus, command=True)
    flac.write_bytes(flac.read_bytes()[:100])
    return [flac.name, "is truncated"]


def zero_length_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    _rewrite_wav(wav, np.zeros(0), 16000)
    return [wav.name, "0.000 s is shorter than"]


def very_long_audio(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    _rewrite_wav(wav, np.tile(audio, int(61 * rate / len(audio)) + 1), rate)
    return [wav.name, "longer than 60.0 s"]


def wrong_sample_rate(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    _rewrite_wav(wav, resample_poly(audio, 1, 2), rate // 2)
    return [wav.name, "8000 Hz, expected 16000 Hz"]


def wrong_channel_count(corpus: Path) -> list[str]:
    _, wav, _ = first_utterance(corpus)
    audio, rate = sf.read(wav)
    _rewrite_wav(wav, np.stack([audio, audio], 1), rate)
    return [wav.name, "2 channels, expected mono"]


def empty_transcript(corpus: Path) -> list[str]:
    utt, _, text = first_utterance(corpus)
    lines = text.read_text().splitlines()
    text.write_text("\n".join([utt] + lines[1:]) + "\n")
    return [str(text), utt]


def non_utf8_transcript(corpus: Path) -> list[str]:
    _, _, text = first_utterance(corpus)
    text.write_bytes(text.read_bytes().replace(b"light", b"l\xffght"))
    return [str(text), "UTF-8"]


@pytest.mark.parametrize("breaker", [missing_audio, truncated_audio, corrupt_audio, silent_audio,
                                     practically_silent_audio, truncated_flac, truncated_flac_through_sox,
                                     flac_cut_to_its_header, zero_length_audio, very_long_audio, wrong_sample_rate,
                                     wrong_channel_count, empty_transcript, non_utf8_transcript])
def test_bad_corpus(stage0, tmp_path: Path, breaker, capsys, monkeypatch) -> None:
    source, prepared = stage0
    corpus = tmp_path / "corpus"
    shutil.copytree(source, corpus)
    for split in SENTENCES:
        scp = corpus / split / "wav.scp"
        scp.write_text(scp.read_text().replace(str(source), str(corpus)))
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = snapshot(data)
    names = breaker(corpus)
    code, errors = run_cli(prepare_cli.main, ["--set", f"kaldi_root={corpus}", str(data)], "prepare", capsys,
                           monkeypatch)
    line = assert_one_line_error(code, errors, *names)
    assert str(corpus / "train") in line or str(corpus / "wav") in line, line
    assert_intact(data, before)


@pytest.mark.parametrize("text, names", [
    ("sampling_rate: 16000\nsample_rate: 8000\n", ["unknown key 'sample_rate'"]),
    ("min_duration: short\n", ["min_duration", "expected a number"]),
    ("sampling_rate: 16000.5\n", ["sampling_rate", "expected an integer"]),
])
def test_bad_config(stage0, tmp_path: Path, text: str, names: list[str], capsys, monkeypatch) -> None:
    corpus, prepared = stage0
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = snapshot(data)
    conf = tmp_path / "prepare.yaml"
    conf.write_text(f"kaldi_root: {corpus}\n{text}")
    code, errors = run_cli(prepare_cli.main, ["--config", str(conf), str(data)], "prepare", capsys, monkeypatch)
    assert_one_line_error(code, errors, str(conf), *names)
    assert_intact(data, before)


def test_disk_full_during_the_kaldi_export(stage0, tmp_path: Path, capsys, monkeypatch) -> None:
    """A write that fails for lack of space inside the Kaldi export (a failed ``write`` names no
    file) is reported against the data dir being exported; the earlier one stays."""
    import errno

    from neurosel.data import prepare as prepare_lib

    corpus, prepared = stage0
    data = tmp_path / "data"
    shutil.copytree(prepared, data)
    before = snapshot(data)

    def full_disk(path: Path, text: str) -> None:
        path.write_text(text[: len(text) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(prepare_lib, "write_kaldi_file", full_disk)
    code, errors = run_cli(prepare_cli.main, ["--force", "--set", f"kaldi_root={corpus}", str(data)], "prepare",
                           capsys, monkeypatch)
    first = sorted(SENTENCES)[0]  # the split exported first
    line = assert_one_line_error(code, errors, f"{data / 'kaldi' / first}: cannot write", "No space left on device")
    assert f"an earlier {first}, if any, is unchanged" in line, line
    assert_intact(data, before)
    assert sorted(p.name for p in (data / "kaldi").iterdir()) == ["dev", "train"]  # no temporary folder


def _mount_tmpfs(mountpoint: Path, size: str) -> None:
    mountpoint.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("the disk-full row mounts a tmpfs, which needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mountpoint)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


# --- stage 3 and decoding: checkpoints ---------------------------------------------------------

def train_args(data: TinySpeech, exp: Path, *overrides: str) -> list[str]:
    args = ["--quiet"]
    for item in TINY_TRAIN + list(overrides):
        args += ["--set", item]
    return args + [str(data.fbank_dir), str(data.lang_dir), str(exp)]


def killed_training(data: TinySpeech, exp: Path) -> None:
    """What a run of ``max_steps=8`` killed after its step-4 checkpoint leaves: checkpoints 2 and
    4, logs, no model, no best model, no marker."""
    from neurosel import config as C

    cfg = C.resolve(TrainConfig, overrides=TINY_TRAIN + ["max_steps=8"])
    train(cfg, data.fbank_dir / "cuts_train.jsonl.gz", data.fbank_dir / "cuts_dev.jsonl.gz", data.lang_dir,
          data.fbank_dir / "cmvn.npz", exp, quiet=True)
    for name in ("checkpoint-6.pt", "checkpoint-8.pt", "model.pt", "best.pt", "loss.png"):
        (exp / name).unlink()


def test_checkpoint_of_a_different_model_config(tiny_speech: TinySpeech, tmp_path: Path, capsys,
                                                monkeypatch) -> None:
    exp = tmp_path / "exp"
    killed_training(tiny_speech, exp)
    before = snapshot(exp)
    code, errors = run_cli(train_cli.main, train_args(tiny_speech, exp, "max_steps=8", "model.fc_dims=[48,48]"),
                           "train", capsys, monkeypatch)
    assert_one_line_error(code, errors, str(exp / "checkpoint-4.pt"), "trained with model=", "fc_dims")
    assert_intact(exp, before)


def test_model_file_whose_weights_do_not_match_its_config(tiny_speech: TinySpeech, tmp_path: Path, capsys,
                                                          monkeypatch) -> None:
    import torch

    model_path = tmp_path / "exp" / "model.pt"
    save_model(build_model(ModelConfig(vocab_size=40, conv_channels=[4, 4], fc_dims=[32, 32])), model_path)
    checkpoint = torch.load(model_path, weights_only=True)
    checkpoint["config"]["fc_dims"] = [32, 48]
    torch.save(checkpoint, model_path)
    decode_dir = tmp_path / "decode"
    decode_dir.mkdir()
    (decode_dir / "earlier.txt").write_text("an earlier result\n")
    before = snapshot(tmp_path)
    code, errors = run_cli(decode_cli.main, ["decode", "--set", "method=greedy", "--sets", "dev", str(model_path),
                                             str(tiny_speech.lang_dir), str(tiny_speech.fbank_dir), str(decode_dir)],
                           "decode", capsys, monkeypatch)
    assert_one_line_error(code, errors, str(model_path), "weights do not match")
    assert_intact(tmp_path, before)


def test_truncated_checkpoint(tiny_speech: TinySpeech, tmp_path: Path, capsys, monkeypatch) -> None:
    exp = tmp_path / "exp"
    killed_training(tiny_speech, exp)
    newest = exp / "checkpoint-4.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])
    before = snapshot(exp)
    code, errors = run_cli(train_cli.main, train_args(tiny_speech, exp, "max_steps=8"), "train", capsys, monkeypatch)
    assert_one_line_error(code, errors, str(newest), "cannot load")
    assert_intact(exp, before)


def test_characters_outside_the_bpe_model(tiny_speech: TinySpeech, tmp_path: Path, capsys, monkeypatch) -> None:
    from lhotse import CutSet, load_manifest

    fbank = tmp_path / "fbank"
    fbank.mkdir()
    for name in ("cuts_train.jsonl.gz", "cmvn.npz"):
        shutil.copy(tiny_speech.fbank_dir / name, fbank / name)
    dev = load_manifest(tiny_speech.fbank_dir / "cuts_dev.jsonl.gz", CutSet).to_eager()
    cut = dev[0]
    cut.supervisions[0].text = "turn on the light in the café"  # 'é' is in no training transcript
    dev.to_file(fbank / "cuts_dev.jsonl.gz")
    exp = tmp_path / "exp"
    killed_training(tiny_speech, exp)
    before = snapshot(exp)
    args = train_args(tiny_speech, exp, "max_steps=8")
    args[-3] = str(fbank)
    code, errors = run_cli(train_cli.main, args, "train", capsys, monkeypatch)
    assert_one_line_error(code, errors, str(fbank / "cuts_dev.jsonl.gz"), cut.id, "'é'", "bpe.model")
    assert_intact(exp, before)


def test_disk_full(tiny_speech: TinySpeech, tmp_path: Path, capsys, monkeypatch) -> None:
    disk = tmp_path / "disk"
    _mount_tmpfs(disk, "3m")
    try:
        exp = disk / "exp"
        killed_training(tiny_speech, exp)
        before = snapshot(exp)
        free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
        (disk / "filler").write_bytes(bytes(free - 64 * 1024))  # room for logs, not for a checkpoint
        code, errors = run_cli(train_cli.main, train_args(tiny_speech, exp, "max_steps=8"), "train", capsys,
                               monkeypatch)
        assert_one_line_error(code, errors, str(exp / "checkpoint-6.pt"), "No space left on device")
        assert_intact(exp, {k: v for k, v in before.items() if not k.startswith(("log/", "tensorboard/"))})
        (disk / "filler").unlink()  # with space again, the same command resumes and finishes
        assert train_cli.main(train_args(tiny_speech, exp, "max_steps=8")) == 0
        assert (exp / "model.pt").is_file() and (exp / "checkpoint-8.pt").is_file()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=True)


# --- Slurm: a job that fails, a job that is cancelled --------------------------------------------

def steps_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}


def train_step(data: TinySpeech, exp: Path, *overrides: str) -> list[str]:
    return ["steps/train.sh", "--cmd", "utils/slurm.pl", "--num-threads", "1", "--overrides",
            " ".join(TINY_TRAIN + list(overrides)), str(data.fbank_dir), str(data.lang_dir), str(exp)]


def test_slurm_job_that_fails(tiny_speech: TinySpeech, tmp_path: Path, slurm_cluster) -> None:
    exp = tmp_path / "exp"
    killed_training(tiny_speech, exp)
    newest = exp / "checkpoint-4.pt"
    newest.write_bytes(newest.read_bytes()[:1000])
    before = snapshot(exp)
    r = subprocess.run(train_step(tiny_speech, exp, "max_steps=8"), cwd=ROOT, env=steps_env(), capture_output=True,
                       text=True, timeout=600)
    assert r.returncode != 0
    # slurm.pl names the failed job's log; the step shows the job's one error line from it
    assert re.search(rf"{re.escape(str(exp / 'log' / 'job.log'))}: exit code 1", r.stderr), r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("train: error:")]
    assert len(errors) == 1 and str(newest) in errors[0] and "cannot load" in errors[0], r.stderr
    assert_intact(exp, {k: v for k, v in before.items() if not k.startswith("log/")})


def test_slurm_job_that_is_cancelled(tiny_speech: TinySpeech, tmp_path: Path, slurm_cluster) -> None:
    exp = tmp_path / "exp"
    proc = subprocess.Popen(train_step(tiny_speech, exp, "max_steps=100000"), cwd=ROOT, env=steps_env(),
                            stderr=subprocess.PIPE, text=True)
    log = exp / "log" / "job.log"
    deadline = time.monotonic() + 300
    try:  # any checkpoint: with keep_last a fast machine removes checkpoint-2.pt before a poll sees it
        while not [p for p in exp.glob("checkpoint-*.pt") if not is_temporary(p)]:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "training under Slurm wrote no checkpoint"
            time.sleep(0.1)
    except AssertionError:
        proc.send_signal(signal.SIGINT)  # slurm.pl cancels its array on Ctrl-C: no job outlives the test
        proc.wait(timeout=60)
        raise
    job_id = re.search(r"\(Slurm job (\d+)_\d+\)", log.read_text()).group(1)
    subprocess.run(["scancel", job_id], check=True)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0
    cancelled = [line for line in stderr.splitlines() if "cancelled" in line and str(log) in line]
    assert len(cancelled) == 1, stderr
    assert not (exp / ".done").exists() and not (exp / "model.pt").exists()
    checkpoints = sorted(exp.glob("checkpoint-*.pt"))
    assert checkpoints and not [p for p in exp.iterdir() if is_temporary(p)]
    import torch

    for path in checkpoints:  # every checkpoint left is whole: the next run can resume from it
        assert torch.load(path, weights_only=True)["progress"]["step"] > 0


# --- run.sh: stage numbers -------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--stage", "12"], "--stage '12': not a stage number (0-8"),
    (["--stop-stage", "9"], "--stop-stage '9': not a stage number (0-8"),
    (["--stage", "-1"], "--stage '-1': not a stage number"),
    (["--stage", "two"], "--stage 'two': not a stage number"),
    (["--stop-stage", "3.5"], "--stop-stage '3.5': not a stage number"),
    (["--stage", "5", "--stop-stage", "3"], "--stage 5 is after --stop-stage 3: no stage to run"),
])
def test_run_sh_refuses_a_stage_outside_0_to_8(args: list[str], message: str, tmp_path: Path) -> None:
    """Refused before anything runs (set-up included): a one-line error, exit 1, no work dir."""
    work = tmp_path / "work"
    r = subprocess.run(["./run.sh", "--workdir", str(work), *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"./run.sh: {message}"), r.stderr
    assert not work.exists()


# --- stage 0 from Lhotse manifests (the LibriSpeech route): the same audio checks -------------------

def write_manifest_split(root: Path, split: str) -> None:
    """``root/<split>/{recordings,supervisions}.jsonl.gz`` over real FLAC speech."""
    from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet

    audio_dir = root / "flac"
    audio_dir.mkdir(parents=True, exist_ok=True)
    recordings, supervisions = [], []
    for i, text in enumerate(SENTENCES[split]):
        utt = f"spk{i % 2}-{split}-{i}"
        wav = audio_dir / f"{utt}.wav"
        synthesise(text, "en-us", wav)
        audio, rate = sf.read(wav)
        wav.unlink()
        sf.write(audio_dir / f"{utt}.flac", audio, rate, format="FLAC", subtype="PCM_16")
        rec = Recording.from_file(audio_dir / f"{utt}.flac", recording_id=utt)
        recordings.append(rec)
        supervisions.append(SupervisionSegment(utt, utt, 0.0, rec.duration, text=text, speaker=f"spk{i % 2}"))
    (root / split).mkdir()
    RecordingSet.from_recordings(recordings).to_file(root / split / "recordings.jsonl.gz")
    SupervisionSet.from_segments(supervisions).to_file(root / split / "supervisions.jsonl.gz")


def _first_flac(root: Path) -> Path:
    return root / "flac" / f"{sorted(f'spk{i % 2}-train-{i}' for i in range(3))[0]}.flac"


def manifest_truncated_flac(root: Path) -> list[str]:
    flac = _first_flac(root)
    flac.write_bytes(flac.read_bytes()[: flac.stat().st_size // 2])
    return [str(root / "train" / "recordings.jsonl.gz"), flac.name, "is truncated"]


def manifest_practically_silent_flac(root: Path) -> list[str]:
    flac = _first_flac(root)
    audio, rate = sf.read(flac)
    sf.write(flac, audio / np.max(np.abs(audio)) * 10 ** (-90 / 20), rate, format="FLAC", subtype="PCM_16")
    return [str(root / "train" / "recordings.jsonl.gz"), flac.name, "practically silent"]


@pytest.mark.parametrize("breaker", [manifest_truncated_flac, manifest_practically_silent_flac])
def test_bad_audio_in_lhotse_manifests(tmp_path: Path, breaker, capsys, monkeypatch) -> None:
    root = tmp_path / "manifests"
    for split in SENTENCES:
        write_manifest_split(root, split)
    data = tmp_path / "data"
    assert prepare_cli.main(["--set", f"manifest_root={root}", str(data)]) == 0
    before = snapshot(data)
    names = breaker(root)
    # --force: the stage's input hash covers the manifests, not the audio files they name (reported)
    code, errors = run_cli(prepare_cli.main, ["--force", "--set", f"manifest_root={root}", str(data)], "prepare",
                           capsys, monkeypatch)
    assert_one_line_error(code, errors, *names)
    assert_intact(data, before)
