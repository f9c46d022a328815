"""Adaptation data chosen by a shift score or by confidence (issue 18 part 4): the selection keeps
exactly the least shifted share and reads no transcript; a ``*_shift<NN>`` unit is stale when the
scores it used change, while the default systems' markers do not move; the variants' names; a unit
of the tiny recipe runs through the stage's command; stage 8 compares selection by shift with
selection by confidence and with keeping all."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet, load_manifest

from fixtures_speech import tiny_speech  # noqa: F401  (pytest fixture)
from neurosel.bin import adapt as adapt_cli
from neurosel.errors import NeuroselError
from neurosel.inference import feature_batches
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.recipe.adapt_shift import compute_scores, higher_when_shifted, read_scores, run_scores
from neurosel.recipe.adapt_systems import AdaptConfig, SelectionVariant, selection_variant
from neurosel.recipe.adapt_units import StagePaths, Unit, marker_inputs, run_unit, unit_config
from neurosel.recipe.pseudo_labels import PseudoLabelConfig, PseudoLabels, select_pseudo_labels
from neurosel.report.collect import SetResult, SystemResults
from neurosel.report.results import summarise
from neurosel.report.selection_section import selection_comparisons, selection_section
from neurosel.saliency.stats import collect_stats, save_stats
from neurosel.data.batches import load_cmvn
from neurosel.stage import fingerprint, status
from test_adapt_stage import (ADAPT_SET, CFG, COND, paths_for, stage,  # noqa: F401  (stage: fixture)
                              transcriptless_fbanks)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth" / "conf"


def test_shift_selection_keeps_exactly_the_least_shifted_share():
    utts = [f"u{i:02d}" for i in range(11)]
    tokens = {u: ([] if u == "u03" else [1, 2]) for u in utts}  # u03 has no pseudo-label: never kept
    confidence = {u: 0.5 + 0.04 * i for i, u in enumerate(utts)}  # the most confident are the most shifted
    shift = {u: float(i % 5) for i, u in enumerate(utts)}  # ties broken by utterance id
    labels = PseudoLabels(tokens, confidence)
    kept = select_pseudo_labels(labels, PseudoLabelConfig(keep="top_fraction", top_fraction=0.7, by="shift"), shift)
    usable = sorted(u for u in utts if tokens[u])
    expected = sorted(usable, key=lambda u: (shift[u], u))[:math.ceil(0.7 * len(usable))]
    assert sorted(kept.tokens) == sorted(expected)
    assert len(kept.tokens) == 7 and kept.dropped_empty == 1 and kept.dropped_confidence == 3
    assert kept.weights is None
    by_confidence = select_pseudo_labels(labels, PseudoLabelConfig(keep="top_fraction", top_fraction=0.7))
    assert sorted(by_confidence.tokens) == sorted(sorted(usable, key=lambda u: -confidence[u])[:7])
    assert set(by_confidence.tokens) != set(kept.tokens)
    with pytest.raises(NeuroselError, match="u05 has no shift score"):
        select_pseudo_labels(labels, PseudoLabelConfig(keep="top_fraction", by="shift"),
                             {u: v for u, v in shift.items() if u != "u05"})
    with pytest.raises(ValueError, match="by confidence"):
        PseudoLabelConfig(keep="weight", by="shift")


def test_variant_names_and_their_rates():
    assert selection_variant("adapt_all_shift80") == SelectionVariant("adapt_all", "shift", 0.8)
    assert selection_variant("adapt_selective_full_conf50") == SelectionVariant("adapt_selective_full",
                                                                                 "confidence", 0.5)
    for name in ("adapt_all", "adapt_oracle_conf80", "adapt_entropy_shift80", "adapt_all_shift100",
                 "adapt_all_shift0", "adapt_nothing_conf80", "adapt_all_pooled"):
        assert selection_variant(name) is None
    cfg = AdaptConfig(systems=["adapt_all_shift80"], pooled_systems=[], lr_search="fixed",
                      rates={"adapt_all": [3e-4]})
    assert cfg.rates_of("adapt_all_shift80") == [3e-4]
    assert cfg.labels_of("adapt_all_shift80") == PseudoLabelConfig(keep="top_fraction", top_fraction=0.8, by="shift")
    assert cfg.labels_of("adapt_all") is cfg.pseudo_labels
    with pytest.raises(ValueError, match="unknown system 'adapt_oracle_conf80'"):
        AdaptConfig(systems=["adapt_oracle_conf80"], pooled_systems=[])
    assert higher_when_shifted("out_of_range_share") and higher_when_shifted("on_off_js.layer2")
    assert not higher_when_shifted("window_entropy.layer1") and not higher_when_shifted("max_posterior")


@pytest.fixture(scope="module")
def scored(stage, tmp_path_factory):  # noqa: F811
    """The adaptation stage of ``test_adapt_stage`` with in-domain reference statistics (the
    model's on the adaptation audio) at ``saliency/dev/stats.pt``."""
    root, _ = stage
    model, _ = load_model(root / "model.pt")
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet).to_eager()
    batches = [((b.feats, b.feat_lens), None) for b in feature_batches(cuts, load_cmvn(root / "fbank" / "cmvn.npz"),
                                                                       30.0)]
    stats = collect_stats(model, model.fc_spec(), batches, forward=lambda m, x: m(*x))
    save_stats(stats, root / "exp" / "saliency" / layout.DEV / "stats.pt")
    return root


def test_scores_read_no_transcript(scored, tmp_path):
    root = scored
    cfg = AdaptConfig(**{**CFG, "shift_score": "on_off_js"})
    original = compute_scores(ADAPT_SET, paths_for(root), cfg)
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet)
    for variant in transcriptless_fbanks(root, tmp_path):
        assert compute_scores(ADAPT_SET, paths_for(root, fbank=variant), cfg) == original
    assert sorted(original) == sorted(cuts.ids) and len(set(original.values())) > 1
    with pytest.raises(NeuroselError, match="unknown signal 'no_such_signal'"):
        compute_scores(ADAPT_SET, paths_for(root), dataclasses.replace(cfg, shift_score="no_such_signal"))


def test_a_shift_unit_is_stale_when_its_scores_change(scored, tmp_path):
    root = scored
    paths = paths_for(root, exp=tmp_path / "exp")
    cfg = AdaptConfig(**{**CFG, "systems": ["adapt_all_shift60", "adapt_all"], "shift_score": "on_off_js"})
    with pytest.raises(NeuroselError, match="missing or not up to date"):
        read_scores(ADAPT_SET, paths, cfg)
    assert run_scores(ADAPT_SET, paths, cfg) and not run_scores(ADAPT_SET, paths, cfg)
    shift = read_scores(ADAPT_SET, paths, cfg)
    unit = Unit("adapt_all_shift60", 1, COND)
    run_unit(unit, paths, cfg, [COND])
    record = json.loads((unit.model_dir(paths.adapt) / "adapt.json").read_text())
    kept = record["labels"]["kept"]
    usable = record["labels"]["utterances"] - record["labels"]["dropped_empty"]
    assert kept == math.ceil(0.6 * usable) and len(set(shift.values())) > 1
    assert record["labels"]["selection"] == {"keep": "top_fraction", "top_fraction": 0.6, "threshold": 0.0,
                                             "by": "shift", "shift_score": "on_off_js"}
    assert record["train_utterances"] + record["heldout_utterances"] == kept

    def unit_status() -> str:
        return status(unit.model_dir(paths.adapt), fingerprint(unit_config(unit, cfg),
                                                                marker_inputs(unit, paths, cfg, [COND])))

    assert unit_status() == "done"
    scores = layout.adapt_shift_scores_path(paths.adapt, ADAPT_SET)
    lines = scores.read_text().splitlines()
    least = min(shift, key=shift.get)  # kept; now the most shifted
    lines = [f"{least}\t0\t{max(shift.values()) + 1}" if line.startswith(f"{least}\t") else line for line in lines]
    scores.write_text("\n".join(lines) + "\n")
    assert read_scores(ADAPT_SET, paths, cfg) == shift | {least: max(shift.values()) + 1}
    assert unit_status() == "stale"
    # another score makes the scores stale, and the unit's config changes with it
    other = dataclasses.replace(cfg, shift_score="window_entropy")
    with pytest.raises(NeuroselError, match="missing or not up to date"):
        read_scores(ADAPT_SET, paths, other)
    assert unit_config(unit, other) != unit_config(unit, cfg)
    # a system that keeps everything has neither the shift score nor `by` in its marker: the
    # default run's units stay up to date
    plain = unit_config(Unit("adapt_all", 1, COND), cfg)["adapt"]
    assert "shift_score" not in plain and "by" not in plain["pseudo_labels"]
    assert unit_config(Unit("adapt_all", 1, COND), other) == unit_config(Unit("adapt_all", 1, COND), cfg)
    assert not any("shift_scores" in str(p) for p in marker_inputs(Unit("adapt_all", 1, COND), paths, cfg, [COND]))


@pytest.mark.slow
def test_a_shift_unit_of_the_tiny_recipe(tiny_recipe, tmp_path):
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-3000:]
    work = tmp_path / "work"
    (work / "exp" / "decode").mkdir(parents=True)
    (work / "data").symlink_to(workdir / "data")
    for part in ("baseline", "saliency"):
        (work / "exp" / part).symlink_to(workdir / "exp" / part)
    shutil.copytree(workdir / "exp" / "decode" / "baseline", work / "exp" / "decode" / "baseline")
    exp, fbank = work / "exp", work / "data" / "fbank"
    conditions = layout.conditions(fbank)
    args = ["--config", str(CONF / "adapt.yaml"), "--overlay", str(CONF / "tiny.yaml"), "--seed", "42",
            "--set", "systems=[adapt_all_shift80, adapt_all_conf80]", "--set", "pooled_systems=[]",
            "--set", "lr_search=fixed", "--set", "rates={adapt_all: [1.0e-3]}",
            "--decode-config", str(exp / "decode" / "baseline" / "decode.yaml")]
    paths = [str(exp / "baseline" / "model.pt"), str(work / "data" / "lang"), str(fbank), str(exp)]
    assert adapt_cli.main(["status", *args, *paths]) == 3
    assert adapt_cli.main(["scores", *args, *paths]) == 0
    for unit in (1, len(conditions) + 1):  # the first condition, by shift and by confidence
        assert adapt_cli.main(["unit", *args, "--unit", str(unit), *paths]) == 0
    cfg = AdaptConfig(systems=["adapt_all_shift80"], pooled_systems=[])
    stage_paths = StagePaths(model=exp / "baseline" / "model.pt", lang=work / "data" / "lang", fbank=fbank,
                             saliency=exp / "saliency", pseudo=exp / "decode" / "baseline", adapt=exp / "adapt",
                             decode=exp / "decode")
    shift = read_scores(layout.adapt_set(conditions[0]), stage_paths, cfg)
    kept = {}
    for system in ("adapt_all_shift80", "adapt_all_conf80"):
        unit = Unit(system, 42, conditions[0])
        record = json.loads((unit.model_dir(stage_paths.adapt) / "adapt.json").read_text())
        kept[system] = record["labels"]
        assert (unit.decode_dir(stage_paths.decode) / layout.ood_set(conditions[0]) / "wer").is_file()
    usable = kept["adapt_all_shift80"]["utterances"] - kept["adapt_all_shift80"]["dropped_empty"]
    assert kept["adapt_all_shift80"]["kept"] == kept["adapt_all_conf80"]["kept"] == math.ceil(0.8 * usable)
    assert kept["adapt_all_shift80"]["selection"]["by"] == "shift"
    assert kept["adapt_all_conf80"]["selection"]["by"] == "confidence"
    assert len(shift) == kept["adapt_all_shift80"]["utterances"]


def _system(name: str, errors_per_seed: dict[int, list[int]], conditions=("n", "r")) -> SystemResults:
    """A system scored on ``ood_<c>`` of each condition: 3 utterances of 10 words each, per seed."""
    runs: dict = {}
    for c in conditions:
        runs[f"ood_{c}"] = {}
        for seed, errors in errors_per_seed.items():
            e = np.array(errors)
            runs[f"ood_{c}"][seed] = SetResult(100.0 * e.sum() / 30, int(e.sum()), 30, ["a", "b", "c"], e,
                                               np.full(3, 10))
    return SystemResults(name, runs)


def test_the_report_compares_shift_with_confidence_and_with_keeping_all(tmp_path):
    systems = {"adapt_all": _system("adapt_all", {1: [3, 3, 3], 2: [3, 4, 3]}),
               "adapt_all_conf80": _system("adapt_all_conf80", {1: [3, 3, 2], 2: [3, 3, 3]}),
               "adapt_all_shift80": _system("adapt_all_shift80", {1: [0, 1, 0], 2: [1, 0, 0]}),
               "adapt_lhuc": _system("adapt_lhuc", {1: [5, 5, 5]})}
    comparisons = selection_comparisons(systems)
    assert [(c.system_a, c.system_b, c.key) for c in comparisons] == [
        ("adapt_all", "adapt_all_conf80", "select_conf_vs_all:adapt_all_conf80"),
        ("adapt_all_conf80", "adapt_all_shift80", "select_shift_vs_conf:adapt_all_shift80"),
        ("adapt_all", "adapt_all_shift80", "select_shift_vs_all:adapt_all_shift80")]
    assert all(c.test_sets == ["ood_n", "ood_r"] for c in comparisons)
    summary = summarise(systems)
    md = selection_section(summary, comparisons, ["n", "r"], tmp_path)
    cells = [line.split(" | ") for line in md.splitlines() if line.startswith("| adapt_")]
    rows = {c[0].lstrip("| "): " | ".join(c) for c in cells if ":" not in c[0]}  # the WER table, not the tests'
    assert len(cells) == len(rows) + 3
    assert set(rows) == {"adapt_all", "adapt_all_conf80", "adapt_all_shift80"}  # not adapt_lhuc
    assert f"| {np.mean([1 / 30, 1 / 30]) * 100:.2f} |" in rows["adapt_all_shift80"]  # mean OOD WER
    assert "top 80% by shift" in rows["adapt_all_shift80"] and rows["adapt_all_shift80"].endswith("| 2 |")
    assert "adapt_all: top 80% by shift vs confidence: selection by shift helps" in md
    assert "Not run" in selection_section(summarise({"adapt_all": systems["adapt_all"]}), [], ["n", "r"], tmp_path)
