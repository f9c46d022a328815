"""The claims dashboard (neurosel.report.claims) on hand-made results.json documents whose answers
are known, and the forgetting comparison (neurosel.report.results) on per-utterance counts."""

from __future__ import annotations

import numpy as np

from neurosel.report.claims import (HOLDS, NO_RESULTS, NOT_RUN, NOT_SIGNIFICANT, REFUTED, anchor, claim_rows,
                                    dashboard_section, verdict_of)
from neurosel.report.collect import SetResult, SystemResults
from neurosel.report.results import paper_comparisons, summarise

OOD = ["ood_noise", "ood_reverb"]


def comparison(key: str, a: str, b: str, difference: float, low: float, high: float, sets=OOD) -> dict:
    return {"key": key, "name": key, "a": a, "b": b, "test_sets": sets, "difference": difference,
            "ci_low": low, "ci_high": high}


def entry(n: int) -> dict:
    return {"wer": 10.0, "wer_std": 0.0, "n": n}


def hand_made() -> dict:
    systems = {"baseline": {t: entry(1) for t in OOD}, "prune_hyper_hypo": {t: entry(1) for t in OOD},
               "prune_random": {t: entry(3) for t in OOD}, "adapt_all": {t: entry(3) for t in OOD},
               "adapt_selective_full": {t: entry(3) for t in OOD}}
    return {"systems": systems, "selection": {"pruning": "5%/layer by on-rate, dev", "adaptation": "x",
                                              "claim1": "5%/layer by on-rate, dev"},
            "claim1": {"reference": "dev", "jaccard": {"magnitude": 0.05, "taylor1": 0.30, "random": 0.05}},
            "comparisons": [
                comparison("prune_vs_baseline", "baseline", "prune_hyper_hypo", +25.0, +22.9, +27.1),  # refuted
                comparison("prune_vs_random", "prune_random", "prune_hyper_hypo", -1.8, -2.9, -0.6),  # holds
                comparison("adapt_vs_blind", "adapt_all", "adapt_selective_full", -0.3, -0.8, +0.3),  # n.s.
            ]}


def by_key(rows, claim, protocol_start):
    return [r for r in rows if r.claim == claim and r.protocol.startswith(protocol_start)]


def test_verdicts_of_known_intervals() -> None:
    assert verdict_of(-2.0, -0.1) == HOLDS
    assert verdict_of(0.1, 2.0) == REFUTED
    assert verdict_of(-1.0, 1.0) == NOT_SIGNIFICANT
    assert verdict_of(-1.0, 0.0) == NOT_SIGNIFICANT  # an interval touching zero is not below it


def test_dashboard_rows_from_hand_made_results() -> None:
    rows = claim_rows(hand_made(), "relu")
    claim2 = by_key(rows, "2", "removal without retraining")
    assert [r.verdict for r in claim2] == [REFUTED]
    assert claim2[0].effect == 25.0 and (claim2[0].ci_low, claim2[0].ci_high) == (22.9, 27.1)
    assert claim2[0].seeds == "1 vs 1" and claim2[0].anchor == "#claim-2-removing-hyper-and-hypo-neurons"
    control = by_key(rows, "2 (control)", "removal without retraining")
    assert [r.verdict for r in control] == [HOLDS] and control[0].seeds == "1 vs 3"
    claim3 = by_key(rows, "3", "selective")
    assert [r.verdict for r in claim3] == [NOT_SIGNIFICANT] and claim3[0].seeds == "3 vs 3"
    # comparisons the run lacks are rows that say so, never blanks
    for claim, protocol in (("2", "removal, then retraining"), ("2 (control)", "removal, then retraining"),
                            ("3 (control)", "selective"), ("forgetting", "selective")):
        assert [r.verdict for r in by_key(rows, claim, protocol)] == [NOT_RUN], (claim, protocol)
    # claim 1: taylor1 overlaps hyper+hypo six times as much as random
    (claim1,) = by_key(rows, "1", "")
    assert claim1.verdict == HOLDS and claim1.effect == 0.30 and claim1.reference == 0.05
    doc = hand_made()
    doc["claim1"]["jaccard"]["taylor1"] = 0.08
    assert by_key(claim_rows(doc, "relu"), "1", "")[0].verdict == REFUTED
    text = dashboard_section(rows)
    assert "| 2 | relu | removal without retraining | 5%/layer by on-rate, dev | prune_hyper_hypo vs baseline " \
           "| **refuted** | +25.00 [+22.90, +27.10] | 1 vs 1 |" in text
    assert text.count("**not run**") == 4


def test_retraining_rows_replace_not_run_when_the_study_ran() -> None:
    doc = hand_made()
    doc["systems"]["prune_hyper_hypo_retrain"] = {t: entry(1) for t in OOD}
    doc["systems"]["baseline_ft"] = {t: entry(1) for t in OOD}
    doc["comparisons"].append(comparison("retrain_vs_baseline_ft", "baseline_ft", "prune_hyper_hypo_retrain",
                                         +0.9, +0.2, +1.6))
    rows = claim_rows(doc, "relu")
    (row,) = by_key(rows, "2", "removal, then retraining")
    assert row.verdict == REFUTED and row.comparison == "prune_hyper_hypo_retrain vs baseline_ft"
    assert row.anchor == "#claim-2-with-retraining-prune-then-fine-tune"
    assert [r.verdict for r in by_key(rows, "2 (control)", "removal, then retraining")] == [NOT_RUN]
    # against the untouched baseline: a row of its own, only when the run has the comparison
    assert not by_key(rows, "2", "removal, then retraining, vs the untouched baseline")
    doc["comparisons"].append(comparison("retrain_vs_baseline", "baseline", "prune_hyper_hypo_retrain",
                                         +1.0, +0.1, +1.9))
    (row,) = by_key(claim_rows(doc, "relu"), "2", "removal, then retraining, vs the untouched baseline")
    assert row.verdict == REFUTED and row.comparison == "prune_hyper_hypo_retrain vs baseline"


def test_missing_results_json_is_one_row() -> None:
    (row,) = claim_rows(None, "sigmoid")
    assert row.verdict == NO_RESULTS and row.activation == "sigmoid"
    assert "no results.json" in dashboard_section([row])


def test_anchor_matches_github_slugs() -> None:
    assert anchor("Claim 1: do pruning criteria select hyper and hypo neurons?") == \
        "#claim-1-do-pruning-criteria-select-hyper-and-hypo-neurons"
    assert anchor("Paired bootstrap tests (utterances of every OOD test set)") == \
        "#paired-bootstrap-tests-utterances-of-every-ood-test-set"


def scored(errors: list[int], refs: list[int]) -> SetResult:
    e, r = np.array(errors), np.array(refs)
    return SetResult(100.0 * e.sum() / r.sum(), int(e.sum()), int(r.sum()), [f"u{i}" for i in range(len(e))], e, r)


def test_forgetting_compares_in_domain_test_after_adapting() -> None:
    rng = np.random.default_rng(0)
    refs = list(rng.integers(5, 15, size=60))
    def system(name: str, ood_err: int, test_err: int) -> SystemResults:
        runs = {}
        for c in ("noise", "reverb"):
            runs[f"ood_{c}"] = {s: scored([ood_err] * 60, refs) for s in (42, 43)}
            runs[f"test.{c}"] = {s: scored([test_err] * 60, refs) for s in (42, 43)}
        return SystemResults(name, runs)

    # adapt_all is best on OOD and forgets most; adapt_conv forgets least; selective+full between
    systems = {"adapt_all": system("adapt_all", 1, 3), "adapt_conv": system("adapt_conv", 4, 0),
               "adapt_selective_full": system("adapt_selective_full", 2, 1)}
    comps = {c.key: c for c in paper_comparisons(systems, summarise(systems))}
    vs_best = comps["forget_vs_blind"]
    assert (vs_best.system_a, vs_best.system_b) == ("adapt_all", "adapt_selective_full")
    assert vs_best.test_sets == ["test.noise", "test.reverb"] and vs_best.result.num_utterances == 120
    assert vs_best.result.ci_high < 0  # forgets less than adapt_all
    least = comps["forget_vs_least_forgetting"]
    assert least.system_a == "adapt_conv" and least.result.ci_low > 0
    assert comps["adapt_vs_blind"].system_a == "adapt_all" and comps["adapt_vs_blind"].test_sets == OOD


def test_git_revision_ignores_the_tracked_reports_stage_8_writes(tmp_path) -> None:
    import subprocess

    from neurosel.report.build import git_revision

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    for rel in ("neurosel/x.py", "egs/synth/RESULTS.md", "egs/synth/results.json", "egs/synth/plots/a.png",
                "egs/synth/results_sigmoid/RESULTS.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "x")
    clean = git_revision(tmp_path)
    assert clean and not clean.endswith("-dirty") and clean != "unknown"
    for rel in ("egs/synth/RESULTS.md", "egs/synth/results.json", "egs/synth/plots/a.png",
                "egs/synth/results_sigmoid/RESULTS.md"):
        (tmp_path / rel).write_text("2\n")
    assert git_revision(tmp_path) == clean
    (tmp_path / "neurosel" / "x.py").write_text("2\n")
    assert git_revision(tmp_path) == clean + "-dirty"
