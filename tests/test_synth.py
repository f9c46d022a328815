"""The synthetic corpus generator: text, conditions, determinism, and a tiny corpus end to end."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from neurosel.config import resolve
from neurosel.errors import NeuroselError
from neurosel.synth import conditions as cond
from neurosel.synth.config import SHIPPED_GRAMMAR, CorpusConfig
from neurosel.synth.corpus import make_corpus
from neurosel.synth.plan import split_names
from neurosel.synth.text import draw_sentences, load_grammar
from neurosel.synth.tts import check_engines, synthesize
from neurosel.synth.voices import Speaker

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth" / "conf"
SR = 16000
# A few utterances per split; every condition, babble, speed perturbation and both engines.
SMALL = ["sizes.train=6", "sizes.dev=2", "sizes.test=2", "sizes.ood_adapt=3", "sizes.ood_test=2",
         "sizes.babble_sources=3", "utts_per_speaker=2", "text.lm_sentences=50"]


def small_config(*extra: str) -> CorpusConfig:
    return resolve(CorpusConfig, CONF / "corpus.yaml", CONF / "tiny.yaml", "corpus", SMALL + list(extra))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Seed 0 made in this process and over 2 processes, and seed 1."""
    root = tmp_path_factory.mktemp("synth")
    made = {}
    for name, nj, seed in (("a", 1, 0), ("b", 2, 0), ("c", 2, 1)):
        make_corpus(small_config(f"seed={seed}"), root / name, nj=nj, quiet=True)
        made[name] = root / name
    return made


def corpus_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (wav.scp and manifest with the corpus path masked)."""
    out = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if path.name in ("wav.scp", "manifest.json"):
            data = data.replace(str(root).encode(), b"ROOT")
        out[str(path.relative_to(root))] = data
    return out


def read_table(path: Path) -> list[tuple[str, str]]:
    return [tuple(line.split(" ", 1)) for line in path.read_text().splitlines()]


# --- text ---------------------------------------------------------------------------------------

def test_grammar_vocabulary_and_sentences():
    grammar = load_grammar(SHIPPED_GRAMMAR)
    assert len(grammar.vocabulary()) >= 500
    sentences = draw_sentences(grammar, 2000, np.random.default_rng(0), set(), 4, 12)
    assert len(set(sentences)) == 2000
    for s in sentences:
        assert re.fullmatch(r"[a-z']+( [a-z']+)*", s), s
        assert 4 <= len(s.split()) <= 12


def test_grammar_errors_name_the_line(tmp_path):
    bad = tmp_path / "grammar.txt"
    bad.write_text("<sentence>:\n  turn on the <nowhere>\n")
    with pytest.raises(NeuroselError, match=r"grammar.txt:2: <nowhere> is neither"):
        load_grammar(bad)
    bad.write_text("<sentence>:\n  Turn on the light\n")
    with pytest.raises(NeuroselError, match=r"grammar.txt:2: 'Turn'"):
        load_grammar(bad)
    bad.write_text("<sentence>:\n  turn ( on | off the light\n")
    with pytest.raises(NeuroselError, match=r"grammar.txt:2: '\(' without a matching"):
        load_grammar(bad)


# --- conditions ---------------------------------------------------------------------------------

def speech_like(seconds: float = 1.5) -> np.ndarray:
    """Real TTS speech: the conditions are meant for it."""
    return synthesize(Speaker("flite", "kal16", 1.0, 1.0), "set the kitchen light to forty percent",
                      CorpusConfig().voices)[: round(seconds * SR)]


@pytest.mark.parametrize("codec", ["mulaw", "gsm"])
def test_telephone_has_no_energy_above_4khz(codec):
    x = cond.set_level(speech_like(), -26) + 0.01 * np.random.default_rng(0).standard_normal(round(1.5 * SR))
    y = cond.telephone(x, codec, 300, 3400)
    assert len(y) == len(x)
    power = np.abs(np.fft.rfft(y)) ** 2
    freqs = np.fft.rfftfreq(len(y), 1 / SR)
    assert power[freqs > 4200].sum() < 1e-3 * power.sum()
    assert power[(freqs > 500) & (freqs < 3000)].sum() > 0.5 * power.sum()


def test_mulaw_round_trip_is_close_and_never_zero():
    x = np.linspace(-1, 1, 10001)
    y = cond.mulaw_decode(cond.mulaw_encode(x))
    assert np.all(y != 0)
    assert np.all(np.abs(y - x) <= 0.025 * np.abs(x) + 1e-4)  # 8-bit companding: ~2 % relative error


@pytest.mark.parametrize("snr_db", [0.0, 12.5, 30.0])
def test_mixing_hits_the_requested_snr(snr_db):
    speech = cond.pad_silence(speech_like(), 0.3, 0.4)  # the silence must not lower the speech level
    noise = cond.coloured_noise(len(speech), 1.0, np.random.default_rng(1))
    mixed = cond.mix_at_snr(speech, noise, snr_db)
    measured = 10 * np.log10(cond.active_level(speech) / np.mean((mixed - speech) ** 2))
    assert abs(measured - snr_db) < 0.5
    assert abs(10 * np.log10(cond.active_level(speech) / cond.active_level(speech_like()))) < 0.5


def test_babble_is_normalised_speech_of_the_right_length():
    sources = [speech_like(0.8), speech_like(1.2), speech_like(1.0)]
    b = cond.babble(sources, 3 * SR, np.random.default_rng(2))
    assert b.shape == (3 * SR,)
    assert np.mean(b**2) == pytest.approx(1.0)


def test_coloured_noise_slope():
    n = 2**16
    for alpha, expect_db in ((0.0, 0.0), (2.0, -20 * np.log10(4000 / 250))):
        x = cond.coloured_noise(n, alpha, np.random.default_rng(3))
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(n, 1 / SR)
        low = power[(freqs > 200) & (freqs < 300)].mean()
        high = power[(freqs > 3800) & (freqs < 4200)].mean()
        assert abs(10 * np.log10(high / low) - expect_db) < 2.0


def test_room_impulse_response_decay_and_direct_path():
    t60, drr = 0.4, 5.0
    rir = cond.room_impulse_response(t60, drr, 3.0, np.random.default_rng(4))
    assert rir[0] == 1.0 and np.all(rir[1:48] == 0)  # the direct path leads the 3 ms predelay
    assert 10 * np.log10(1.0 / np.sum(rir[1:] ** 2)) == pytest.approx(drr)
    # Schroeder backward integration of the tail, T20 extrapolated to 60 dB
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    decay = 10 * np.log10(energy / energy[1])
    t = np.arange(len(rir)) / SR
    fit = (decay < -5) & (decay > -25)
    slope = np.polyfit(t[fit], decay[fit], 1)[0]
    assert -60 / slope == pytest.approx(t60, rel=0.15)
    x = speech_like()
    y = cond.reverberate(x, rir)
    assert len(y) == len(x) + len(rir) - 1
    assert np.mean(y[len(x):] ** 2) > 0  # a reverberant tail after the dry signal ends


def test_speed_perturbation_changes_duration():
    x = speech_like()
    assert len(cond.speed_perturb(x, 0.9)) == pytest.approx(len(x) / 0.9, abs=2)
    assert len(cond.speed_perturb(x, 1.1)) == pytest.approx(len(x) / 1.1, abs=2)


# --- corpus -------------------------------------------------------------------------------------

def test_same_seed_same_bytes_in_any_process_order(corpora):
    a, b = corpus_files(corpora["a"]), corpus_files(corpora["b"])
    assert a.keys() == b.keys()
    assert [k for k in a if a[k] != b[k]] == []


def test_different_seed_different_corpus(corpora):
    wavs_a = {p.read_bytes() for p in (corpora["a"] / "wav").rglob("*.wav")}
    wavs_c = {p.read_bytes() for p in (corpora["c"] / "wav").rglob("*.wav")}
    assert wavs_a.isdisjoint(wavs_c)
    assert (corpora["a"] / "data/train/text").read_bytes() != (corpora["c"] / "data/train/text").read_bytes()


def test_tiny_corpus_data_dirs(corpora):
    root = corpora["a"]
    cfg = small_config()
    speakers: dict[str, set[str]] = {}
    sentences: dict[str, set[str]] = {}
    for split in split_names(cfg):
        d = root / "data" / split
        tables = {name: read_table(d / name) for name in ("wav.scp", "text", "utt2spk", "utt2dur", "spk2utt")}
        for name, rows in tables.items():
            keys = [k for k, _ in rows]
            assert keys == sorted(keys, key=str.encode) and len(set(keys)) == len(keys), f"{split}/{name}"
        utts = [k for k, _ in tables["wav.scp"]]
        for name in ("text", "utt2spk", "utt2dur"):
            assert [k for k, _ in tables[name]] == utts
        utt2spk = dict(tables["utt2spk"])
        assert all(u.startswith(s + "-") for u, s in utt2spk.items())
        assert {u: s for s, us in tables["spk2utt"] for u in us.split()} == utt2spk
        for utt, path in tables["wav.scp"]:
            audio, rate = sf.read(path, dtype="int16")
            info = sf.info(path)
            assert (rate, info.channels, info.subtype) == (SR, 1, "PCM_16")
            assert Path(path).is_absolute()
            assert dict(tables["utt2dur"])[utt] == f"{len(audio) / SR:.4f}"
            assert longest_zero_run(audio) < 20, f"{path}: digital silence"
        speakers[split] = {re.sub(r"^sp[0-9.]+-", "", s) for s in utt2spk.values()}
        sentences[split] = {t for _, t in tables["text"]}
    expected = cfg.sizes.train * (1 + len(cfg.speed_perturb.factors))
    assert len(read_table(root / "data/train/wav.scp")) == expected
    assert any(u.startswith("sp0.9-") for u, _ in read_table(root / "data/train/utt2spk"))
    assert speakers["dev"] <= speakers["train"]
    voices = {split: {re.sub(r"_s[0-9]+(_p[0-9]+)?$", "", s) for s in spk} for split, spk in speakers.items()}
    assert voices["test"] <= voices["train"], "test speaks with the training voices"
    for split in split_names(cfg):
        if split.startswith("ood_") or split == "test":
            assert speakers[split].isdisjoint(speakers["train"]), split
        if split.startswith("ood_"):
            assert voices[split].isdisjoint(voices["train"]), split
    for c in cfg.conditions:
        assert sentences[f"ood_adapt_{c}"].isdisjoint(sentences[f"ood_{c}"])
        assert sentences[f"ood_{c}"].isdisjoint(sentences["train"])


def test_rerun_is_a_no_op_and_a_killed_run_resumes(corpora, tmp_path):
    root = tmp_path / "corpus"
    cfg = small_config()
    make_corpus(cfg, root, nj=1, quiet=True)
    before = corpus_files(root)
    mtimes = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    make_corpus(cfg, root, nj=1, quiet=True)
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == mtimes
    # what a kill leaves: no manifest, a missing wav, a stale temporary, a data dir not yet written
    victim = sorted((root / "wav" / "ood_reverb").glob("*.wav"))[0]
    victim.unlink()
    (root / "manifest.json").unlink()
    (root / "data" / "ood_reverb" / "text").unlink()
    (victim.parent / f".{victim.name}.abc.tmp.wav").write_bytes(b"partial")
    make_corpus(cfg, root, nj=1, quiet=True)
    assert corpus_files(root) == before
    kept = sorted((root / "wav" / "train").glob("*.wav"))[0]
    assert kept.stat().st_mtime_ns == mtimes[kept]


def test_other_config_in_same_dir_is_refused(corpora):
    with pytest.raises(NeuroselError, match="another config or seed"):
        make_corpus(small_config("seed=5"), corpora["a"], nj=1, quiet=True)


@pytest.mark.parametrize("override, key", [
    ("noise.snr_db=[20, 10]", "noise.snr_db"),
    ("telephone.codecs=[amr]", "telephone.codecs"),
    ("conditions=[noise, fog]", "conditions"),
    ("voices.espeak.unseen_variants=[m3]", "voices.espeak"),
    ("speed_perturb.factors=[1.0]", "speed_perturb.factors"),
    ("sizes.train=0", "sizes.train"),
    ("voices.espeak.weight=0", "voices: no unseen voice"),
])
def test_bad_config_names_the_key(override, key, tmp_path):
    with pytest.raises(NeuroselError, match=re.escape(key)):
        make_corpus(small_config(override, "voices.flite.unseen=[]"), tmp_path, quiet=True)


def test_unknown_voice_names_the_key(tmp_path):
    with pytest.raises(NeuroselError, match="voices.espeak.train_variants: espeak-ng has no variant 'zz9'"):
        make_corpus(small_config("voices.espeak.train_variants=[m1, zz9]"), tmp_path, quiet=True)


def test_missing_engine_names_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NeuroselError, match=r"espeak-ng not found: install the Debian package.*espeak-ng"):
        check_engines(CorpusConfig().voices, {"espeak", "flite"})


def test_cli_reports_bad_config_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "local/make_synth_corpus.py"), "--config",
                           str(CONF / "corpus.yaml"), "--set", "reverb.t60_s=[0.5]", str(tmp_path / "c")],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "make_synth_corpus.py: error: reverb.t60_s: expected [low, high] with 0.05 <= low <= high <= 3, got [0.5]"]


def test_shipped_yaml_matches_the_code_defaults():
    assert resolve(CorpusConfig, CONF / "corpus.yaml") == CorpusConfig()


def longest_zero_run(audio: np.ndarray) -> int:
    edges = np.diff(np.concatenate([[0], (audio == 0).astype(int), [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if len(starts) else 0
