"""Scoring: counts against kaldialign, file formats, empty and missing transcripts."""

from __future__ import annotations

import re

import kaldialign
import pytest

from neurosel.bin.score import main as score_main
from neurosel.errors import NeuroselError
from neurosel.score import read_text, score

REF = {
    "u1": "turn on the kitchen light".split(),
    "u2": "open the door".split(),
    "u3": "call my sister".split(),  # empty hypothesis: 3 deletions
    "u4": [],                         # empty reference: 2 insertions
    "u5": "play some music".split(),  # missing from hyp: 3 deletions
}
HYP = {
    "u1": "turn the kitchen lights".split(),  # 1 del, 1 sub
    "u2": "open the door now".split(),        # 1 ins
    "u3": [],
    "u4": "hello there".split(),
}


def test_counts_match_kaldialign_and_hand_count(tmp_path):
    result = score(REF, HYP, tmp_path)
    expected = {"ins": 0, "del": 0, "sub": 0}
    for utt, ref in REF.items():
        counts = kaldialign.edit_distance(ref, HYP.get(utt, []))
        for k in expected:
            expected[k] += counts[k]
    assert (result.insertions, result.deletions, result.substitutions) == (
        expected["ins"], expected["del"], expected["sub"]) == (3, 7, 1)
    assert result.errors == 11 and result.ref_words == 14
    assert result.wer == pytest.approx(100 * 11 / 14)
    assert result.missing == ["u5"]


def test_files(tmp_path):
    score(REF, HYP, tmp_path)
    wer = (tmp_path / "wer").read_text()
    assert wer == "%WER 78.57 [ 11 / 14, 3 ins, 7 del, 1 sub ]\n"
    assert re.fullmatch(r"%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \]\n", wer)
    assert (tmp_path / "hyp.txt").read_text() == (
        "u1 turn the kitchen lights\nu2 open the door now\nu3\nu4 hello there\n")
    assert (tmp_path / "ref.txt").read_text().splitlines()[3:] == ["u4", "u5 play some music"]
    errs = (tmp_path / "errs.txt").read_text().splitlines()
    assert errs[0] == wer.strip()
    assert "u5" in errs[1] and "no hypothesis" in errs[1]
    u1 = [line for line in errs if line.startswith("u1 ")]
    assert [line.split() for line in u1] == [
        ["u1", "ref", "turn", "on", "the", "kitchen", "light"],
        ["u1", "hyp", "turn", "***", "the", "kitchen", "lights"],
        ["u1", "op", "C", "D", "C", "C", "S"],
        ["u1", "#csid", "3", "1", "0", "1"],
    ]
    # columns line up: each word starts where its partner on the other line starts
    assert u1[0].index("kitchen") == u1[1].index("kitchen")
    assert "u4 #csid 0 0 2 0" in errs and "u5 #csid 0 0 0 3" in errs


def test_all_empty_and_perfect(tmp_path):
    empty = score({"a": []}, {"a": []}, tmp_path / "e")
    assert empty.errors == 0 and empty.wer == 0.0
    assert (tmp_path / "e" / "wer").read_text() == "%WER 0.00 [ 0 / 0, 0 ins, 0 del, 0 sub ]\n"
    only_ins = score({"a": []}, {"a": ["x", "y"]}, tmp_path / "i")
    assert only_ins.wer == 200.0  # errors over one word when there is no reference word
    perfect = score({"a": ["x"], "b": ["y", "z"]}, {"a": ["x"], "b": ["y", "z"]}, tmp_path / "p")
    assert perfect.line() == "%WER 0.00 [ 0 / 3, 0 ins, 0 del, 0 sub ]"


def test_hypothesis_without_reference_is_an_error(tmp_path):
    with pytest.raises(NeuroselError, match="'zz' has no reference"):
        score({"a": ["x"]}, {"a": ["x"], "zz": ["y"]}, tmp_path)
    assert not (tmp_path / "wer").exists()


def test_cli(tmp_path, capsys):
    ref = tmp_path / "ref"
    hyp = tmp_path / "hyp"
    ref.write_text("u1 a b c\nu2 d e\n")
    hyp.write_text("u1 a x c\nu2\n")
    assert score_main([str(ref), str(hyp), str(tmp_path / "out")]) == 0
    assert capsys.readouterr().out == "%WER 60.00 [ 3 / 5, 0 ins, 2 del, 1 sub ]\n"
    assert read_text(tmp_path / "out" / "hyp.txt") == {"u1": ["a", "x", "c"], "u2": []}


def test_bad_text_names_file_and_line(tmp_path):
    bad = tmp_path / "hyp"
    bad.write_bytes(b"u1 a b\nu2 \xc3\x28 c\n")
    with pytest.raises(NeuroselError, match=f"{bad}:2: 'u2': not valid UTF-8"):
        read_text(bad)
