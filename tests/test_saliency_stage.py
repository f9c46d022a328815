"""Stage 5 (saliency) on a tiny real speech corpus: an untrained CNN, a dev set and two
'ood_adapt' sets cut from the fixture's speech, run through the stage's entry point."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fixtures_speech import tiny_speech  # noqa: F401  (pytest fixture)
from lhotse import CutSet

from neurosel.bin import saliency as saliency_cli
from neurosel.model import ModelConfig, build_model, save_model
from neurosel.recipe.neuron_table import FIXED_COLUMNS, read_neurons_tsv
from neurosel.recipe.saliency_stage import reference_sets
from neurosel.report.markdown import selection_note
from neurosel.saliency.stats import load_stats
from neurosel.stage import STALE
from neurosel.data.batches import load_bpe

# fast settings: a few Taylor utterances, and percentile classes so an untrained model has some
OVERRIDES = ["taylor_utterances=6", "taylor_max_duration=20.0", "classify.mode=percentile",
             "classify.percent=10.0", "hist_bins=10"]


@dataclass(frozen=True)
class SaliencyRun:
    model: Path
    fbank: Path
    lang: Path
    out: Path
    widths: list[int]


def cli_args(run: SaliencyRun, action: str, *extra: str) -> list[str]:
    flags = [f for o in OVERRIDES for f in ("--set", o)]
    return [action, *flags, *extra, str(run.model), str(run.fbank), str(run.lang), str(run.out)]


@pytest.fixture(scope="session")
def saliency_run(tiny_speech, tmp_path_factory) -> SaliencyRun:  # noqa: F811
    """Stage 5 run once on a tiny model: fbank dir with dev, train and ood_adapt_{a,b}."""
    root = tmp_path_factory.mktemp("saliency_stage")
    fbank = root / "fbank"
    fbank.mkdir()
    for name in ("cuts_train.jsonl.gz", "cuts_dev.jsonl.gz", "cmvn.npz"):
        shutil.copy(tiny_speech.fbank_dir / name, fbank / name)
    train = CutSet.from_file(fbank / "cuts_train.jsonl.gz").to_eager()
    ids = sorted(train.ids)
    train.subset(cut_ids=ids[:6]).to_file(fbank / "cuts_ood_adapt_a.jsonl.gz")
    train.subset(cut_ids=ids[-6:]).to_file(fbank / "cuts_ood_adapt_b.jsonl.gz")
    torch.manual_seed(0)
    widths = [24, 16]
    model = build_model(ModelConfig(vocab_size=load_bpe(tiny_speech.lang_dir).vocab_size(), conv_channels=[4, 4],
                                    fc_dims=widths, dropout=0.0))
    save_model(model, root / "model.pt")
    run = SaliencyRun(root / "model.pt", fbank, tiny_speech.lang_dir, root / "saliency", widths)
    assert saliency_cli.main(cli_args(run, "taylor")) == 0
    for job in (1, 2):
        assert saliency_cli.main(cli_args(run, "work", "--job", str(job), "--num-jobs", "2")) == 0
    assert saliency_cli.main(cli_args(run, "merge")) == 0
    return run


def test_reference_sets_come_from_the_cuts_present(saliency_run):
    assert reference_sets(saliency_run.fbank) == ["dev", "ood_adapt_a", "ood_adapt_b"]


def test_every_reference_set_has_its_outputs(saliency_run):
    for ref in ("dev", "ood_adapt_a", "ood_adapt_b", "pooled"):
        d = saliency_run.out / ref
        for name in ("neurons.tsv", "stats.pt", "classes.json", "criteria.json", "config.yaml", "on_rate.png",
                     "mean_vs_entropy.png", "criteria_overlap.png", "class_counts.png", ".done"):
            assert (d / name).is_file(), d / name
        header = (d / "neurons.tsv").read_text().splitlines()[0].split("\t")
        assert tuple(header[:6]) == FIXED_COLUMNS
        assert header[6:] == ["magnitude", "outgoing", "taylor1", "taylor2", "apoz", "random", "wanda", "flap"]
        table = read_neurons_tsv(d / "neurons.tsv")
        assert len(table.layer) == sum(saliency_run.widths)
        classes = json.loads((d / "classes.json").read_text())
        # percentile mode, 10 % per layer: round(2.4) = 2 and round(1.6) = 2 of each class
        assert [c["hyper"] for c in classes["counts"]] == [2, 2]
        assert [c["hypo"] for c in classes["counts"]] == [2, 2]
        stats = load_stats(d / "stats.pt")
        on_rate = [layer.on_count.double() / layer.count for layer in stats.layers]
        assert [c["hyper"] for c in classes["threshold_counts"]] == [int((r >= 0.95).sum()) for r in on_rate]
        assert [c["hypo"] for c in classes["threshold_counts"]] == [int((r <= 0.05).sum()) for r in on_rate]
        criteria = json.loads((d / "criteria.json").read_text())
        alone = ", ".join(f"{c['hyper']}/{c['hypo']}" for c in classes["threshold_counts"])
        assert f"top/bottom 10% of each layer by on_rate; on-rate >= 0.95 / <= 0.05 would find {alone}" \
            in selection_note(criteria)
        assert criteria["budget"] == 8
        entropy_row = next(r for r in criteria["rows"] if r["criterion"] == "entropy")
        assert entropy_row["selected"] == 8


def test_pooled_is_the_exact_merge_of_the_ood_sets(saliency_run):
    a, b, pooled = (load_stats(saliency_run.out / r / "stats.pt") for r in ("ood_adapt_a", "ood_adapt_b", "pooled"))
    for la, lb, lp in zip(a.layers, b.layers, pooled.layers):
        assert lp.count == la.count + lb.count
        assert torch.equal(lp.on_count, la.on_count + lb.on_count)
        assert torch.equal(lp.hist, la.hist + lb.hist)
    # the Taylor columns come from labelled train data, so they are the same for every reference set
    dev = read_neurons_tsv(saliency_run.out / "dev" / "neurons.tsv")
    ood = read_neurons_tsv(saliency_run.out / "ood_adapt_a" / "neurons.tsv")
    assert (dev.scores["taylor1"] == ood.scores["taylor1"]).all()
    assert not (dev.on_rate == ood.on_rate).all()


def test_overlap_compares_dev_with_each_ood_selection(saliency_run):
    doc = json.loads((saliency_run.out / "overlap.json").read_text())
    assert [r["reference_set"] for r in doc["rows"]] == ["ood_adapt_a", "ood_adapt_b", "pooled"]
    for row in doc["rows"]:
        assert len(row["jaccard_per_layer"]) == 2
        assert all(0.0 <= j <= 1.0 for j in row["jaccard_per_layer"])
    assert len(doc["hyper_in_one_hypo_in_another"]) == 2
    assert (saliency_run.out / "overlap.tsv").read_text().startswith("reference_set\t")


def test_status_skips_when_up_to_date_and_not_after_a_config_change(saliency_run):
    assert saliency_cli.main(cli_args(saliency_run, "status")) == 0
    assert saliency_cli.main(cli_args(saliency_run, "status", "--set", "seed=5")) == STALE
    before = (saliency_run.out / "dev" / "neurons.tsv").stat().st_mtime_ns
    assert saliency_cli.main(cli_args(saliency_run, "work")) == 0  # up to date: nothing rewritten
    assert (saliency_run.out / "dev" / "neurons.tsv").stat().st_mtime_ns == before
