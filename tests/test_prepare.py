"""Stage 0 and 1 on a small Kaldi data dir of real espeak-ng speech made here."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, load_manifest
from scipy.signal import resample_poly

from fixtures_speech import synthesise
from neurosel.data.prepare import PrepareConfig, split_sources
from neurosel.errors import NeuroselError
from neurosel.data.batches import load_cmvn

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["turn on the kitchen light", "what time is it", "play some music please",
             "set an alarm for seven", "open the garage door", "call my sister"]


def make_data_dir(root: Path, split: str, sentences: list[str]) -> Path:
    d = root / split
    d.mkdir(parents=True)
    rows = []
    for i, text in enumerate(sentences):
        utt = f"spk{i % 2}-{split}-{i:03d}"
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(exist_ok=True)
        synthesise(text, "en-us", wav)
        rows.append((utt, f"spk{i % 2}", str(wav), text))
    rows.sort()
    (d / "wav.scp").write_text("".join(f"{u} {w}\n" for u, _, w, _ in rows))
    (d / "text").write_text("".join(f"{u} {t}\n" for u, _, _, t in rows))
    (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s, _, _ in rows))
    return d


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_data_dir(root, "train", SENTENCES[:4])
    make_data_dir(root, "dev", SENTENCES[4:])
    return root


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd or ROOT)


def test_prepare_and_features(corpus: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    r = run("neurosel.bin.prepare", "--set", f"kaldi_root={corpus}", str(data))
    assert r.returncode == 0, r.stderr
    cuts = load_manifest(data / "manifests" / "cuts_train.jsonl.gz", CutSet)
    assert sorted(c.id for c in cuts) == sorted((corpus / "train" / "text").read_text().split("\n")[i].split()[0]
                                                for i in range(4))
    assert all(c.supervisions[0].text for c in cuts)
    assert (data / "kaldi" / "dev" / "wav.scp").is_file()
    assert "up to date" not in r.stderr
    again = run("neurosel.bin.prepare", "--set", f"kaldi_root={corpus}", str(data))
    assert again.returncode == 0 and "up to date" in again.stderr

    fbank = tmp_path / "fbank"
    r = make_fbank("--nj", "2", "--overrides", "write_kaldi=true", str(data), str(fbank))
    assert r.returncode == 0, r.stderr
    assert (fbank / "log" / "features.2.log").is_file() and not (fbank / "parts").exists()
    cuts = load_manifest(fbank / "cuts_train.jsonl.gz", CutSet)
    assert list(cuts.ids) == sorted(cuts.ids) and len(cuts) == 4
    feats = cuts[0].load_features()
    assert feats.shape[1] == 80 and feats.shape[0] == pytest.approx(cuts[0].duration * 100, abs=2)
    mean, std = (t.double().numpy() for t in load_cmvn(fbank / "cmvn.npz"))
    stacked = np.concatenate([c.load_features() for c in cuts])
    np.testing.assert_allclose(mean, stacked.mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std, stacked.std(0), rtol=1e-4, atol=1e-4)
    import kaldiio

    ark = dict(kaldiio.load_scp(str(fbank / "kaldi" / "train" / "feats.scp")))
    np.testing.assert_array_equal(ark[cuts[0].id], feats)
    # one job computes the same features as two
    one = tmp_path / "fbank1"
    assert make_fbank("--nj", "1", "--overrides", "write_kaldi=true", str(data), str(one)).returncode == 0
    np.testing.assert_array_equal(load_manifest(one / "cuts_train.jsonl.gz", CutSet)[cuts[0].id].load_features(), feats)
    # up to date: skipped; a config change redoes the stage and says why
    r = make_fbank("--nj", "2", "--overrides", "write_kaldi=true", str(data), str(fbank))
    assert r.returncode == 0 and "up to date" in r.stderr
    r = make_fbank("--nj", "2", "--overrides", "write_kaldi=true num_mel_bins=40", str(data), str(fbank))
    assert r.returncode == 0 and "changed" in r.stderr
    assert load_manifest(fbank / "cuts_dev.jsonl.gz", CutSet)[0].load_features().shape[1] == 40


def make_fbank(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(["steps/make_fbank.sh", *args], capture_output=True, text=True, cwd=ROOT, env=env)


def broken_copy(corpus: Path, tmp_path: Path) -> Path:
    root = tmp_path / "broken"
    shutil.copytree(corpus, root)
    for split in ("train", "dev"):
        scp = root / split / "wav.scp"
        scp.write_text(scp.read_text().replace(str(corpus), str(root)))
    return root


def _first(root: Path, name: str) -> tuple[str, str]:
    line = (root / "train" / name).read_text().splitlines()[0]
    key, value = line.split(maxsplit=1)
    return key, value


def corrupt_wav(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    Path(wav).write_bytes(b"RIFF\x00\x00garbage" * 10)
    return Path(wav).name


def truncated_wav(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    data = Path(wav).read_bytes()
    Path(wav).write_bytes(data[: len(data) // 2])
    return "truncated"


def empty_transcript(root: Path) -> str:
    key, _ = _first(root, "text")
    text = root / "train" / "text"
    lines = text.read_text().splitlines()
    lines[0] = key
    text.write_text("\n".join(lines) + "\n")
    return "empty transcript"


def duplicate_id(root: Path) -> str:
    text = root / "train" / "text"
    lines = text.read_text().splitlines()
    text.write_text("\n".join([lines[0]] + lines) + "\n")
    return "duplicate id"


def wrong_rate(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    audio, sr = sf.read(wav)
    sf.write(wav, resample_poly(audio, 1, 2), sr // 2)
    return "8000 Hz"


def missing_audio(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    Path(wav).unlink()
    return "does not exist"


def non_utf8(root: Path) -> str:
    text = root / "train" / "text"
    text.write_bytes(text.read_bytes().replace(b"turn", b"t\xffrn"))
    return "UTF-8"


def silent_audio(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    audio, sr = sf.read(wav)
    sf.write(wav, np.zeros_like(audio), sr)
    return "all zeros"


def stereo_audio(root: Path) -> str:
    _, wav = _first(root, "wav.scp")
    audio, sr = sf.read(wav)
    sf.write(wav, np.stack([audio, audio], 1), sr)
    return "2 channels"


@pytest.mark.parametrize("breaker", [corrupt_wav, truncated_wav, empty_transcript, duplicate_id,
                                     wrong_rate, missing_audio, non_utf8, silent_audio, stereo_audio])
def test_bad_input_is_one_line_error(corpus: Path, tmp_path: Path, breaker) -> None:
    root = broken_copy(corpus, tmp_path)
    expected = breaker(root)
    data = tmp_path / "data"
    r = run("neurosel.bin.prepare", "--set", f"kaldi_root={root}", str(data))
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and expected in errors[0], r.stderr
    assert str(root / "train") in errors[0]
    assert not (data / "manifests" / "cuts_train.jsonl.gz").exists()
    assert not (data / "manifests" / ".done").exists()


def test_unknown_config_key(tmp_path: Path) -> None:
    conf = tmp_path / "prepare.yaml"
    conf.write_text("sampling_rate: 16000\nsample_rate: 8000\n")
    r = run("neurosel.bin.prepare", "--config", str(conf), str(tmp_path / "data"))
    assert r.returncode == 1 and "unknown key 'sample_rate'" in r.stderr and str(conf) in r.stderr


def test_a_bad_later_split_leaves_nothing_written(corpus: Path, tmp_path: Path) -> None:
    root = broken_copy(corpus, tmp_path)
    text = root / "train" / "text"  # train is loaded after dev, which is fine
    lines = text.read_text().splitlines()
    first = lines[0].split()[0]
    text.write_text("\n".join([first] + lines[1:]) + "\n")
    data = tmp_path / "data"
    r = run("neurosel.bin.prepare", "--set", f"kaldi_root={root}", str(data))
    assert r.returncode == 1 and f"{text}:1: utterance '{first}' has an empty transcript" in r.stderr, r.stderr
    assert not (data / "manifests" / "cuts_dev.jsonl.gz").exists()


@pytest.mark.parametrize("folder, message", [("eval", "split 'eval': not a split name"),
                                             ("ood_adapt_noise", "split 'ood_adapt_noise' has no test set 'ood_noise'")])
def test_split_names_are_checked(corpus: Path, tmp_path: Path, folder: str, message: str) -> None:
    root = tmp_path / "root"
    shutil.copytree(corpus, root)
    shutil.copytree(root / "dev", root / folder)
    with pytest.raises(NeuroselError, match=re.escape(message)):
        split_sources(PrepareConfig(kaldi_root=str(root)))
