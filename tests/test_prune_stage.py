"""Stage 6 (prune) on the stage 5 outputs of ``test_saliency_stage``'s tiny real-speech run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_speech import tiny_speech  # noqa: F401  (pytest fixture behind saliency_run)
from test_saliency_stage import saliency_run  # noqa: F401  (pytest fixture)

from neurosel.bin import prune as prune_cli
from neurosel.decode.run import load_cuts
from neurosel.inference import feature_batches
from neurosel.io import torch_load
from neurosel.model import load_model
from neurosel.prune import fc_widths, mask_neurons
from neurosel.recipe.neuron_table import read_neurons_tsv
from neurosel.errors import NeuroselError
from neurosel.stage import STALE
from neurosel.recipe.prune_stage import PruneStageConfig, build_system, choose_reference, plan_systems
from neurosel.data.batches import load_cmvn

OVERRIDES = ["reference_set=pooled", "speed_utterances=2", "speed_repeats=1", "curve_fractions=[0.25]",
             "curve_orders=[hyper_hypo,magnitude]", "nofold=[hyper_hypo,random]"]


def cli_args(run, prune_dir: Path, action: str, *extra: str) -> list[str]:
    flags = [f for o in OVERRIDES for f in ("--set", o)]
    return [action, *flags, *extra, str(run.model), str(run.out), str(run.fbank), str(prune_dir)]


@pytest.fixture(scope="module")
def prune_dir(saliency_run, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("prune_stage") / "prune"
    assert prune_cli.main(cli_args(saliency_run, out, "work", "--job", "1", "--num-jobs", "2")) == 0
    assert prune_cli.main(cli_args(saliency_run, out, "work", "--job", "2", "--num-jobs", "2")) == 0
    assert prune_cli.main(cli_args(saliency_run, out, "merge")) == 0
    return out


def removed_per_layer(table, which: tuple[str, ...]) -> list[int]:
    return [int(sum(c in which for c in labels)) for labels in table.layer_classes()]


def test_every_planned_system_is_built(saliency_run, prune_dir):  # noqa: F811
    names = (prune_dir / "reference.json").read_text()
    systems = json.loads(names)["systems"]
    assert systems[:6] == ["prune_hyper", "prune_hypo", "prune_hyper_hypo", "prune_random.s1", "prune_random.s2",
                           "prune_random.s3"]
    assert {"prune_magnitude", "prune_taylor2", "prune_entropy", "prune_hyper_hypo_nofold",
            "prune_random_nofold.s3", "curve_hyper_hypo_25", "curve_magnitude_25"} <= set(systems)
    assert "prune_random" not in systems and "prune_hyper_nofold" not in systems
    for s in systems:
        info = json.loads((prune_dir / s / "prune.json").read_text())
        assert info["reference_set"] == "pooled" and info["speed"]["seconds"] > 0
        assert (prune_dir / s / "model.pt").is_file() and (prune_dir / s / ".done").is_file()
    assert len((prune_dir / "summary.tsv").read_text().splitlines()) == len(systems) + 1


def test_pruned_widths_are_the_original_minus_the_classes_in_neurons_tsv(saliency_run, prune_dir):  # noqa: F811
    table = read_neurons_tsv(saliency_run.out / "pooled" / "neurons.tsv")
    for system, which in (("prune_hyper", ("hyper",)), ("prune_hypo", ("hypo",)),
                          ("prune_hyper_hypo", ("hyper", "hypo"))):
        model, _ = load_model(prune_dir / system / "model.pt")
        removed = removed_per_layer(table, which)
        assert fc_widths(model, model.fc_spec()) == [w - r for w, r in zip(saliency_run.widths, removed)]
        ckpt = torch_load(prune_dir / system / "model.pt")
        for layer, keep in ckpt["index_map"].items():
            dropped = set(range(saliency_run.widths[layer])) - set(keep.tolist())
            assert dropped == {j for j, c in enumerate(table.layer_classes()[layer]) if c in which}
    # same per-layer counts for the controls and the criteria; a quarter of each layer on the curve
    counts = removed_per_layer(table, ("hyper", "hypo"))
    for system in ("prune_random.s2", "prune_magnitude", "prune_taylor1", "prune_random_nofold.s1"):
        assert json.loads((prune_dir / system / "prune.json").read_text())["removed_per_layer"] == counts
    curve = json.loads((prune_dir / "curve_magnitude_25" / "prune.json").read_text())
    assert curve["removed_per_layer"] == [6, 4]
    seeds = {(prune_dir / f"prune_random.s{k}" / "removed.tsv").read_text() for k in (1, 2, 3)}
    assert len(seeds) == 3


@pytest.mark.parametrize("system, fold", [("prune_hyper_hypo", True), ("prune_hyper_hypo_nofold", False)])
def test_masked_baseline_computes_what_the_pruned_checkpoint_computes(saliency_run, prune_dir, system, fold):  # noqa: F811
    table = read_neurons_tsv(saliency_run.out / "pooled" / "neurons.tsv")
    baseline, _ = load_model(saliency_run.model)
    pruned, _ = load_model(prune_dir / system / "model.pt")
    remove = {layer: torch.tensor([j for j, c in enumerate(labels) if c != "normal"])
              for layer, labels in enumerate(table.layer_classes())}
    fold_mean = {layer: torch.from_numpy(m.copy()) for layer, m in enumerate(table.by_layer(table.mean_act))}
    batch = next(feature_batches(load_cuts(saliency_run.fbank, "dev"), load_cmvn(saliency_run.fbank / "cmvn.npz")))
    handle = mask_neurons(baseline, baseline.fc_spec(), remove, fold_mean if fold else None)
    with torch.no_grad():
        masked, _ = baseline(batch.feats, batch.feat_lens)
        removed, _ = pruned(batch.feats, batch.feat_lens)
    handle.remove()
    assert torch.allclose(masked, removed, atol=1e-5)


def speed_batches(run) -> list:
    cuts = load_cuts(run.fbank, "dev")
    return list(feature_batches(cuts.subset(first=1), load_cmvn(run.fbank / "cmvn.npz")))


def test_empty_selection_gives_the_unpruned_model_with_a_note(saliency_run, tmp_path):  # noqa: F811
    saliency = tmp_path / "saliency"
    (saliency / "dev").mkdir(parents=True)
    lines = (saliency_run.out / "dev" / "neurons.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[2] = "normal"
    (saliency / "dev" / "neurons.tsv").write_text("\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")
    (saliency / "pooled").mkdir()
    shutil.copy(saliency / "dev" / "neurons.tsv", saliency / "pooled" / "neurons.tsv")
    reference = choose_reference(saliency, "auto")
    assert reference[0] == "dev" and "no hyper/hypo" in reference[1]
    table = read_neurons_tsv(saliency / "dev" / "neurons.tsv")
    plans = {p.name: p for p in plan_systems(PruneStageConfig(), list(table.scores))}
    for name in ("prune_hyper_hypo", "prune_random.s1", "prune_magnitude"):
        info = build_system(plans[name], saliency_run.model, reference, table, speed_batches(saliency_run), 1,
                            tmp_path / name)
        assert info["removed"] == 0 and "unpruned model" in info["notes"][-1]
        model, _ = load_model(tmp_path / name / "model.pt")
        assert fc_widths(model, model.fc_spec()) == saliency_run.widths


def test_a_fully_selected_layer_keeps_one_neuron(saliency_run, tmp_path):  # noqa: F811
    lines = (saliency_run.out / "dev" / "neurons.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    for row in rows:
        row[2] = "hyper" if row[0] == "1" else "normal"
    path = tmp_path / "neurons.tsv"
    path.write_text("\n".join([lines[0]] + ["\t".join(r) for r in rows]) + "\n")
    table = read_neurons_tsv(path)
    plan = next(p for p in plan_systems(PruneStageConfig(), list(table.scores)) if p.name == "prune_hyper")
    info = build_system(plan, saliency_run.model, ("dev", "test"), table, speed_batches(saliency_run), 1,
                        tmp_path / "sys")
    assert info["widths_after"] == [saliency_run.widths[0], 1]
    assert "not emptied" in info["notes"][0]


def test_status_skips_when_up_to_date(saliency_run, prune_dir):  # noqa: F811
    assert prune_cli.main(cli_args(saliency_run, prune_dir, "status")) == 0
    assert prune_cli.main(cli_args(saliency_run, prune_dir, "status", "--set", "random_seeds=[4]")) == STALE


def test_the_size_sweep_removes_each_share_and_random_of_its_counts(saliency_run, tmp_path):  # noqa: F811
    """sweep_hyper_hypo_<p>: the top and bottom p% of each layer by on-rate; sweep_random_<p>: as
    many random neurons per layer; the threshold point: on-rates past the fixed limits (here set
    so that they select some); every sweep point is decoded on dev first, the rest as usual."""
    from neurosel.recipe.prune_stage import decode_sets, select_neurons

    table = read_neurons_tsv(saliency_run.out / "pooled" / "neurons.tsv")
    cfg = PruneStageConfig(random_seeds=[1, 2], sweep_percents=[5, 20], sweep_threshold=True,
                           sweep_thresholds=[0.6, 0.3])
    plans = {p.name: p for p in plan_systems(cfg, list(table.scores))}
    assert [n for n in plans if n.startswith("sweep_")] == [  # random: once per random seed
        "sweep_hyper_hypo_5", "sweep_random_5.s1", "sweep_random_5.s2", "sweep_hyper_hypo_20", "sweep_random_20.s1",
        "sweep_random_20.s2", "sweep_hyper_hypo_thr", "sweep_random_thr.s1", "sweep_random_thr.s2"]
    model, _ = load_model(saliency_run.model)
    on_rate = table.by_layer(table.on_rate)
    for p in (5, 20):
        remove, _ = select_neurons(plans[f"sweep_hyper_hypo_{p}"], table, model)
        for layer, rates in enumerate(on_rate):
            k = round(p / 100 * len(rates))
            order = sorted(range(len(rates)), key=lambda j: (rates[j], j))
            expected = set(order[:k]) | set(order[len(rates) - k:])
            assert set(remove[layer].tolist()) == expected and len(expected) == 2 * k > 0
        rnd, _ = select_neurons(plans[f"sweep_random_{p}.s1"], table, model)
        assert [v.numel() for v in rnd.values()] == [v.numel() for v in remove.values()]
        assert any(set(rnd[i].tolist()) != set(remove[i].tolist()) for i in rnd)
        rnd2, _ = select_neurons(plans[f"sweep_random_{p}.s2"], table, model)
        assert [v.numel() for v in rnd2.values()] == [v.numel() for v in remove.values()]
        assert any(set(rnd[i].tolist()) != set(rnd2[i].tolist()) for i in rnd)
    thr, _ = select_neurons(plans["sweep_hyper_hypo_thr"], table, model)
    assert {layer: set(v.tolist()) for layer, v in thr.items()} == {
        layer: {j for j, r in enumerate(rates) if r >= 0.6 or r <= 0.3} for layer, rates in enumerate(on_rate)}
    assert sum(v.numel() for v in thr.values()) > 0
    assert decode_sets(plans["sweep_random_5.s1"], ["test", "ood_a"]) == ["dev", "test", "ood_a"]
    assert decode_sets(plans["prune_hyper_hypo"], ["test", "ood_a"]) == ["test", "ood_a"]
    with pytest.raises(ValueError, match="whole percentages"):
        PruneStageConfig(sweep_percents=[2.5])
    # the sweep only adds systems: the markers of the others do not change
    assert PruneStageConfig().build_settings() == cfg.build_settings()


def test_hyper_hypo_from_another_set_removes_that_sets_classes(saliency_run, prune_dir, tmp_path):  # noqa: F811
    """hyper_hypo_from: [dev] adds prune_hyper_hypo_from_dev, the hyper+hypo neurons of dev's
    neurons.tsv removed (and dev's means folded) while the stage's reference set stays pooled; the
    other systems' markers are untouched; a set stage 5 did not measure is a one-line error."""
    out = tmp_path / "prune"
    shutil.copytree(prune_dir, out)
    before = {p: p.read_bytes() for p in out.glob("*/.done")}
    extra = ("--set", "hyper_hypo_from=[dev]")
    assert prune_cli.main(cli_args(saliency_run, out, "status", *extra)) == STALE
    assert prune_cli.main(cli_args(saliency_run, out, "work", *extra)) == 0
    assert {p: p.read_bytes() for p in out.glob("*/.done") if p in before} == before
    info = json.loads((out / "prune_hyper_hypo_from_dev" / "prune.json").read_text())
    assert info["reference_set"] == "dev" and info["plan"]["reference"] == "dev"
    dev = read_neurons_tsv(saliency_run.out / "dev" / "neurons.tsv")
    pooled = read_neurons_tsv(saliency_run.out / "pooled" / "neurons.tsv")
    ckpt = torch_load(out / "prune_hyper_hypo_from_dev" / "model.pt")
    for layer, keep in ckpt["index_map"].items():
        dropped = set(range(saliency_run.widths[layer])) - set(keep.tolist())
        assert dropped == {j for j, c in enumerate(dev.layer_classes()[layer]) if c in ("hyper", "hypo")}
    assert any(list(d) != list(p) for d, p in zip(dev.layer_classes(), pooled.layer_classes()))  # two sources differ
    assert prune_cli.main(cli_args(saliency_run, out, "status", *extra)) == 0
    with pytest.raises(NeuroselError, match=r"nothing/neurons.tsv: no such file \(hyper_hypo_from names 'nothing'"):
        prune_cli.main(cli_args(saliency_run, out, "status", "--set", "hyper_hypo_from=[nothing]"))
