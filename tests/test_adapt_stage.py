"""Stage 7 on real speech: pseudo-labels from a real first-pass decode, neurons from real
statistics, adaptation units through the system code. Selective adaptation moves only the
selected neurons; LHUC leaves the base weights alone; the adaptation sets' transcripts never reach
training; a seed fixes a run."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch
from lhotse import CutSet, load_manifest

from fixtures_speech import tiny_speech  # noqa: F401  (pytest fixture)
from neurosel.decode.graph import load_graph
from neurosel.decode.run import decode_cuts, merge_and_score, write_part
from neurosel.decode.types import DecodeConfig
from neurosel.errors import NeuroselError
from neurosel.inference import feature_batches
from neurosel.model import ModelConfig, build_model, load_model, save_model
from neurosel.recipe.adapt_systems import SYSTEMS, AdaptConfig, close_phase, entropy_step, open_phase, phase_steps
from neurosel.recipe.adapt_units import StagePaths, Unit, heldout_split, list_units, run_tune, run_unit, tune_units
from neurosel.recipe.layout import POOLED, rates_path
from neurosel.recipe.neuron_table import write_neurons_tsv
from neurosel.recipe.pseudo_labels import (KeptLabels, PseudoCtcDataset, PseudoLabelConfig, PseudoLabels,
                                           pseudo_label_report, read_pseudo_labels, select_pseudo_labels)
from neurosel.saliency.classify import ClassifyConfig, classify, neurons_of
from neurosel.saliency.stats import collect_stats
from neurosel.data.batches import load_bpe, load_cmvn
from neurosel.train.loop import train_step

COND = "x"
ADAPT_SET = f"ood_adapt_{COND}"
CFG = dict(systems=["adapt_all"], pooled_systems=[], num_seeds=1, steps=4, max_duration=8.0,
           lr_grid=[1e-3], lr_grid_by_phase={"selective": [1e-2], "random": [1e-2], "lhuc": [3e-2]},
           weight_decay=0.1)


def write_fbank(root, cuts: CutSet, cmvn_src) -> None:
    """An fbank dir whose adaptation set is ``cuts`` (features stay where they are)."""
    root.mkdir(parents=True, exist_ok=True)
    cuts.to_file(root / f"cuts_{ADAPT_SET}.jsonl.gz")
    shutil.copy(cmvn_src, root / "cmvn.npz")


def transcriptless_fbanks(root, out) -> list:
    """Copies of ``root/fbank`` whose adaptation set has garbled transcripts (``out/garbled``) or
    none at all (``out/nosup``): what reads no transcript gives the same answer on each."""
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet).to_eager()
    garbled = CutSet.from_cuts(c.map_supervisions(lambda s: dataclasses.replace(s, text="zebra " * 7)) for c in cuts)
    write_fbank(out / "garbled", garbled, root / "fbank" / "cmvn.npz")
    write_fbank(out / "nosup", CutSet.from_cuts(c.drop_supervisions() for c in cuts), root / "fbank" / "cmvn.npz")
    return [out / "garbled", out / "nosup"]


@pytest.fixture(scope="module")
def stage(tiny_speech, tmp_path_factory):  # noqa: F811
    """Baseline model, lang, fbank (train cuts as the adaptation set), a greedy first-pass decode
    and a neurons.tsv from the model's statistics on the adaptation audio."""
    root = tmp_path_factory.mktemp("adapt_stage")
    lang = root / "lang"
    lang.mkdir()
    shutil.copy(tiny_speech.lang_dir / "bpe.model", lang / "bpe.model")
    words = sorted({w for t in tiny_speech.texts.values() for w in t.split()})
    (lang / "words.txt").write_text("".join(f"{w} {i}\n" for i, w in enumerate(["<eps>"] + words)))
    sp = load_bpe(lang)
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=sp.get_piece_size(), conv_channels=[4, 4], fc_dims=[24, 24, 24]))
    model.eval()
    save_model(model, root / "model.pt")
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz", CutSet).to_eager()
    write_fbank(root / "fbank", cuts, tiny_speech.fbank_dir / "cmvn.npz")
    cmvn = load_cmvn(root / "fbank" / "cmvn.npz")

    first_pass = root / "exp" / "decode" / "baseline" / ADAPT_SET
    hyps = decode_cuts(model, cuts, cmvn, load_graph(lang, with_tlg=False), DecodeConfig(method="greedy"))
    write_part(hyps, first_pass / "parts" / "1.tsv")
    merge_and_score(first_pass, cuts, 1)

    batches = [((b.feats, b.feat_lens), None) for b in feature_batches(cuts, cmvn, 30.0)]
    stats = collect_stats(model, model.fc_spec(), batches, forward=lambda m, x: m(*x))
    classes = classify(stats, ClassifyConfig(mode="percentile", percent=10.0))
    write_neurons_tsv(root / "exp" / "saliency" / ADAPT_SET / "neurons.tsv", stats, classes, {})
    return root, classes


def paths_for(root, fbank=None, exp=None) -> StagePaths:
    exp = exp or root / "exp"
    return StagePaths(model=root / "model.pt", lang=root / "lang", fbank=fbank or root / "fbank",
                      saliency=root / "exp" / "saliency", pseudo=root / "exp" / "decode" / "baseline",
                      adapt=exp / "adapt", decode=exp / "decode")


def run(root, system: str, seed: int = 1, **kw) -> tuple[dict, dict]:
    """Run one unit; returns the adapted state_dict and adapt.json."""
    paths = paths_for(root, kw.pop("fbank", None), kw.pop("exp", None))
    unit = Unit(system, seed, COND)
    run_unit(unit, paths, AdaptConfig(**{**CFG, **kw}), [COND], force=True)
    model, _ = load_model(unit.model_dir(paths.adapt) / "model.pt")
    return model.state_dict(), json.loads((unit.model_dir(paths.adapt) / "adapt.json").read_text())


def test_selective_moves_only_the_selected_neurons(stage):
    root, classes = stage
    base, _ = load_model(root / "model.pt")
    adapted, record = run(root, "adapt_selective")
    neurons = neurons_of(classes)
    hyper = neurons_of(classes, ("hyper",))
    assert record["phases"][0]["moved"]["moving"] == sum(len(v) * (base.fc[k].in_features + 1)
                                                         for k, v in neurons.items())
    for name, before in base.state_dict().items():
        after = adapted[name]
        layer = int(name.split(".")[1]) if name.startswith("fc.") else None
        if layer is None:  # conv, output layer
            assert torch.equal(before, after), name
            continue
        selected = torch.zeros(before.shape[0], dtype=torch.bool)
        selected[neurons[layer]] = True
        assert torch.equal(before[~selected], after[~selected]), f"{name}: an unselected row moved"
        changed = (before != after).reshape(before.shape[0], -1).any(dim=1)
        assert changed[hyper[layer]].all(), f"{name}: a selected (hyper) row did not move"


def test_lhuc_leaves_base_weights_untouched_until_folded(stage):
    root, _ = stage
    model, _ = load_model(root / "model.pt")
    spec = model.fc_spec()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    params, moved = open_phase(model, spec, "lhuc", {}, outgoing=False)
    assert moved["moving"] == 3 * 24
    labels = read_pseudo_labels(root / "exp" / "decode" / "baseline" / ADAPT_SET)
    kept = select_pseudo_labels(labels, PseudoLabelConfig())
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet).subset(cut_ids=list(kept.tokens)[:6])
    batch = PseudoCtcDataset(kept.tokens, load_cmvn(root / "fbank" / "cmvn.npz"))[cuts]
    optimizer = torch.optim.Adam(params, lr=0.05, weight_decay=0.1)
    for _ in range(3):
        train_step(model, batch, params, optimizer)
    state = model.state_dict()
    for name, before in base.items():
        module, _, param = name.rpartition(".")  # a consumer's weight is parametrised while LHUC is on
        now = state.get(name, state.get(f"{module}.parametrizations.{param}.original"))
        assert now is not None and torch.equal(before, now), f"LHUC moved base weight {name}"
    assert any((p != 0).any() for p in params)
    model.eval()
    with torch.no_grad():
        wrapped = model(batch.feats, batch.feat_lens)[0]
        close_phase(model, spec, "lhuc")
        folded = model(batch.feats, batch.feat_lens)[0]
    assert torch.allclose(wrapped, folded, atol=1e-5)
    assert not torch.equal(base["output.weight"], model.state_dict()["output.weight"])


def test_transcripts_of_the_adaptation_set_never_reach_training(stage, tmp_path):
    root, _ = stage
    variants = transcriptless_fbanks(root, tmp_path)
    for system in ("adapt_all", "adapt_selective_full"):
        original = run(root, system, exp=tmp_path / "a")
        for variant in variants:
            other = run(root, system, fbank=variant, exp=variant / "exp")
            assert original[1]["losses"] == other[1]["losses"]
            assert all(torch.equal(original[0][k], other[0][k]) for k in original[0])
    # the oracle, which does read them, tells the difference: the check above can fail
    truth = run(root, "adapt_oracle", exp=tmp_path / "a")
    lies = run(root, "adapt_oracle", fbank=tmp_path / "garbled", exp=tmp_path / "garbled" / "exp")
    assert truth[1]["losses"] != lies[1]["losses"]


def test_a_seed_fixes_the_run(stage, tmp_path):
    root, _ = stage
    first = run(root, "adapt_random_full", seed=3, exp=tmp_path / "a")
    again = run(root, "adapt_random_full", seed=3, exp=tmp_path / "b")
    other = run(root, "adapt_random_full", seed=4, exp=tmp_path / "c")
    assert first[1]["losses"] == again[1]["losses"]
    assert all(torch.equal(first[0][k], again[0][k]) for k in first[0])
    assert first[1]["neurons"] != other[1]["neurons"]
    assert [len(v) for v in first[1]["neurons"].values()] == [len(v) for v in other[1]["neurons"].values()]


def test_no_neurons_skips_the_neuron_phase(stage, tmp_path):
    root, _ = stage
    exp = tmp_path / "exp"
    shutil.copytree(root / "exp" / "decode", exp / "decode")
    tsv = root / "exp" / "saliency" / ADAPT_SET / "neurons.tsv"
    empty = exp / "saliency" / ADAPT_SET / "neurons.tsv"
    empty.parent.mkdir(parents=True)
    empty.write_text("".join(line.replace("\thyper\t", "\tnormal\t").replace("\thypo\t", "\tnormal\t")
                             for line in tsv.read_text().splitlines(keepends=True)))
    paths = StagePaths(model=root / "model.pt", lang=root / "lang", fbank=root / "fbank", saliency=exp / "saliency",
                       pseudo=exp / "decode" / "baseline", adapt=exp / "adapt", decode=exp / "decode")
    run_unit(Unit("adapt_selective_full", 1, COND), paths, AdaptConfig(**CFG), [COND])
    record = json.loads((exp / "adapt" / "adapt_selective_full.s1" / "adapted_x" / "adapt.json").read_text())
    assert record["phases"][0]["skipped"] == "no neurons selected; phase skipped"
    assert record["phases"][1]["steps"] == CFG["steps"]


def test_learning_rates_searched_once_per_system(stage, tmp_path):
    root, _ = stage
    exp = tmp_path / "exp"
    shutil.copytree(root / "exp", exp)
    shutil.copytree(exp / "saliency" / ADAPT_SET, exp / "saliency" / POOLED)  # one condition: pooled = it
    paths = dataclasses.replace(paths_for(root, exp=exp), saliency=exp / "saliency")
    cfg = AdaptConfig(**{**CFG, "systems": ["adapt_selective_full"], "lr_search": "system",
                         "lr_grid": [1e-5, 3e-3], "lr_grid_by_phase": {"selective": [1e-5, 3e-2]}})
    unit = Unit("adapt_selective_full", 2, COND)
    with pytest.raises(NeuroselError, match=str(rates_path(paths.adapt, unit.system))):
        run_unit(unit, paths, cfg, [COND])  # the search has not run
    [tune] = tune_units(cfg, seed=1)
    assert tune == Unit("adapt_selective_full", 1, POOLED)
    assert run_tune(tune, paths, cfg, [COND]) and not run_tune(tune, paths, cfg, [COND])
    doc = json.loads(rates_path(paths.adapt, unit.system).read_text())
    for rate, phase, grid in zip(doc["rates"], doc["phases"], ([1e-5, 3e-2], [1e-5, 3e-3])):
        tried = {float(k): v for k, v in phase["heldout_loss_by_lr"].items()}
        assert sorted(tried) == grid and rate == min(grid, key=lambda lr: (tried[lr], lr))
    assert run_unit(unit, paths, cfg, [COND])
    record = json.loads((unit.model_dir(paths.adapt) / "adapt.json").read_text())
    assert [p["lr"] for p in record["phases"]] == doc["rates"]
    assert [list(p["heldout_loss_by_lr"]) for p in record["phases"]] == [[f"{r:g}"] for r in doc["rates"]]
    assert not run_unit(unit, paths, cfg, [COND])
    doc["rates"] = [1e-5, 1e-5]  # other rates: the unit is out of date
    rates_path(paths.adapt, unit.system).write_text(json.dumps(doc))
    assert run_unit(unit, paths, cfg, [COND])
    record = json.loads((unit.model_dir(paths.adapt) / "adapt.json").read_text())
    assert [p["lr"] for p in record["phases"]] == [1e-5, 1e-5]


def test_fixed_rates_train_what_the_search_chose(stage, tmp_path):
    """lr_search: fixed with the rates a system search chose trains the same model as that search's
    unit; another system's rates leave the unit up to date, its own make it stale."""
    root, _ = stage
    exp = tmp_path / "exp"
    shutil.copytree(root / "exp", exp)
    shutil.copytree(exp / "saliency" / ADAPT_SET, exp / "saliency" / POOLED)
    paths = dataclasses.replace(paths_for(root, exp=exp), saliency=exp / "saliency")
    searched = AdaptConfig(**{**CFG, "systems": ["adapt_selective_full"], "lr_search": "system",
                              "lr_grid": [1e-5, 3e-3], "lr_grid_by_phase": {"selective": [1e-5, 3e-2]}})
    [tune] = tune_units(searched, seed=1)
    run_tune(tune, paths, searched, [COND])
    rates = json.loads(rates_path(paths.adapt, "adapt_selective_full").read_text())["rates"]
    unit = Unit("adapt_selective_full", 2, COND)
    assert run_unit(unit, paths, searched, [COND])
    by_search = load_model(unit.model_dir(paths.adapt) / "model.pt")[0].state_dict()

    fixed = dataclasses.replace(searched, systems=["adapt_selective_full", "adapt_all"], lr_search="fixed",
                                rates={"adapt_selective_full": rates, "adapt_all": [1e-3]})
    assert tune_units(fixed, seed=1) == []  # no search
    fixed_paths = dataclasses.replace(paths, adapt=tmp_path / "fixed" / "adapt")
    assert run_unit(unit, fixed_paths, fixed, [COND])
    by_config = load_model(unit.model_dir(fixed_paths.adapt) / "model.pt")[0].state_dict()
    assert by_config.keys() == by_search.keys()
    assert all(torch.equal(by_config[k], by_search[k]) for k in by_search)
    record = json.loads((unit.model_dir(fixed_paths.adapt) / "adapt.json").read_text())
    assert [p["lr"] for p in record["phases"]] == rates
    assert {p["lr_from"] for p in record["phases"]} == {"config (lr_search: fixed)"}
    other = dataclasses.replace(fixed, rates={**fixed.rates, "adapt_all": [3e-4]})
    assert not run_unit(unit, fixed_paths, other, [COND])  # another system's rate: still up to date
    mine = dataclasses.replace(fixed, rates={**fixed.rates, "adapt_selective_full": [rates[0], 1e-5]})
    assert run_unit(unit, fixed_paths, mine, [COND])


def test_fixed_rates_refuse_a_missing_or_misshapen_entry():
    base = {**CFG, "systems": ["adapt_all", "adapt_selective_full"], "lr_search": "fixed"}
    with pytest.raises(ValueError, match="needs rates.adapt_selective_full"):
        AdaptConfig(**{**base, "rates": {"adapt_all": [1e-3]}})
    with pytest.raises(ValueError, match=r"rates.adapt_selective_full: 2 positive"):
        AdaptConfig(**{**base, "rates": {"adapt_all": [1e-3], "adapt_selective_full": [1e-3]}})
    with pytest.raises(ValueError, match="rates: unknown system 'adapt_nothing'"):
        AdaptConfig(**{**CFG, "rates": {"adapt_nothing": [1e-3]}})
    AdaptConfig(**{**base, "rates": {"adapt_all": [1e-3], "adapt_selective_full": [3e-3, 1e-4]}})


def test_pending_lists_exactly_the_work_left(stage, tmp_path, capsys):
    from neurosel.bin import adapt as adapt_cli

    root, _ = stage
    sets = ["--set", "systems=[adapt_all]", "--set", "pooled_systems=[]", "--set", "num_seeds=1",
            "--set", "steps=4", "--set", "max_duration=8.0", "--set", "lr_grid=[1.0e-3]", "--set", "lr_search=system"]
    args = [*sets, "--pseudo-dir", str(root / "exp" / "decode" / "baseline"),
            str(root / "model.pt"), str(root / "lang"), str(root / "fbank"), str(tmp_path / "exp")]
    plan = tmp_path / "exp" / "adapt" / "log" / "pending.tunes"

    def pending() -> str:
        capsys.readouterr()
        assert adapt_cli.main(["pending", "--what", "tunes", *args]) == 0
        return capsys.readouterr().out

    assert pending() == "1\n" and plan.read_text() == "1\n"
    assert adapt_cli.main(["tune", "--job", "1", *args]) == 0
    assert pending() == "0\n" and plan.read_text() == ""  # the launcher gets no job


def test_pseudo_label_selection_and_report(stage):
    root, _ = stage
    labels = PseudoLabels(tokens={"a": [3, 4], "b": [], "c": [5], "d": [6, 7]},
                          confidence={"a": 0.9, "b": 0.99, "c": 0.5, "d": 0.7})
    assert list(select_pseudo_labels(labels, PseudoLabelConfig()).tokens) == ["a", "c", "d"]
    top = select_pseudo_labels(labels, PseudoLabelConfig(keep="top_fraction", top_fraction=0.5))
    assert list(top.tokens) == ["a", "d"] and top.dropped_empty == 1 and top.dropped_confidence == 1
    assert list(select_pseudo_labels(labels, PseudoLabelConfig(keep="threshold", threshold=0.8)).tokens) == ["a"]
    assert select_pseudo_labels(labels, PseudoLabelConfig(keep="weight")).weights == {"a": 0.9, "c": 0.5, "d": 0.7}
    first_pass = root / "exp" / "decode" / "baseline" / ADAPT_SET
    real = read_pseudo_labels(first_pass)
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet)
    report = pseudo_label_report(real, KeptLabels(real.tokens, None, 0, 0), cuts, [first_pass])
    wer = float((first_pass / "wer").read_text().split()[1])
    assert report["utterances"] == len(cuts) and report["pseudo_wer_all"] == pytest.approx(wer, abs=0.01)


def test_units_split_and_budget():
    units = list_units(AdaptConfig(systems=["adapt_all", "adapt_lhuc"], pooled_systems=["adapt_all"], num_seeds=2),
                       ["noise", "telephone"], seed=7)
    assert len(units) == 2 * 2 * 2 + 2
    assert units[0].name == "adapt_all.s7" and units[-1] == Unit("adapt_all", 8, POOLED)
    assert units[-1].name == "adapt_all_pooled.s8"
    assert units[-1].test_sets(["noise", "telephone"]) == ["ood_noise", "ood_telephone", "test"]
    ids = [f"u{i}" for i in range(20)]
    train, heldout = heldout_split(ids, 0.15)
    assert len(heldout) == 3 and sorted(train + heldout) == sorted(ids)
    assert heldout_split(list(reversed(ids)), 0.15) == (train, heldout)
    assert phase_steps(SYSTEMS["adapt_selective_full"], 61, 0.5) == [30, 31]
    assert phase_steps(SYSTEMS["adapt_all"], 61, 0.5) == [61]


def test_pending_units_run_as_one_job_per_system_and_seed(tmp_path):
    from neurosel.recipe.adapt_plan import pending_jobs, planned_indices, write_plan

    units = list_units(AdaptConfig(systems=["adapt_all", "adapt_lhuc"], pooled_systems=["adapt_all"], num_seeds=2),
                       ["noise", "telephone"], seed=7)
    # units 1-8: (all, 7) noise/telephone, (all, 8) ..., (lhuc, 7) ..., (lhuc, 8) ...; 9-10 pooled all s7, s8
    todo = [True, True, False, True, False, False, True, False, True, True]
    jobs = pending_jobs(units, todo)
    assert jobs == [[1, 2], [4], [7], [9], [10]]
    listing = tmp_path / "pending.units"
    assert write_plan(listing, jobs) == 5
    assert planned_indices(listing, 1, len(units)) == [0, 1]
    assert [units[i] for i in planned_indices(listing, 5, len(units))] == [Unit("adapt_all", 8, POOLED)]
    with pytest.raises(NeuroselError, match="has 5 lines, no line 6"):
        planned_indices(listing, 6, len(units))
    listing.write_text("1 2\n11\n")
    with pytest.raises(NeuroselError, match="unit 11 is not in 1..10"):
        planned_indices(listing, 2, len(units))
    assert pending_jobs(units, [False] * len(units)) == []


def test_entropy_minimisation_lowers_the_output_entropy(stage):
    root, _ = stage
    _, record = run(root, "adapt_entropy", steps=6)
    assert record["phases"][0]["objective"] == "entropy"
    model, _ = load_model(root / "model.pt")
    labels = read_pseudo_labels(root / "exp" / "decode" / "baseline" / ADAPT_SET)
    kept = select_pseudo_labels(labels, PseudoLabelConfig())
    cuts = load_manifest(root / "fbank" / f"cuts_{ADAPT_SET}.jsonl.gz", CutSet).subset(cut_ids=list(kept.tokens)[:6])
    batch = PseudoCtcDataset(kept.tokens, load_cmvn(root / "fbank" / "cmvn.npz"))[cuts]
    params = list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3)
    model.eval()  # no dropout: the entropy of the same batch must fall
    entropies = [entropy_step(model, batch, params, optimizer, grad_clip=5.0) for _ in range(5)]
    assert entropies[-1] < entropies[0] <= math.log(model.output.out_features) + 1e-4


def test_the_sigmoid_model_searches_its_own_adaptation_rates() -> None:
    """conf/adapt.yaml's recorded rates belong to conf/train.yaml's ReLU baseline: run.sh lays
    conf/train_sigmoid_stages.yaml over the later stages of the sigmoid model (after the study's
    overlay, before the corpus size's), which searches them per system; the ReLU model keeps them."""
    from pathlib import Path

    from neurosel import config as C

    conf = Path(__file__).resolve().parents[1] / "egs" / "synth" / "conf"
    relu = C.resolve(AdaptConfig, conf / "adapt.yaml", str(conf / "study_full.yaml"), "adapt")
    sigmoid = C.resolve(AdaptConfig, conf / "adapt.yaml",
                        f"{conf / 'study_full.yaml'},{conf / 'train_sigmoid_stages.yaml'}", "adapt")
    assert relu.lr_search == "fixed" and relu.rates_of("adapt_all") == [3.0e-4]
    assert sigmoid.lr_search == "system" and sigmoid.systems == relu.systems
    assert [u.system for u in tune_units(sigmoid, 42)] == list(dict.fromkeys(relu.systems + relu.pooled_systems))
    assert tune_units(relu, 42) == []
    run_sh = (Path(__file__).resolve().parents[1] / "run.sh").read_text()
    assert 'overlays+=("$conf/${train_config}_stages.yaml")' in run_sh
