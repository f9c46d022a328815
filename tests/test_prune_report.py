"""Stage 8's pruning and retraining tables on hand-made decodes whose answers are known: every
retrained system against baseline_ft in the retraining table, the no-folding control row of the
dashboard, a per-condition retrained system's in-domain test as the mean over its conditions, and
where the pruning table's speed was measured."""

from __future__ import annotations

import pytest

from test_condition_prune import CONDITIONS, ROOT, write_decode
from neurosel.recipe import layout
from neurosel.report.build import build_report
from neurosel.report.claims import HOLDS, REFUTED


def test_each_retrained_system_against_baseline_ft_and_the_nofold_control(tmp_path) -> None:
    decode = tmp_path / "exp" / "decode"
    n = 40
    ood = [layout.ood_set(c) for c in CONDITIONS]
    for system, errors in (("baseline", 3), ("baseline_ft.s0", 4), ("baseline_ft.s1", 4),
                           ("prune_magnitude", 8), ("prune_magnitude_retrain.s0", 2), ("prune_magnitude_retrain.s1", 2),
                           ("prune_hypo_retrain.s0", 5), ("prune_hypo_retrain.s1", 6),
                           ("prune_hyper_hypo_nofold_retrain.s0", 3), ("prune_random_nofold_retrain.s0", 5),
                           ("prune_hyper_hypo_from_dev_retrain.s0", 3)):
        for t in (layout.TEST, *ood):
            write_decode(decode / system / t, [errors] * n)
    for t in (layout.TEST, *ood):  # as good as fine-tuning alone on average: the interval holds zero
        write_decode(decode / "prune_hyper_retrain.s0" / t, [3, 5] * (n // 2))
    for k in (0, 1):  # each condition's model, retrained: ood_<c> and in-domain test
        for c in CONDITIONS:
            folder = decode / f"condprune_hyper_hypo_retrain.s{k}" / layout.adapted_name(c)
            write_decode(folder / layout.ood_set(c), [1] * n)
            write_decode(folder / layout.TEST, [2 + k] * n)
    for system, errors in (("adapt_selective_full", 2), ("adapt_selective_full_from_dev", 4)):
        for c in CONDITIONS:  # selective+full with each condition's own neurons vs dev's
            write_decode(decode / f"{system}.s42" / layout.adapted_name(c) / layout.ood_set(c), [errors] * n)
    doc, findings = build_report(tmp_path, "hand", 0, "test", ROOT)
    (summary,) = [f for f in findings if f.startswith("Every retrained system against baseline_ft")]
    assert ("7 systems: beats it condprune_hyper_hypo_retrain (-30.00), prune_hyper_hypo_from_dev_retrain (-10.00), "
            "prune_hyper_hypo_nofold_retrain (-10.00), prune_magnitude_retrain (-20.00); worse prune_hypo_retrain "
            "(+15.00), prune_random_nofold_retrain (+10.00); 1 not significantly different") in summary
    assert not any(f.startswith("prune_magnitude_retrain vs baseline") for f in findings)  # one line, not five
    comps = {c["key"]: c for c in doc["comparisons"]}
    each = {k.split(":", 1)[1]: c for k, c in comps.items() if k.startswith("retrain_each:")}
    assert set(each) == {"prune_magnitude_retrain", "prune_hypo_retrain", "prune_hyper_retrain",
                         "prune_hyper_hypo_nofold_retrain", "prune_hyper_hypo_from_dev_retrain",
                         "prune_random_nofold_retrain", "condprune_hyper_hypo_retrain"}
    assert {c["a"] for c in each.values()} == {"baseline_ft"}
    assert each["prune_magnitude_retrain"]["difference"] == pytest.approx(20.0 - 40.0)
    assert each["prune_hypo_retrain"]["difference"] == pytest.approx(55.0 - 40.0)
    assert each["condprune_hyper_hypo_retrain"]["test_sets"] == ood
    assert comps["retrain_vs_random_nofold"]["difference"] == pytest.approx(30.0 - 50.0)
    # where the neurons are measured: each condition's own audio vs dev, for removal and adaptation
    assert comps["condprune_retrain_vs_from_dev"]["a"] == "prune_hyper_hypo_from_dev_retrain"
    assert comps["condprune_retrain_vs_from_dev"]["difference"] == pytest.approx(10.0 - 30.0)
    assert comps["adapt_vs_from_dev"]["a"] == "adapt_selective_full_from_dev"
    assert comps["adapt_vs_from_dev"]["difference"] == pytest.approx(20.0 - 40.0)
    source = {r["claim"]: r for r in doc["claims"] if r["claim"].endswith("(source)")}
    assert source["2 (source)"]["verdict"] == HOLDS and source["3 (source)"]["verdict"] == HOLDS
    assert source["2 (source)"]["protocol"].endswith("then retraining (per condition), vs neurons from dev")
    # per condition, removed then retrained, against the model one started from
    assert comps["condprune_retrain_vs_baseline"]["a"] == "baseline"
    assert comps["condprune_retrain_vs_baseline"]["difference"] == pytest.approx(10.0 - 30.0)
    (row,) = [r for r in doc["claims"]
              if r["protocol"] == "removal as unsupervised adaptation, then retraining (per condition), vs the "
              "untouched baseline"]
    assert row["verdict"] == HOLDS and row["seeds"] == "2 vs 1"
    rows = {r["protocol"]: r for r in doc["claims"] if r["claim"] == "2 (control)"}
    nofold = rows["removal, then retraining, no mean folding"]
    assert nofold["verdict"] == HOLDS and nofold["seeds"] == "1 vs 1"
    text = (tmp_path / "exp" / "RESULTS.md").read_text()
    retrain_part = text.split("## Claim 2 with retraining")[1].split("\n## ")[0]
    line = next(ln for ln in retrain_part.splitlines() if ln.startswith("| prune_magnitude_retrain |"))
    assert line.endswith("| 20.00 | -20.00 [-20.00, -20.00] |")
    hypo = next(ln for ln in retrain_part.splitlines() if ln.startswith("| prune_hypo_retrain |"))
    assert "+15.00 [" in hypo  # worse than fine-tuning alone: the table says so
    cond = next(ln for ln in retrain_part.splitlines() if ln.startswith("| condprune_hyper_hypo_retrain |"))
    assert "25.00 (mean of test.<c>)" in cond  # in-domain test after pruning for each condition, both seeds
    assert "| prune_magnitude | " in retrain_part  # beside its model before retraining
    per_condition = text.split("### Removal as unsupervised adaptation")[1].split("\n## ")[0]
    assert "| prune_hyper_hypo_from_dev_retrain | dev | 30.00 | 30.00 | 30.00 |" in per_condition
    # the same retrained system worse than its control: the column turns positive, the verdict refuted
    for system in ("prune_hyper_hypo_nofold_retrain.s0",):
        for t in ood:
            (decode / system / t / "wer").unlink()
            (decode / system / t / "errs.txt").unlink()
            (decode / system / t).rmdir()
            write_decode(decode / system / t, [7] * n)
    doc, _ = build_report(tmp_path, "hand", 0, "test", ROOT)
    rows = {r["protocol"]: r for r in doc["claims"] if r["claim"] == "2 (control)"}
    assert rows["removal, then retraining, no mean folding"]["verdict"] == REFUTED


def test_the_pruning_table_says_where_its_speed_was_measured() -> None:
    """The speed-up note reads each system's speed record: CPU time on the CPU, synchronised wall
    time on a GPU (a GPU run's note no longer says CPU time)."""
    from neurosel.report.markdown import pruning_section

    summary = {"baseline": {"ood_a": {"wer": 10.0, "wer_std": 0.0, "n": 1}},
               "prune_hyper_hypo": {"ood_a": {"wer": 12.0, "wer_std": 0.0, "n": 1}}}
    cpu = {"prune_hyper_hypo": {"removed": 4, "speed": {"device": "cpu", "clock": "process CPU", "speedup": 1.1}}}
    gpu = {"prune_hyper_hypo": {"removed": 4, "speed": {"device": "cuda:0", "clock": "wall (CUDA synchronised)",
                                                        "speedup": 1.0}}}
    assert "utterances, CPU time on one thread (stage 6" in pruning_section(summary, ["ood_a"], cpu)
    text = pruning_section(summary, ["ood_a"], gpu)
    assert "utterances, wall (CUDA synchronised) time on cuda:0 (stage 6" in text and "CPU time" not in text
