"""egs/mini_librispeech on corpora laid out exactly like mini LibriSpeech (train-clean-5 and
dev-clean-2: espeak-ng utterances in LibriSpeech's folders), MUSAN and RIRS_NOISES: ./run.sh stages
0-1 as a user runs them, the speaker split of dev-clean-2 into dev, test and adaptation speakers,
and the config errors of a speaker group. Nothing is downloaded."""

from __future__ import annotations

import pytest
from lhotse import CutSet, load_manifest

from neurosel import config as C
from neurosel.corpora.librispeech import LibriSpeechConfig, disjoint, parse_part
from neurosel.errors import NeuroselError
from test_librispeech import ROOT, run_recipe, write_corpora

SENTENCES = [["TURN ON THE LIGHT", "OPEN THE DOOR"], ["PLAY SOME MUSIC", "CALL MY MOTHER"],
             ["STOP THE MUSIC", "CLOSE THE WINDOW"], ["WHAT TIME IS IT", "SET AN ALARM"],
             ["TURN OFF THE RADIO", "PLAY THE NEWS"], ["CLOSE THE DOOR", "OPEN THE WINDOW"]]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+m2", "en-gb-scotland"]
MINI = {
    "train-clean-5": [("19", "198", "en-us", ["TURN ON THE LIGHT", "OPEN THE DOOR", "PLAY SOME MUSIC"]),
                      ("26", "495", "en-gb", ["CALL MY MOTHER", "STOP THE MUSIC", "CLOSE THE WINDOW"])],
    # six speakers: two per group of dev, test and adaptation audio
    "dev-clean-2": [(spk, "1000", voice, sentences)
                    for spk, voice, sentences in zip(["1272", "1462", "174", "2412", "3536", "5895"], VOICES, SENTENCES)],
}
CONDITIONS = ["music", "noise", "reverb", "reverb_noise"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    work = tmp_path_factory.mktemp("mini_librispeech")
    write_corpora(work / "corpus" / "download", MINI)
    return work, run_recipe(work, "--stage", "0", "--stop-stage", "1", recipe="mini_librispeech")


def speakers(work, split: str) -> set[str]:
    cuts = load_manifest(work / "data" / "fbank" / f"cuts_{split}.jsonl.gz", CutSet)
    return {s.speaker for c in cuts for s in c.supervisions}


@pytest.mark.slow
def test_stages_0_and_1_split_dev_clean_2_by_speaker(recipe) -> None:
    work, result = recipe
    assert result.returncode == 0, result.stderr[-3000:]
    splits = ["train", "dev", "test"] + [f"{p}{c}" for c in CONDITIONS for p in ("ood_adapt_", "ood_")]
    assert sorted(p.name for p in (work / "corpus" / "splits").iterdir()) == sorted(splits)
    assert speakers(work, "train") == {"19", "26"}
    # speakers sorted (1272 1462 174 2412 3536 5895) and dealt out in turn to groups 1, 2, 3
    dev, test, adapt = speakers(work, "dev"), speakers(work, "test"), speakers(work, "ood_adapt_noise")
    assert dev == {"1272", "2412"} and test == {"1462", "3536"} and adapt == {"174", "5895"}
    for condition in CONDITIONS:
        assert speakers(work, f"ood_{condition}") == test and speakers(work, f"ood_adapt_{condition}") == adapt
    # the Kaldi export of every split passes Kaldi's data dir rules (stage 0 checks them)
    assert all((work / "data" / "kaldi" / s / "spk2utt").is_file() for s in splits)


def test_speaker_group_specs() -> None:
    assert parse_part("dev-clean-2/2of3") == ("dev-clean-2", 2, 3) and parse_part("dev-clean") == ("dev-clean", 1, 1)
    assert disjoint("dev-clean-2/1of3", "dev-clean-2/2of3") and not disjoint("dev-clean-2/1of3", "dev-clean-2")
    assert not disjoint("dev-clean-2/1of2", "dev-clean-2/1of3") and disjoint("dev-clean", "test-clean")
    cfg = C.resolve(LibriSpeechConfig, ROOT / "egs" / "mini_librispeech" / "conf" / "corpus.yaml", None, "corpus", [])
    assert cfg.parts() == ["train-clean-5", "dev-clean-2"] and not cfg.natural
    with pytest.raises(NeuroselError, match="dev_part and test_part share utterances"):
        C.from_dict(LibriSpeechConfig, {"dev_part": "dev-clean-2/1of3", "test_part": "dev-clean-2"})
    with pytest.raises(NeuroselError, match="group 4 of 3 does not exist"):
        C.from_dict(LibriSpeechConfig, {"dev_part": "dev-clean-2/4of3"})
    with pytest.raises(NeuroselError, match="written <part>/<k>of<n>"):
        C.from_dict(LibriSpeechConfig, {"dev_part": "dev-clean-2/half"})
