"""egs/librispeech on small corpora laid out exactly like LibriSpeech, MUSAN and RIRS_NOISES (a
few espeak-ng utterances, generated noise, music and impulse responses): ./run.sh stages 0-1 as a
user runs them, and the corpus checks. Nothing is downloaded."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, load_manifest

from fixtures_speech import synthesise
from neurosel import config as C
from neurosel.corpora.conditions import halves
from neurosel.corpora.librispeech import LibriSpeechConfig, check_librispeech
from neurosel.errors import NeuroselError

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
# part -> [(speaker, chapter, voice, [sentences])]
LIBRISPEECH = {
    "train-clean-100": [("103", "1240", "en-us", ["TURN ON THE LIGHT", "OPEN THE DOOR", "PLAY SOME MUSIC"]),
                        ("1034", "121119", "en-gb", ["CALL MY MOTHER", "STOP THE MUSIC", "CLOSE THE WINDOW"])],
    "dev-clean": [("1272", "128104", "en-us+f3", ["WHAT TIME IS IT", "SET AN ALARM", "OPEN THE WINDOW"])],
    "test-clean": [("1089", "134686", "en-gb+m3", ["TURN OFF THE RADIO", "PLAY THE NEWS", "CLOSE THE DOOR"])],
    "dev-other": [("116", "288045", "en-us+whisper", ["STOP THE ALARM", "CALL MY BROTHER"])],
    "test-other": [("1688", "142285", "en-gb-scotland", ["TURN ON THE RADIO", "TURN OFF THE LIGHT"])],
}
CONDITIONS = ["music", "noise", "other", "reverb", "reverb_noise"]


def write_librispeech(root: Path, corpus: dict[str, list] = LIBRISPEECH) -> None:
    """``root/LibriSpeech/<part>/<speaker>/<chapter>/`` with ``<spk>-<chapter>-NNNN.flac`` and
    ``<spk>-<chapter>.trans.txt``, plus the top-level SPEAKERS.TXT and CHAPTERS.TXT, for each part
    of ``corpus`` (``{part: [(speaker, chapter, voice, [sentences])]}``)."""
    top = root / "LibriSpeech"
    speakers, chapters = [";ID  |SEX| SUBSET           |MINUTES| NAME"], [";ID    |READER|MINUTES| SUBSET"]
    for part, readers in corpus.items():
        for speaker, chapter, voice, sentences in readers:
            d = top / part / speaker / chapter
            d.mkdir(parents=True)
            lines = []
            for i, sentence in enumerate(sentences):
                utt = f"{speaker}-{chapter}-{i:04d}"
                wav = d / f"{utt}.wav"
                synthesise(sentence.lower(), voice, wav)
                audio, _ = sf.read(wav)
                sf.write(d / f"{utt}.flac", audio, RATE, format="FLAC", subtype="PCM_16")
                wav.unlink()
                lines.append(f"{utt} {sentence}\n")
            (d / f"{speaker}-{chapter}.trans.txt").write_text("".join(lines))
            speakers.append(f"{speaker:<5}| F | {part:<16} | 25.00 | Reader {speaker}")
            chapters.append(f"{chapter:<7}| {speaker:<6} | 10.00 | {part}")
    (top / "SPEAKERS.TXT").write_text("\n".join(speakers) + "\n")
    (top / "CHAPTERS.TXT").write_text("\n".join(chapters) + "\n")


def write_musan(root: Path, rng: np.random.Generator) -> None:
    """``root/musan/{noise,music,speech}/<source>/`` with 16 kHz wav files and ANNOTATIONS."""
    t = np.arange(int(2.5 * RATE)) / RATE
    parts = {
        "noise": {"free-sound": [rng.normal(0, 0.1, len(t)) for _ in range(2)],
                  "sound-bible": [np.cumsum(rng.normal(0, 0.01, len(t))) * 0.05 for _ in range(2)]},
        "music": {"fma": [0.1 * sum(np.sin(2 * np.pi * f * t) for f in chord) for chord in
                          ((220, 277, 330), (196, 247, 294), (262, 330, 392))]},
    }
    for part, sources in parts.items():
        for source, signals in sources.items():
            d = root / "musan" / part / source
            d.mkdir(parents=True)
            notes = []
            for i, signal in enumerate(signals):
                name = f"{part}-{source}-{i:04d}"
                sf.write(d / f"{name}.wav", np.clip(signal, -0.9, 0.9), RATE, subtype="PCM_16")
                notes.append(f"{name} classical N Artist_{i}" if part == "music" else f"{name} background")
            (d / "ANNOTATIONS").write_text("\n".join(notes) + "\n")
            (d / "LICENSE").write_text("fixture\n")
    speech = root / "musan" / "speech" / "librivox"
    speech.mkdir(parents=True)
    synthesise("the quick brown fox jumps over the lazy dog", "en-us+m7", speech / "speech-librivox-0000.wav")
    (speech / "ANNOTATIONS").write_text("speech-librivox-0000 male english\n")
    (root / "musan" / "README").write_text("MUSAN fixture\n")


def _rir(rng: np.random.Generator, t60: float, channels: int = 1) -> np.ndarray:
    """A decaying noise tail after a direct-path impulse, ``(samples, channels)``."""
    n = int(t60 * RATE)
    tail = rng.normal(0, 0.3, (n, channels)) * np.exp(-6.9 * np.arange(n) / n)[:, None]
    tail[: int(0.002 * RATE)] = 0
    tail[int(0.002 * RATE)] = 0.9
    return tail


def write_rirs_noises(root: Path, rng: np.random.Generator) -> None:
    """``root/RIRS_NOISES`` with real_rirs_isotropic_noises (RWCP and REVERB-challenge names, a
    two-channel one among them), simulated_rirs/<size>room/Room001 and pointsource_noises."""
    top = root / "RIRS_NOISES"
    real = top / "real_rirs_isotropic_noises"
    real.mkdir(parents=True)
    rirs = {"RWCP_type1_rir_circle_ane_imp050": _rir(rng, 0.3), "RWCP_type2_rir_cirline_e1a_imp070": _rir(rng, 0.5),
            "RVB2014_type1_rir_largeroom1_far_angla": _rir(rng, 0.7, channels=2)}
    for name, rir in rirs.items():
        sf.write(real / f"{name}.wav", rir, RATE, subtype="PCM_16")
    sf.write(real / "RVB2014_type1_noise_largeroom1_1.wav", rng.normal(0, 0.05, RATE), RATE, subtype="PCM_16")
    (real / "rir_list").write_text("".join(f"--rir-id {n} --room-id {n.rsplit('_', 2)[0]} RIRS_NOISES/"
                                           f"real_rirs_isotropic_noises/{n}.wav\n" for n in rirs))
    (real / "noise_list").write_text("--noise-id RVB2014_type1_noise_largeroom1_1 --noise-type isotropic "
                                     "RIRS_NOISES/real_rirs_isotropic_noises/RVB2014_type1_noise_largeroom1_1.wav\n")
    for size, t60 in (("small", 0.2), ("medium", 0.4), ("large", 0.8)):
        room = top / "simulated_rirs" / f"{size}room"
        (room / "Room001").mkdir(parents=True)
        sf.write(room / "Room001" / "Room001-00001.wav", _rir(rng, t60), RATE, subtype="PCM_16")
        (room / "rir_list").write_text(f"--rir-id {size}-Room001-00001 --room-id {size}-Room001 RIRS_NOISES/"
                                       f"simulated_rirs/{size}room/Room001/Room001-00001.wav\n")
    point = top / "pointsource_noises"
    point.mkdir()
    sf.write(point / "noise-free-sound-0001.wav", rng.normal(0, 0.05, RATE), RATE, subtype="PCM_16")
    (point / "noise_list").write_text("--noise-id noise-free-sound-0001 --noise-type point-source --bg-fg-type "
                                      "background RIRS_NOISES/pointsource_noises/noise-free-sound-0001.wav\n")
    (top / "README").write_text("RIRS_NOISES fixture\n")


def write_corpora(download: Path, corpus: dict[str, list] = LIBRISPEECH) -> None:
    """The three corpora where conf/corpus.yaml looks by default: ``<work-dir>/corpus/download``."""
    rng = np.random.default_rng(0)
    write_librispeech(download, corpus)
    write_musan(download, rng)
    write_rirs_noises(download, rng)


def run_recipe(work: Path, *args: str, recipe: str = "librispeech") -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["./run.sh", "--recipe", recipe, "--workdir", str(work), "--nj", "1",
                           "--quiet", "true", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    work = tmp_path_factory.mktemp("librispeech")
    write_corpora(work / "corpus" / "download")
    return work, run_recipe(work, "--stage", "0", "--stop-stage", "1")


def cuts(work: Path, split: str) -> CutSet:
    return load_manifest(work / "data" / "fbank" / f"cuts_{split}.jsonl.gz", CutSet)


def fitted_snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR of ``noisy`` against the scaled copy of ``clean`` it contains (least squares)."""
    gain = float(noisy @ clean / (clean @ clean))
    rest = noisy - gain * clean
    return 10 * np.log10((gain * gain * (clean @ clean)) / (rest @ rest))


@pytest.mark.slow
def test_stages_0_and_1(recipe) -> None:
    work, result = recipe
    assert result.returncode == 0, result.stderr[-3000:]
    splits = ["train", "dev", "test"] + [f"{p}{c}" for c in CONDITIONS for p in ("ood_adapt_", "ood_")]
    assert sorted(p.name for p in (work / "corpus" / "splits").iterdir()) == sorted(splits)
    for split in splits:
        assert len(cuts(work, split)) > 0 and cuts(work, split)[0].features.num_features == 80
    assert sorted(cuts(work, "train").ids) == sorted(f"{spk}-{ch}-{i:04d}" for spk, ch, _, s in
                                                     LIBRISPEECH["train-clean-100"] for i in range(len(s)))
    assert cuts(work, "ood_other")[0].supervisions[0].text == "TURN ON THE RADIO"
    # the synthetic conditions corrupt the test audio (same utterances, ids suffixed)
    clean = cuts(work, "test")
    for condition in ("noise", "music", "reverb", "reverb_noise"):
        ood = cuts(work, f"ood_{condition}")
        assert sorted(ood.ids) == sorted(f"{i}-{condition}" for i in clean.ids)
        for cut in ood:
            a = clean[cut.id.removesuffix(f"-{condition}")].load_audio()[0]
            b = cut.load_audio()[0]
            assert b.shape == a.shape
            snr = fitted_snr_db(a.astype(np.float64), b.astype(np.float64))
            if condition == "noise":
                assert -1.0 < snr < 16.0, snr
            elif condition == "music":
                assert 4.0 < snr < 16.0, snr
            else:
                assert snr < 20.0, snr  # reverberation changes the signal well beyond rounding
    # adaptation and test sets of a condition hear disjoint noise recordings
    def noises(split: str) -> set[str]:
        mixed = load_manifest(work / "corpus" / "splits" / split / "mix.jsonl.gz", CutSet)
        return {t.cut.recording.id for c in mixed for t in c.tracks[1:]}
    assert noises("ood_adapt_noise") and noises("ood_noise") and not noises("ood_adapt_noise") & noises("ood_noise")


@pytest.mark.slow
def test_rerun_skips_prepared_splits(recipe) -> None:
    work, first = recipe
    assert first.returncode == 0
    flac = next((work / "corpus" / "audio" / "ood_noise").glob("*.flac"))
    before = flac.stat().st_mtime_ns
    again = run_recipe(work, "--stage", "0", "--stop-stage", "0")
    assert again.returncode == 0, again.stderr[-2000:]
    assert flac.stat().st_mtime_ns == before


def test_missing_audio_names_transcript_line(tmp_path: Path) -> None:
    d = tmp_path / "LibriSpeech" / "dev-clean" / "1272" / "128104"
    d.mkdir(parents=True)
    sf.write(d / "1272-128104-0000.flac", np.full(RATE, 0.1), RATE, format="FLAC")
    (d / "1272-128104.trans.txt").write_text("1272-128104-0000 HELLO\n1272-128104-0001 WORLD\n")
    with pytest.raises(NeuroselError, match=r"1272-128104\.trans\.txt:2: utterance '1272-128104-0001': audio .* "
                                            r"does not exist"):
        check_librispeech(tmp_path / "LibriSpeech", ["dev-clean"])
    with pytest.raises(NeuroselError, match="part 'test-clean' does not exist"):
        check_librispeech(tmp_path / "LibriSpeech", ["test-clean"])


def test_config_errors_name_the_key() -> None:
    with pytest.raises(NeuroselError, match="'train-clean-99' is not a LibriSpeech part"):
        C.from_dict(LibriSpeechConfig, {"train_parts": ["train-clean-99"]})
    with pytest.raises(NeuroselError, match="adapt_part must differ from test_part"):
        C.from_dict(LibriSpeechConfig, {"adapt_part": "test-clean"})
    with pytest.raises(NeuroselError, match="conditions.noise: a condition needs noise, rir or both"):
        C.from_dict(LibriSpeechConfig, {"conditions": {"noise": {"snr_db": [0, 5]}}})


def test_halves_are_disjoint_and_need_two_recordings(tmp_path: Path) -> None:
    from lhotse import Recording, RecordingSet

    recs = []
    for i in range(5):
        sf.write(tmp_path / f"n{i}.wav", np.full(RATE // 10, 0.1), RATE)
        recs.append(Recording.from_file(tmp_path / f"n{i}.wav"))
    adapt, test = halves(RecordingSet.from_recordings(recs), "noise")
    assert sorted(adapt.ids) == ["n0", "n2", "n4"] and sorted(test.ids) == ["n1", "n3"]
    with pytest.raises(NeuroselError, match="noise: 1 recording"):
        halves(RecordingSet.from_recordings(recs[:1]), "noise")
