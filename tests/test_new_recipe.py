"""A new corpus as a user brings it: a Kaldi data dir with a pipe entry in wav.scp and segments,
through utils/new_recipe.sh and ./run.sh stages 0-4 of the tiny configuration; and every
validation failure of stage 0, each with its message (file, line, id) and a non-zero exit."""

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
import yaml
from lhotse import CutSet, load_manifest

from fixtures_speech import SENTENCES, synthesise
from neurosel.bin import prepare as prepare_cli
from neurosel.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
WER_LINE = re.compile(r"^%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \]$")
VOICES = {"train": ["en-us", "en-gb"], "dev": ["en-us+f3"], "test": ["en-gb+m3"]}
LONG_TRAIN = 3  # train sentences spoken into one long recording, cut by segments


def make_kaldi_corpus(root: Path) -> Path:
    """``root/data/{train,dev,test}`` Kaldi data dirs of espeak-ng speech, audio in ``root/wav``.

    train: one recording per utterance plus one long recording of LONG_TRAIN sentences read through
    a ``sox ... - |`` pipe, all cut by ``segments``; test has a pipe entry too; dev is plain files.
    """
    wav_dir = root / "wav"
    wav_dir.mkdir(parents=True)
    plan = {"train": [(v, s) for v in VOICES["train"] for s in SENTENCES],
            "dev": [(VOICES["dev"][0], s) for s in SENTENCES[:4]],
            "test": [(VOICES["test"][0], s) for s in SENTENCES[4:8]]}
    for split, items in plan.items():
        d = root / "data" / split
        d.mkdir(parents=True)
        wav_scp, text, utt2spk, segments = {}, {}, {}, {}
        for i, (voice, sentence) in enumerate(items):
            spk = voice.replace("+", "_").replace("-", "_")
            utt = f"{spk}-{split}-{i:03d}"
            wav = wav_dir / f"{utt}.wav"
            synthesise(sentence, voice, wav)
            pipe = split == "test" and i == 0
            wav_scp[utt] = f"sox -R {wav} -t wav - |" if pipe else str(wav)
            text[utt] = sentence
            utt2spk[utt] = spk
            segments[utt] = f"{utt} 0 {int(sf.info(wav).duration * 1000) / 1000:.3f}"
        if split == "train":
            _add_long_recording(wav_dir, wav_scp, text, utt2spk, segments)
            _write(d / "segments", segments)
        _write(d / "wav.scp", wav_scp)
        _write(d / "text", text)
        _write(d / "utt2spk", utt2spk)
        spk2utt: dict[str, list[str]] = {}
        for utt, spk in sorted(utt2spk.items()):
            spk2utt.setdefault(spk, []).append(utt)
        _write(d / "spk2utt", {spk: " ".join(utts) for spk, utts in spk2utt.items()})
    return root / "data"


def _add_long_recording(wav_dir: Path, wav_scp: dict, text: dict, utt2spk: dict, segments: dict) -> None:
    """One recording of LONG_TRAIN sentences with 0.4 s gaps, read through a pipe, and its segments."""
    pieces, start = [], 0.0
    gap = np.zeros(int(0.4 * 16000))
    for i, sentence in enumerate(SENTENCES[-LONG_TRAIN:]):
        part = wav_dir / f"long-{i}.wav"
        synthesise(sentence, "en-us", part)
        audio, _ = sf.read(part)
        utt = f"en_us-long-{i}"
        segments[utt] = f"long-rec {start:.3f} {start + len(audio) / 16000:.3f}"
        text[utt] = sentence
        utt2spk[utt] = "en_us"
        pieces += [audio, gap]
        start += (len(audio) + len(gap)) / 16000
    sf.write(wav_dir / "long.wav", np.concatenate(pieces), 16000, subtype="PCM_16")
    wav_scp["long-rec"] = f"sox -R {wav_dir / 'long.wav'} -t wav - |"


def _write(path: Path, table: dict[str, str]) -> None:
    """A Kaldi table file sorted as LC_ALL=C sorts it."""
    path.write_text("".join(f"{k} {v}\n" for k, v in sorted(table.items(), key=lambda kv: kv[0].encode())))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_kaldi_corpus(tmp_path_factory.mktemp("kaldi_corpus"))


@pytest.fixture
def recipe_name(request) -> str:
    """A recipe name under egs/ unique to this test run, removed afterwards."""
    name = f"test_new_recipe_{os.getpid()}"
    request.addfinalizer(lambda: shutil.rmtree(ROOT / "egs" / name, ignore_errors=True))
    return name


def sh(*args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(list(args), cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.slow
def test_kaldi_dir_through_new_recipe_and_stages_0_to_4(corpus: Path, recipe_name: str, tmp_path: Path) -> None:
    r = sh("utils/new_recipe.sh", recipe_name, *(f"{s}={corpus / s}" for s in ("train", "dev", "test")))
    assert r.returncode == 0, r.stderr
    conf = yaml.safe_load((ROOT / "egs" / recipe_name / "conf" / "prepare.yaml").read_text())
    assert conf["splits"] == {s: {"kaldi_dir": str(corpus / s)} for s in ("train", "dev", "test")}

    work = tmp_path / "work"
    r = sh("./run.sh", "--recipe", recipe_name, "--corpus-size", "tiny", "--workdir", str(work), "--nj", "1",
           "--stage", "0", "--stop-stage", "4", "--quiet", "true")
    assert r.returncode == 0, r.stderr[-3000:]

    cuts = load_manifest(work / "data" / "manifests" / "cuts_train.jsonl.gz", CutSet)
    long_cuts = sorted((c for c in cuts if c.recording.id == "long-rec"), key=lambda c: c.start)
    assert [c.id for c in long_cuts] == [f"en_us-long-{i}" for i in range(LONG_TRAIN)]
    assert long_cuts[0].recording.sources[0].type == "command" and long_cuts[1].start > 1.0
    assert len(cuts) == 2 * len(SENTENCES) + LONG_TRAIN
    assert (work / "data" / "kaldi" / "train" / "segments").is_file()
    fbank = load_manifest(work / "data" / "fbank" / "cuts_train.jsonl.gz", CutSet)
    feats = fbank[long_cuts[1].id].load_features()
    assert feats.shape == (pytest.approx(long_cuts[1].duration * 100, abs=2), 80)
    assert (work / "data" / "lang" / "bpe.model").is_file()
    assert (work / "exp" / "baseline" / "model.pt").is_file()
    decoded = work / "exp" / "decode" / "baseline" / "test"
    assert WER_LINE.match((decoded / "wer").read_text().strip())
    test_ids = {line.split()[0] for line in (corpus / "test" / "text").read_text().splitlines()}
    assert {line.split()[0] for line in (decoded / "hyp.txt").read_text().splitlines()} == test_ids


def test_new_recipe_refuses_bad_arguments(corpus: Path, recipe_name: str, tmp_path: Path) -> None:
    for args, message in ((["train=" + str(corpus / "train"), "eval=" + str(corpus / "dev")], "'eval' is not a split"),
                          (["train=" + str(tmp_path)], "has no wav.scp"),
                          (["train"], "is not <split>=<dir>")):
        r = sh("utils/new_recipe.sh", recipe_name, *args)
        assert r.returncode != 0 and message in r.stderr, r.stderr
        assert not (ROOT / "egs" / recipe_name).exists()
    assert sh("utils/new_recipe.sh", "synth").returncode != 0  # never over an existing recipe


STAGE_CONFIGS = {  # conf/<name>.yaml (overlay section <name>) -> the module and dataclass its stage resolves
    "prepare": ("neurosel.data.prepare", "PrepareConfig"), "features": ("neurosel.data.features", "FeatureConfig"),
    "lang": ("neurosel.lang.prepare", "LangConfig"), "train": ("neurosel.train.trainer", "TrainConfig"),
    "decode": ("neurosel.decode.run", "DecodeStageConfig"),
    "saliency": ("neurosel.recipe.saliency_stage", "SaliencyStageConfig"),
    "prune": ("neurosel.recipe.prune_stage", "PruneStageConfig"), "adapt": ("neurosel.recipe.adapt_systems", "AdaptConfig"),
}


@pytest.mark.parametrize("recipe", ["TEMPLATE", "librispeech"])
def test_recipe_configs_match_their_stages(recipe: str) -> None:
    """Every config run.sh reads resolves into its stage's dataclass, alone and with conf/tiny.yaml."""
    import importlib

    from neurosel import config as C

    conf = ROOT / "egs" / recipe / "conf"
    for name, (module, cls) in STAGE_CONFIGS.items():
        for overlay in (None, conf / "tiny.yaml"):
            C.resolve(getattr(importlib.import_module(module), cls), conf / f"{name}.yaml", overlay, name)
    if recipe == "TEMPLATE":
        assert (conf / "prepare.yaml").resolve() == (conf / "corpus.yaml").resolve()
    else:
        from neurosel.corpora.librispeech import LibriSpeechConfig

        C.resolve(LibriSpeechConfig, conf / "corpus.yaml", conf / "tiny.yaml", "corpus")
        assert os.access(ROOT / "egs" / recipe / "local" / "prepare_corpus.sh", os.X_OK)


# --- stage 0 validation: one row per kind of problem --------------------------------------------

def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def set_lines(path: Path, new: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in new))


def unsorted(d: Path) -> str:
    rows = lines(d / "utt2spk")
    set_lines(d / "utt2spk", [rows[1], rows[0]] + rows[2:])
    return f"{d / 'utt2spk'}:2: '{rows[0].split()[0]}' is out of order"


def id_missing_from_utt2spk(d: Path) -> str:
    rows = lines(d / "utt2spk")
    set_lines(d / "utt2spk", rows[:4] + rows[5:])
    return f"{d / 'text'}:5: '{rows[4].split()[0]}' has no entry in utt2spk"


def missing_audio(d: Path) -> str:
    reco, wav = lines(d / "wav.scp")[2].split()
    Path(wav).unlink()
    return f"{d / 'wav.scp'}:3: recording '{reco}': audio file {wav} does not exist"


def failing_pipe(d: Path) -> str:
    rows = lines(d / "wav.scp")
    n = next(i for i, row in enumerate(rows) if row.endswith("|"))
    reco = rows[n].split()[0]
    rows[n] = f"{reco} sox -R {d / 'no-such.wav'} -t wav - |"
    set_lines(d / "wav.scp", rows)
    return f"{d / 'wav.scp'}:{n + 1}: recording '{reco}': command failed with code"


def empty_transcript(d: Path) -> str:
    rows = lines(d / "text")
    utt = rows[6].split()[0]
    set_lines(d / "text", rows[:6] + [utt] + rows[7:])
    return f"{d / 'text'}:7: utterance '{utt}' has an empty transcript"


def duplicate_id(d: Path) -> str:
    rows = lines(d / "text")
    set_lines(d / "text", rows[:3] + [rows[2]] + rows[3:])
    return f"{d / 'text'}:4: duplicate id '{rows[2].split()[0]}' (first on line 3)"


def segment_past_the_end(d: Path) -> str:
    rows = lines(d / "segments")
    n = next(i for i, row in enumerate(rows) if " long-rec " in row)
    utt, reco, start, _ = rows[n].split()
    rows[n] = f"{utt} {reco} {start} 99.0"
    set_lines(d / "segments", rows)
    return f"{d / 'segments'}:{n + 1}: '{utt}' ends at 99.00 s, past the end of 'long-rec'"


def non_utf8_text(d: Path) -> str:
    rows = (d / "text").read_bytes().split(b"\n")
    utt = rows[1].split()[0].decode()
    rows[1] = rows[1].replace(b" ", b" \xff", 1)
    (d / "text").write_bytes(b"\n".join(rows))
    return f"{d / 'text'}:2: '{utt}': not valid UTF-8"


def spk2utt_disagrees(d: Path) -> str:
    rows = lines(d / "spk2utt")
    spk, *utts = rows[0].split()
    set_lines(d / "spk2utt", [" ".join([spk] + utts[1:])] + rows[1:])
    return f"{d / 'spk2utt'}:1: speaker '{spk}' does not list utterance '{sorted(utts)[0]}'"


def reco2dur_disagrees(d: Path) -> str:
    recos = [row.split()[0] for row in lines(d / "wav.scp")]
    set_lines(d / "reco2dur", [f"{r} 0.1" for r in recos])
    return f"{d / 'reco2dur'}:1: '{recos[0]}' says 0.100 s but its audio lasts"


BREAKERS = [unsorted, id_missing_from_utt2spk, missing_audio, failing_pipe, empty_transcript, duplicate_id,
            segment_past_the_end, non_utf8_text, spk2utt_disagrees, reco2dur_disagrees]


def broken_copy(corpus: Path, tmp_path: Path) -> Path:
    """A copy of the corpus (data dirs and audio) whose wav.scp files point at the copied audio."""
    copy = tmp_path / "copy"
    shutil.copytree(corpus.parent, copy)
    for scp in (copy / "data").glob("*/wav.scp"):
        scp.write_text(scp.read_text().replace(str(corpus.parent), str(copy)))
    return copy / "data"


@pytest.mark.parametrize("breaker", BREAKERS)
def test_each_problem_is_named_and_nothing_is_written(corpus: Path, tmp_path: Path, breaker, capsys,
                                                      monkeypatch) -> None:
    data = broken_copy(corpus, tmp_path)
    expected = breaker(data / "train")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["prepare"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(prepare_cli.main, ["--set", f"kaldi_root={data}", str(out)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("prepare: error:")]
    assert e.value.code == 1 and len(errors) == 1 and expected in errors[0], (expected, errors)
    assert not out.exists() or not any(p.is_file() for p in out.rglob("*"))


def test_run_sh_stops_on_a_bad_data_dir(corpus: Path, recipe_name: str, tmp_path: Path) -> None:
    data = broken_copy(corpus, tmp_path)
    expected = segment_past_the_end(data / "train")
    assert sh("utils/new_recipe.sh", recipe_name, *(f"{s}={data / s}" for s in ("train", "dev"))).returncode == 0
    work = tmp_path / "work"
    r = sh("./run.sh", "--recipe", recipe_name, "--workdir", str(work), "--stage", "0", "--stop-stage", "0",
           "--quiet", "true")
    assert r.returncode != 0 and expected in r.stderr, r.stderr[-2000:]
    assert not (work / "data" / "manifests" / "cuts_train.jsonl.gz").exists()
