"""The whole recipe on the tiny synthetic corpus, through ./run.sh as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WER_LINE = re.compile(r"^%WER \d+\.\d\d \[ \d+ / \d+, \d+ ins, \d+ del, \d+ sub \]$")


def run_recipe(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    return subprocess.run(["./run.sh", "--corpus-size", "tiny", "--workdir", str(workdir), "--quiet", "true", *args],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=1800)


@pytest.fixture
def recipe(tiny_recipe) -> tuple[Path, subprocess.CompletedProcess]:
    """The session's tiny recipe run (tests/conftest.py), shared with the kill-and-resume tests."""
    return tiny_recipe


@pytest.mark.slow
@pytest.mark.e2e
def test_tiny_recipe_end_to_end(recipe) -> None:
    workdir, result = recipe
    assert result.returncode == 0, result.stderr[-3000:]
    exp = workdir / "exp"
    doc = json.loads((exp / "results.json").read_text())
    assert set(doc) >= {"recipe", "seeds", "test_sets", "systems"}
    conditions = sorted(p.name[len("cuts_ood_adapt_"):-len(".jsonl.gz")]
                        for p in (workdir / "data" / "fbank").glob("cuts_ood_adapt_*.jsonl.gz"))
    assert len(conditions) == 4
    assert set(doc["test_sets"]) == {"test"} | {f"ood_{c}" for c in conditions}
    for test_set in doc["test_sets"]:
        entry = doc["systems"]["baseline"][test_set]
        assert 0 <= entry["wer"] and entry["n"] == 1
        set_dir = exp / "decode" / "baseline" / test_set
        assert WER_LINE.match((set_dir / "wer").read_text().strip())
        for name in ("hyp.txt", "ref.txt", "errs.txt"):
            assert (set_dir / name).stat().st_size > 0
    assert (exp / "decode" / "baseline" / "decode.yaml").is_file()  # LM weight tuned on dev
    # stage 5: one neurons.tsv per reference set, a row per FC neuron
    for ref in ["dev", "pooled"] + [f"ood_adapt_{c}" for c in conditions]:
        rows = (exp / "saliency" / ref / "neurons.tsv").read_text().splitlines()
        assert rows[0].split("\t")[:6] == ["layer", "neuron", "class", "on_rate", "mean_act", "entropy"]
        assert len(rows) - 1 == 4 * 256
    # stage 6: pruned systems decoded on every test set
    for system in ("prune_hyper", "prune_hypo", "prune_hyper_hypo", "prune_random", "prune_magnitude"):
        assert set(doc["systems"][system]) >= set(doc["test_sets"])
    # the pruning curve's points, plotted over the OOD sets, are decoded on those only
    assert set(doc["systems"]["curve_hyper_hypo_30"]) == {t for t in doc["test_sets"] if t.startswith("ood_")}
    # the size sweep's point is decoded on dev too (its size is chosen on dev WER) and reported
    assert set(doc["systems"]["sweep_hyper_hypo_10"]) == {"dev", *doc["test_sets"]}
    assert doc["selection"]["sweep_pruning"].startswith("10%/class/layer")
    assert "| sweep_random_10 | 10% |" in (exp / "RESULTS.md").read_text()
    # stage 7: every adaptation system, per condition, on its OOD test set and in-domain test
    for system in ("adapt_all", "adapt_fc", "adapt_conv", "adapt_last", "adapt_selective",
                   "adapt_selective_full", "adapt_random_full", "adapt_lhuc", "adapt_oracle"):
        assert set(doc["systems"][system]) == {f"ood_{c}" for c in conditions} | {f"test.{c}" for c in conditions}
    assert set(doc["systems"]["adapt_all_pooled"]) == set(doc["test_sets"])
    # stage 8
    report = (exp / "RESULTS.md").read_text()
    assert report.startswith("# Results: synth")
    for heading in ("## Claims dashboard", "## What the data say", "## Claim 1", "## Claim 2", "## Claim 3",
                    "## Forgetting", "## Paired bootstrap"):
        assert heading in report
    # the dashboard's rows are in results.json; retraining is not in the default run and says so
    claims = {(r["claim"], r["protocol"]): r["verdict"] for r in doc["claims"]}
    assert claims[("2", "removal, then retraining")] == "not run"
    assert claims[("3", "selective adaptation")] in ("holds", "refuted", "not significant")
    assert "forget_vs_blind" in {c["key"] for c in doc["comparisons"]}
    # the pruned systems' size and speed, read from their prune.json: smaller, and a speed-up measured
    hyper_hypo = next(line for line in report.splitlines() if line.startswith("| prune_hyper_hypo |"))
    share, speedup, fc_speedup = hyper_hypo.split(" | ")[2:5]
    assert 0 < int(share.rstrip("%")) < 100 and float(speedup.rstrip("x")) > 0, hyper_hypo
    assert float(fc_speedup.rstrip("x")) > 0, hyper_hypo
    assert (exp / "plots" / "adaptation_wer.png").stat().st_size > 0
    names = [c["name"] for c in doc["comparisons"]]  # tiny prunes no random system without folding
    assert names[0] == "hyper+hypo removal vs random removal"
    assert names[1].startswith("selective+full vs best blind (") and names[2] == "selective+full vs random neurons+full"
    from neurosel.model import load_model

    model, cfg = load_model(exp / "baseline" / "model.pt")
    assert cfg.fc_norm == "none" and len(model.fc_spec().linears) == len(cfg.fc_dims)


@pytest.mark.slow
@pytest.mark.e2e
def test_full_study_on_the_tiny_recipe(recipe, tmp_path) -> None:
    """--study full on a finished tiny run: the study's and the tiny overlay, then prune-then-retrain
    and the sigmoid model, and the dashboard gets verdicts for the retraining rows of both
    activations. The tiny sigmoid model (120 steps) decodes nothing (100% deletions): its stage 7
    is skipped as weak and says so. The session's run moves aside and a copy takes its place (as in
    test_resume_matrix.py), so that the paths its markers name stay the same: the default run's
    adaptation units stay up to date under the study's overlay, and only what the study adds runs."""
    workdir, first = recipe
    assert first.returncode == 0
    reference = workdir.with_name(workdir.name + ".before_full_study")
    os.rename(workdir, reference)
    try:
        shutil.copytree(reference, workdir, symlinks=True)
        check_full_study(workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.rename(reference, workdir)  # the session's run is back as it was


def check_full_study(copy: Path) -> None:
    """The full study in ``copy``, a finished tiny run at the path its markers name."""
    units = sorted((copy / "exp" / "adapt").glob("adapt_*/adapted_*/.done"))
    marks = {p: p.read_bytes() for p in units}
    assert marks
    bad = run_recipe(copy, "--study", "nothing", "--stage", "8")
    assert bad.returncode == 1 and "--study nothing needs egs/synth/conf/study_nothing.yaml" in bad.stderr
    full = run_recipe(copy, "--study", "full", "--stage", "7")
    assert full.returncode == 0, full.stderr[-3000:]
    assert "study full" in full.stderr
    assert {p: p.read_bytes() for p in units} == marks  # the default run's adaptation: not redone
    doc = json.loads((copy / "exp" / "results.json").read_text())
    assert {"baseline_ft", "prune_hyper_hypo_retrain"} <= set(doc["systems"])
    sigmoid = json.loads((copy / "sigmoid" / "exp" / "results.json").read_text())
    assert {"prune_hyper_hypo", "prune_hyper_hypo_retrain", "baseline_ft"} <= set(sigmoid["systems"])
    assert "stage 7: not run: the baseline is weak" in full.stderr
    # the sigmoid arm's overlays: the study's, the model's own (its adaptation rates), the corpus size's
    conf = "egs/synth/conf"
    assert (f"work dir {copy / 'sigmoid'}, stages 3..7, seed 42, nj 2, study full, overlays: {conf}/study_full.yaml,"
            f"{conf}/train_sigmoid_stages.yaml,{conf}/tiny.yaml") in full.stderr
    assert not any(s.startswith("adapt_") for s in sigmoid["systems"])
    verdicts = {(r["claim"], r["activation"], r["protocol"]): r["verdict"] for r in doc["claims"]}
    decided = ("holds", "refuted", "not significant")
    assert verdicts[("2", "relu", "removal, then retraining")] in decided
    assert verdicts[("2", "sigmoid", "removal, then retraining")] in decided
    assert verdicts[("3", "sigmoid", "selective adaptation")] == "not run"
    text = (copy / "exp" / "RESULTS.md").read_text()
    assert "| sigmoid |" in text
    # a sigmoid row links to the sigmoid run's own table, not to this report's of the same name
    assert "[table](../sigmoid/exp/RESULTS.md#claim-2-with-retraining-prune-then-fine-tune)" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_rerun_skips_finished_stages(recipe) -> None:
    workdir, first = recipe
    assert first.returncode == 0
    before = (workdir / "exp" / "baseline" / "model.pt").stat().st_mtime_ns
    again = run_recipe(workdir, "--stage", "0", "--stop-stage", "4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to do" in again.stderr  # corpus
    # every step asks its stage's status first and launches no job when it is up to date
    for stage in ("stage 0 (prepare)", "stage 1 (features)", "stage 2 (lang)", "stage 3 (train)", "decode"):
        assert f"{stage}: up to date" in again.stderr, (stage, again.stderr[-3000:])
    assert (workdir / "exp" / "baseline" / "model.pt").stat().st_mtime_ns == before
