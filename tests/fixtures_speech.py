"""A tiny real speech corpus for tests, laid out like stages 1 and 2 write it.

``tiny_speech`` (session-scoped pytest fixture) synthesises short command sentences with
espeak-ng, resamples them to 16 kHz, builds Lhotse cuts with 80-dim log-mel fbank stored with
Lilcom, computes global CMVN, and trains a sentencepiece BPE model whose piece 0 is ``<blk>``:

    <root>/fbank/cuts_train.jsonl.gz, cuts_dev.jsonl.gz, cmvn.npz, feats/
    <root>/lang/bpe.model

Import the fixture into a test module (``from fixtures_speech import tiny_speech``); the corpus
is built once per test session whichever module asks first.
"""

from __future__ import annotations

import functools
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import sentencepiece as spm
import soundfile as sf
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, Recording, RecordingSet
from lhotse import SupervisionSegment, SupervisionSet
from scipy.signal import resample_poly

SENTENCES = [
    "turn on the light",
    "turn off the light",
    "open the door",
    "close the door",
    "play some music",
    "stop the music",
    "call my mother",
    "call my brother",
    "what time is it",
    "set an alarm",
    "open the window",
    "close the window",
    "turn on the radio",
    "turn off the radio",
    "play the news",
    "stop the alarm",
]
VOICES = ["en-us", "en-gb"]
DEV_SENTENCES = 4  # the first sentences, spoken by the second voice, form the dev split


@dataclass(frozen=True)
class TinySpeech:
    """Paths of the tiny corpus: ``fbank_dir`` (cuts + cmvn.npz) and ``lang_dir`` (bpe.model)."""

    root: Path
    fbank_dir: Path
    lang_dir: Path
    texts: dict[str, str]  # cut id -> transcript


def synthesise(text: str, voice: str, wav_path: Path) -> None:
    """espeak-ng ``text`` with ``voice`` -> 16 kHz mono 16-bit ``wav_path``."""
    raw = wav_path.with_suffix(".22k.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True)
    audio, sr = sf.read(raw, dtype="float64")
    raw.unlink()
    assert sr == 22050, f"espeak-ng wrote {sr} Hz"
    sf.write(wav_path, resample_poly(audio, 160, 441), 16000, subtype="PCM_16")


def make_cuts(root: Path, split: str, items: list[tuple[str, str, str]]) -> CutSet:
    """``items`` of (utt id, voice, text) -> cuts with fbank features stored under ``root``."""
    recordings, supervisions = [], []
    for utt, voice, text in items:
        wav = root / "wav" / f"{utt}.wav"
        synthesise(text, voice, wav)
        rec = Recording.from_file(wav, recording_id=utt)
        recordings.append(rec)
        supervisions.append(SupervisionSegment(id=utt, recording_id=utt, start=0.0,
                                               duration=rec.duration, text=text, speaker=voice))
    cuts = CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings),
                                 supervisions=SupervisionSet.from_segments(supervisions))
    return cuts.compute_and_store_features(
        extractor=Fbank(FbankConfig(num_filters=80)), storage_path=root / "fbank" / f"feats_{split}",
        storage_type=LilcomChunkyWriter, num_jobs=1,
    )


def train_bpe(texts: list[str], lang_dir: Path, vocab_size: int = 40) -> None:
    """A sentencepiece BPE model with ``<blk>`` as piece 0 (the CTC blank) and ``<unk>`` as 1."""
    lang_dir.mkdir(parents=True, exist_ok=True)
    corpus = lang_dir / "text.txt"
    corpus.write_text("\n".join(texts) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(lang_dir / "bpe"), model_type="bpe", vocab_size=vocab_size,
        character_coverage=1.0, user_defined_symbols=["<blk>"], unk_id=1, bos_id=-1, eos_id=-1,
        pad_id=-1, minloglevel=2,
    )


@functools.cache
def build_tiny_speech(root: Path) -> TinySpeech:
    """Build the corpus under ``root`` (once per process and root)."""
    (root / "wav").mkdir(parents=True, exist_ok=True)
    (root / "fbank").mkdir(exist_ok=True)
    train_items = [(f"{v}-{i:02d}", v, s) for v in VOICES for i, s in enumerate(SENTENCES)]
    dev_items = [(f"dev-{i:02d}", "en-us+f3", s) for i, s in enumerate(SENTENCES[:DEV_SENTENCES])]
    fbank_dir = root / "fbank"
    train = make_cuts(root, "train", train_items)
    dev = make_cuts(root, "dev", dev_items)
    train.to_file(fbank_dir / "cuts_train.jsonl.gz")
    dev.to_file(fbank_dir / "cuts_dev.jsonl.gz")
    frames = np.concatenate([c.load_features() for c in train]).astype(np.float64)
    np.savez(fbank_dir / "cmvn.npz", mean=frames.mean(axis=0), std=frames.std(axis=0))
    train_bpe(SENTENCES, root / "lang")
    texts = {utt: text for utt, _, text in train_items + dev_items}
    return TinySpeech(root=root, fbank_dir=fbank_dir, lang_dir=root / "lang", texts=texts)


@pytest.fixture(scope="session")
def tiny_speech(tmp_path_factory: pytest.TempPathFactory) -> TinySpeech:
    """The tiny corpus, built once per test session."""
    return build_tiny_speech(tmp_path_factory.getbasetemp() / "tiny_speech")
