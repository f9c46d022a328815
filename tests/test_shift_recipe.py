"""The shift command (``python -m neurosel.bin.shift``, issue 18) on the tiny recipe's model: fit
measures every labelled set and judges the predictors leave-one-condition-out without ever fitting
on a held-out set; score gives per-utterance and per-set signals, a predicted WER with its interval
and a verdict for a recipe set as cuts and for a Kaldi data dir of its wav files (features computed
on the fly, equal to stage 1's); and the one-line errors. Nothing is written into the shared work
dir: outputs go under ``tmp_path``, and a broken work dir is a tree of links beside it."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import sys
from pathlib import Path

import pytest
from lhotse import CutSet

from neurosel.bin.shift import main as shift_main
from neurosel.cli import run_main
from neurosel.errors import NeuroselError
from neurosel.model import build_model, load_model, save_model
from neurosel.recipe import layout
from neurosel.recipe.shift import (COMBINED, EVALUATION_JSON, PLOT_PNG, POOLED_SIGNALS, PREDICTED, PREDICTOR_JSON,
                                   SEARCH, SIGNALS_TSV, SUMMARY_JSON, UTTERANCES_TSV, IN_DOMAIN, RecipeFiles,
                                   fit_recipe)
from neurosel.recipe.shift_score import score_audio

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fitted(tiny_recipe, tmp_path_factory) -> tuple[Path, Path, dict]:
    """(work dir, fit's output dir, its evaluation) for the tiny run, fitted once."""
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = tmp_path_factory.mktemp("shift_fit")
    return workdir, out, fit_recipe(workdir, out)


def read_tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def labelled_sets(workdir: Path) -> list[str]:
    files = RecipeFiles(workdir)
    return sorted(s for s in layout.splits(files.fbank) if not layout.is_adapt_set(s) and s != layout.TRAIN
                  and (files.decode(s) / "wer").is_file())


def test_fit_judges_every_candidate_on_held_out_conditions_only(fitted):
    workdir, out, evaluation = fitted
    assert not (workdir / "exp" / "shift").exists()  # the shared work dir is left alone
    sets = labelled_sets(workdir)
    assert {layout.DEV, layout.TEST} <= set(sets) and any(layout.is_ood_set(s) for s in sets)
    rows = read_tsv(out / SIGNALS_TSV)
    assert sorted(r["set"] for r in rows) == sets
    for r in rows:
        assert r["condition"] == (IN_DOMAIN if r["set"] in (layout.DEV, layout.TEST) else layout.condition_of(r["set"]))
        assert all(math.isfinite(float(r[n])) for n in POOLED_SIGNALS)
    assert json.loads((out / EVALUATION_JSON).read_text()) == evaluation

    by_name = {c["name"]: c for c in evaluation["candidates"]}
    assert set(POOLED_SIGNALS) | {COMBINED} <= set(by_name)  # each alone (confidence, frame entropy), combined
    condition_of = {r["set"]: r["condition"] for r in rows}
    for name in ("max_posterior", "frame_entropy", "out_of_range_share"):
        c = by_name[name]
        assert sorted(h["set"] for h in c["held_out"]) == sets
        for h in c["held_out"]:
            assert h["fitted_on"] and all(condition_of[s] != h["condition"] for s in h["fitted_on"])
            assert h["low"] <= h["predicted"] <= h["high"]
        assert c["mae"] == pytest.approx(sum(abs(h["predicted"] - h["wer"]) for h in c["held_out"]) / len(sets))
    rho = evaluation["utterance_spearman"]  # utterance level, against each utterance's WER
    assert set(rho) == set(rows[0]) - {"set", "condition", "wer", "utterances", "frames"} | {PREDICTED}
    assert set(POOLED_SIGNALS) < set(rho) and all(r is None or -1 <= r <= 1 for r in rho.values())
    search = by_name[SEARCH]  # judged nested, or not judged with the reason (too few sets per split)
    if "error" not in search:
        assert set(search["picked_without"]) == set(condition_of.values()) and 1 <= len(search["signals"]) <= 2
        for h in search["held_out"]:
            assert all(condition_of[s] != h["condition"] for s in h["fitted_on"])
    # 9 signals need 11 fitting sets: the tiny run has fewer, and says so instead of skipping it
    assert "error" in by_name[COMBINED] or by_name[COMBINED]["held_out"]

    doc = json.loads((out / PREDICTOR_JSON).read_text())
    judged = [c for c in evaluation["candidates"] if "mae" in c]
    assert doc["name"] == evaluation["chosen"] == min(judged, key=lambda c: c["mae"])["name"]
    assert sorted(doc["predictor"]["fitted_on"]) == sets
    test_wer = next(r for r in rows if r["set"] == layout.TEST)["wer"]
    assert doc["in_domain"]["wer"] == pytest.approx(float(test_wer), abs=0.01)


def score_rows(out: Path) -> dict[str, dict[str, str]]:
    return {r["utterance"]: r for r in read_tsv(out / UTTERANCES_TSV)}


def test_score_a_recipe_set_as_cuts(fitted, tmp_path):
    workdir, fit_out, _ = fitted
    cuts_path = layout.cuts_path(workdir / "data" / "fbank", "ood_noise")
    summary = score_audio(workdir, cuts_path, tmp_path / "out", fit_out / PREDICTOR_JSON)
    cuts = CutSet.from_file(cuts_path)
    rows = score_rows(tmp_path / "out")
    assert sorted(rows) == sorted(cuts.ids) and summary["utterances"] == len(cuts)
    assert sum(int(r["frames"]) for r in rows.values()) == summary["frames"]
    for r in rows.values():
        assert float(r["low"]) <= float(r["predicted_wer"]) <= float(r["high"])
    assert json.loads((tmp_path / "out" / SUMMARY_JSON).read_text()) == summary
    assert summary["in_sample"]  # ood_noise is one of the sets the predictor was fitted on
    # the same model and features as fit's: the set's signals are the ones fit measured
    fit_row = next(r for r in read_tsv(fit_out / SIGNALS_TSV) if r["set"] == "ood_noise")
    for name in POOLED_SIGNALS:
        assert summary["signals"][name] == pytest.approx(float(fit_row[name]), rel=1e-5, abs=1e-9)
    p = summary["prediction"]
    assert p["low"] <= p["wer"] <= p["high"] and p["level"] == 0.9
    if summary["shifted"]:
        assert p["low"] > summary["in_domain_wer"]
        assert summary["verdict"] == f"shifted: predicted WER {p['wer']:.1f}, range [{p['low']:.1f}, {p['high']:.1f}]"
    else:
        assert p["low"] <= summary["in_domain_wer"] and summary["verdict"] == "like the training data"
    assert (tmp_path / "out" / PLOT_PNG).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_an_unlabeled_kaldi_dir_gives_the_signals_of_stage_1_features(fitted, tmp_path):
    workdir, fit_out, _ = fitted
    lines = (workdir / "data" / "kaldi" / "ood_noise" / "wav.scp").read_text().splitlines()[:3]
    data = tmp_path / "unlabeled"
    data.mkdir()
    (data / "wav.scp").write_text("\n".join(lines) + "\n")  # no text, no utt2spk
    summary = score_audio(workdir, data, tmp_path / "kaldi", fit_out / PREDICTOR_JSON)
    assert summary["utterances"] == 3 and not summary["in_sample"]
    ours = score_rows(tmp_path / "kaldi")
    score_audio(workdir, layout.cuts_path(workdir / "data" / "fbank", "ood_noise"), tmp_path / "cuts",
                fit_out / PREDICTOR_JSON)
    stored = score_rows(tmp_path / "cuts")
    assert sorted(ours) == sorted(line.split()[0] for line in lines)
    for utt, row in ours.items():
        assert row["frames"] == stored[utt]["frames"]
        for name in ("predicted_wer",) + POOLED_SIGNALS:
            assert float(row[name]) == pytest.approx(float(stored[utt][name]), rel=1e-3, abs=1e-4), (utt, name)


def run_cli(argv: list[str], capsys, monkeypatch) -> tuple[int, list[str]]:
    """``python -m neurosel.bin.shift argv``: (exit code, its ``shift: error:`` lines)."""
    monkeypatch.setattr(sys, "argv", ["shift"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        run_main(shift_main, argv)
    return e.value.code, [line for line in capsys.readouterr().err.splitlines() if line.startswith("shift: error:")]


def linked_workdir(workdir: Path, root: Path, model: Path | None = None, stats: bool = True) -> Path:
    """A work dir under ``root`` that links the run's data and decodes, its baseline model (or
    ``model``) and, with ``stats``, its dev reference statistics."""
    files, fake = RecipeFiles(workdir), RecipeFiles(root)
    (root / "exp").mkdir(parents=True)
    (root / "data").symlink_to(files.workdir / "data")
    layout.decode_root(fake.exp).symlink_to(layout.decode_root(files.exp))
    fake.model.parent.mkdir(parents=True)
    fake.model.symlink_to(model or files.model)
    if stats:
        fake.stats.parent.mkdir(parents=True)
        fake.stats.symlink_to(files.stats)
    return root


def test_missing_reference_is_a_one_line_error(fitted, tmp_path, capsys, monkeypatch):
    workdir, _, _ = fitted
    fake = linked_workdir(workdir, tmp_path / "work", stats=False)
    code, errors = run_cli(["fit", "--out", str(tmp_path / "out"), str(fake)], capsys, monkeypatch)
    assert code == 1 and len(errors) == 1
    assert str(RecipeFiles(fake).stats) in errors[0] and "no such file" in errors[0]
    assert not (tmp_path / "out").exists()


def test_model_and_reference_that_do_not_match(fitted, tmp_path, capsys, monkeypatch):
    workdir, fit_out, _ = fitted
    model, cfg = load_model(RecipeFiles(workdir).model)
    other = tmp_path / "other.pt"
    save_model(build_model(dataclasses.replace(cfg, fc_dims=[d // 2 for d in cfg.fc_dims])), other)
    fake = linked_workdir(workdir, tmp_path / "work", model=other)
    for argv in (["fit", "--out", str(tmp_path / "out"), str(fake)],
                 ["score", "--predictor", str(fit_out / PREDICTOR_JSON), str(fake),
                  str(layout.cuts_path(workdir / "data" / "fbank", layout.TEST)), str(tmp_path / "out")]):
        code, errors = run_cli(argv, capsys, monkeypatch)
        assert code == 1 and len(errors) == 1
        files = RecipeFiles(fake)
        assert f"{files.stats} does not match the model {files.model}" in errors[0]
        assert not (tmp_path / "out").exists()


def test_a_predictor_of_another_model_is_refused(fitted, tmp_path):
    workdir, fit_out, _ = fitted
    doc = json.loads((fit_out / PREDICTOR_JSON).read_text())
    doc["sha256"]["model"] = "0" * 64
    stale = tmp_path / "predictor.json"
    stale.write_text(json.dumps(doc))
    with pytest.raises(NeuroselError, match="fitted with another model"):
        score_audio(workdir, layout.cuts_path(workdir / "data" / "fbank", layout.TEST), tmp_path / "out", stale)
    assert not (tmp_path / "out").exists()


def test_empty_data_dir_and_missing_predictor(fitted, tmp_path, capsys, monkeypatch):
    workdir, fit_out, _ = fitted
    predictor = str(fit_out / PREDICTOR_JSON)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, errors = run_cli(["score", "--predictor", predictor, str(workdir), str(empty), str(tmp_path / "out")],
                           capsys, monkeypatch)
    assert code == 1 and len(errors) == 1 and f"{empty / 'wav.scp'}: no such file" in errors[0]
    (empty / "wav.scp").write_text("")
    code, errors = run_cli(["score", "--predictor", predictor, str(workdir), str(empty), str(tmp_path / "out")],
                           capsys, monkeypatch)
    assert code == 1 and len(errors) == 1 and f"{empty / 'wav.scp'}: empty data dir" in errors[0]
    no_cuts = tmp_path / "cuts_none.jsonl.gz"
    CutSet.from_cuts([]).to_file(no_cuts)
    code, errors = run_cli(["score", "--predictor", predictor, str(workdir), str(no_cuts), str(tmp_path / "out")],
                           capsys, monkeypatch)
    assert code == 1 and len(errors) == 1 and f"{no_cuts}: empty cut set" in errors[0]
    missing = tmp_path / "nowhere" / "predictor.json"
    code, errors = run_cli(["score", "--predictor", str(missing), str(workdir), str(empty), str(tmp_path / "out")],
                           capsys, monkeypatch)
    assert code == 1 and len(errors) == 1 and f"{missing}: no such file" in errors[0]
    code, errors = run_cli(["score", str(workdir), str(empty), str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 1 and f"{RecipeFiles(workdir).shift / PREDICTOR_JSON}: no such file" in errors[0]
    assert not (tmp_path / "out").exists()
