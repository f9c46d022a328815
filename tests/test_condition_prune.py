"""Removal as unsupervised adaptation (issue 16 part 2): stage 6's ``condprune_*`` systems, whose
neurons are chosen from each OOD condition's own ``ood_adapt_<c>`` statistics, on the stage 5
outputs of ``test_saliency_stage``'s tiny real-speech run; and their report rows on hand-made
decode dirs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures_speech import tiny_speech  # noqa: F401  (pytest fixture behind saliency_run)
from lhotse import CutSet
from lhotse.utils import fastcopy
from test_saliency_stage import SaliencyRun, saliency_run  # noqa: F401  (pytest fixture)
from test_saliency_stage import cli_args as saliency_args
from test_retrain import corpus_layout

from neurosel.bin import prune as prune_cli
from neurosel.bin import retrain
from neurosel.bin import saliency as saliency_cli
from neurosel.decode.run import load_cuts
from neurosel.inference import feature_batches
from neurosel.io import torch_load
from neurosel.model import load_model
from neurosel.prune import mask_neurons
from neurosel.recipe import layout
from neurosel.recipe.neuron_table import read_neurons_tsv
from neurosel.report.build import build_report
from neurosel.report.claims import HOLDS, PER_CONDITION, REFUTED
from neurosel.stage import STALE, UP_TO_DATE
from neurosel.data.batches import load_cmvn

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth" / "conf"
CONDITIONS = ("a", "b")
# few and cheap default systems beside the per-condition ones
FAST = ["reference_set=pooled", "speed_utterances=2", "speed_repeats=1", "criteria=[magnitude]", "nofold=[]",
        "curve_orders=[]", "random_seeds=[1,2]", "per_condition=[hyper_hypo,random]"]


def prune_args(run: SaliencyRun, prune_dir: Path, action: str, *extra: str, overrides=FAST) -> list[str]:
    flags = [f for o in overrides for f in ("--set", o)]
    return [action, *flags, *extra, str(run.model), str(run.out), str(run.fbank), str(prune_dir)]


def build(run: SaliencyRun, prune_dir: Path, *extra: str, overrides=FAST) -> None:
    for job in ("1", "2"):
        assert prune_cli.main(prune_args(run, prune_dir, "work", *extra, "--job", job, "--num-jobs", "2",
                                         overrides=overrides)) == 0
    assert prune_cli.main(prune_args(run, prune_dir, "merge", *extra, overrides=overrides)) == 0


@pytest.fixture(scope="module")
def condition_prune(saliency_run, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("condprune") / "prune"
    build(saliency_run, out)
    return out


def removed(folder: Path) -> dict[int, set[int]]:
    out: dict[int, set[int]] = {}
    for line in (folder / "removed.tsv").read_text().splitlines()[1:]:
        layer, neuron = map(int, line.split("\t"))
        out.setdefault(layer, set()).add(neuron)
    return out


def test_each_condition_removes_what_its_own_neurons_tsv_says(saliency_run, condition_prune):  # noqa: F811
    systems = json.loads((condition_prune / "reference.json").read_text())["systems"]
    assert [s for s in systems if s.startswith("condprune_")] == [
        "condprune_hyper_hypo/adapted_a", "condprune_hyper_hypo/adapted_b", "condprune_random.s1/adapted_a",
        "condprune_random.s1/adapted_b", "condprune_random.s2/adapted_a", "condprune_random.s2/adapted_b"]
    selections = {}
    for c in CONDITIONS:
        table = read_neurons_tsv(saliency_run.out / layout.adapt_set(c) / "neurons.tsv")
        hyper_hypo = {layer: {j for j, k in enumerate(labels) if k != "normal"}
                      for layer, labels in enumerate(table.layer_classes())}
        folder = condition_prune / "condprune_hyper_hypo" / layout.adapted_name(c)
        info = json.loads((folder / "prune.json").read_text())
        assert info["reference_set"] == layout.adapt_set(c) and "own unlabelled" in info["reference_choice"]
        assert removed(folder) == {layer: idx for layer, idx in hyper_hypo.items() if idx}
        selections[c] = removed(folder)
        # the controls remove as many neurons per layer as that condition's hyper+hypo set
        counts = [len(hyper_hypo[layer]) for layer in sorted(hyper_hypo)]
        for seed in (1, 2):
            control = condition_prune / f"condprune_random.s{seed}" / layout.adapted_name(c)
            assert json.loads((control / "prune.json").read_text())["removed_per_layer"] == counts
        assert removed(condition_prune / "condprune_random.s1" / layout.adapted_name(c)) != \
            removed(condition_prune / "condprune_random.s2" / layout.adapted_name(c))
        # the removed neurons' mean output on that condition's audio is folded into the next layer
        baseline, _ = load_model(saliency_run.model)
        pruned, _ = load_model(folder / "model.pt")
        fold = {layer: torch.from_numpy(m.copy()) for layer, m in enumerate(table.by_layer(table.mean_act))}
        remove = {layer: torch.tensor(sorted(idx)) for layer, idx in hyper_hypo.items()}
        batch = next(feature_batches(load_cuts(saliency_run.fbank, "dev"), load_cmvn(saliency_run.fbank / "cmvn.npz")))
        handle = mask_neurons(baseline, baseline.fc_spec(), remove, fold)
        with torch.no_grad():
            assert torch.allclose(baseline(batch.feats, batch.feat_lens)[0], pruned(batch.feats, batch.feat_lens)[0],
                                  atol=1e-5)
        handle.remove()
    assert selections["a"] != selections["b"]  # each condition's own audio chooses its own neurons


def garbled(src: Path, dst: Path, text: str | None) -> None:
    """``src`` (a cuts file) with every supervision's transcript replaced by ``text``."""
    cuts = CutSet.from_file(src).to_eager()
    cuts.map(lambda c: fastcopy(c, supervisions=[fastcopy(s, text=text) for s in c.supervisions])).to_file(dst)


def test_condition_pruning_reads_no_transcript(saliency_run, condition_prune, tmp_path):  # noqa: F811
    fbank = tmp_path / "fbank"
    shutil.copytree(saliency_run.fbank, fbank)
    garbled(saliency_run.fbank / "cuts_ood_adapt_a.jsonl.gz", fbank / "cuts_ood_adapt_a.jsonl.gz", "zebra quartz mop")
    garbled(saliency_run.fbank / "cuts_ood_adapt_b.jsonl.gz", fbank / "cuts_ood_adapt_b.jsonl.gz", None)
    assert {s.text for c in CutSet.from_file(fbank / "cuts_ood_adapt_a.jsonl.gz") for s in c.supervisions} == \
        {"zebra quartz mop"}
    run = SaliencyRun(saliency_run.model, fbank, saliency_run.lang, tmp_path / "saliency", saliency_run.widths)
    assert saliency_cli.main(saliency_args(run, "taylor")) == 0
    assert saliency_cli.main(saliency_args(run, "work", "--job", "1", "--num-jobs", "1")) == 0
    assert saliency_cli.main(saliency_args(run, "merge")) == 0
    build(run, tmp_path / "prune")
    for c in CONDITIONS:
        for system in ("condprune_hyper_hypo", "condprune_random.s1"):
            here = tmp_path / "prune" / system / layout.adapted_name(c)
            there = condition_prune / system / layout.adapted_name(c)
            assert (here / "removed.tsv").read_bytes() == (there / "removed.tsv").read_bytes()
            mine, theirs = torch_load(here / "model.pt")["model"], torch_load(there / "model.pt")["model"]
            assert mine.keys() == theirs.keys()
            assert all(torch.equal(mine[k], theirs[k]) for k in mine), (system, c)


def markers(prune_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(prune_dir)): (p.read_bytes(), p.stat().st_mtime_ns) for p in prune_dir.rglob(".done")}


def test_full_study_overlay_adds_the_systems_and_keeps_the_default_ones(saliency_run, tmp_path):  # noqa: F811
    prune_dir = tmp_path / "prune"
    conf = ["--config", str(CONF / "prune.yaml"), "--overlay"]
    tiny, full = str(CONF / "tiny.yaml"), f"{CONF / 'tiny.yaml'},{CONF / 'study_full.yaml'}"
    fast = ["speed_repeats=1"]
    build(saliency_run, prune_dir, *conf, tiny, overrides=fast)
    default = markers(prune_dir)
    assert default and not any("condprune" in name for name in default)
    assert prune_cli.main(prune_args(saliency_run, prune_dir, "status", *conf, tiny, overrides=fast)) == UP_TO_DATE
    assert prune_cli.main(prune_args(saliency_run, prune_dir, "status", *conf, full, overrides=fast)) == STALE
    build(saliency_run, prune_dir, *conf, full, overrides=fast)
    after = markers(prune_dir)
    added = sorted(set(after) - set(default))
    assert [a for a in added if a.startswith("condprune_")] == sorted(
        f"{s}/{layout.adapted_name(c)}/.done" for c in CONDITIONS for s in ("condprune_hyper_hypo", "condprune_random.s1"))
    assert {k: after[k] for k in default} == default  # not one default system rebuilt
    for overlay in (full, tiny):
        assert prune_cli.main(prune_args(saliency_run, prune_dir, "status", *conf, overlay, overrides=fast)) == \
            UP_TO_DATE


def write_decode(set_dir: Path, errors: list[int], words: int = 10) -> None:
    """A scored decode dir: utterances u0.. of ``words`` reference words, all errors substitutions."""
    set_dir.mkdir(parents=True)
    lines = [f"u{i} #csid {words - e} {e} 0 0" for i, e in enumerate(errors)]
    (set_dir / "errs.txt").write_text("\n".join(lines) + "\n")
    total, n = sum(errors), words * len(errors)
    (set_dir / "wer").write_text(f"%WER {100 * total / n:.2f} [ {total} / {n}, 0 ins, 0 del, {total} sub ]\n")


def write_removed(folder: Path, neurons: list[tuple[int, int]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "removed.tsv").write_text("layer\tneuron\n" + "".join(f"{a}\t{b}\n" for a, b in neurons))
    (folder / "prune.json").write_text(json.dumps({"reference_set": folder.name.replace("adapted_", "ood_adapt_")
                                                   if folder.name.startswith("adapted_") else "pooled",
                                                   "removed": len(neurons)}))


def test_report_rows_and_table_from_hand_made_decodes(tmp_path):
    """Per condition the baseline makes 3 errors in 10 words per utterance; each condition's own
    hyper+hypo removal 1, random removal 5 (seed 1) or 4 (seed 2): removal per condition holds
    against both, on both conditions' utterances pooled."""
    decode = tmp_path / "exp" / "decode"
    n = 40
    for c in CONDITIONS:
        write_decode(decode / "baseline" / layout.ood_set(c), [3] * n)
        for system, errors, test_errors in (("condprune_hyper_hypo", 1, 2), ("condprune_random.s1", 5, 2),
                                            ("condprune_random.s2", 4, 3)):
            write_decode(decode / system / layout.adapted_name(c) / layout.ood_set(c), [errors] * n)
            write_decode(decode / system / layout.adapted_name(c) / layout.TEST, [test_errors] * n)
    write_decode(decode / "baseline" / layout.TEST, [1] * n)
    for t in (layout.TEST, *map(layout.ood_set, CONDITIONS)):  # stage 6's one reference set's hyper+hypo
        write_decode(decode / "prune_hyper_hypo" / t, [2] * n)
    prune = tmp_path / "exp" / "prune"
    write_removed(prune / "prune_hyper_hypo", [(0, 1), (0, 2), (1, 3)])
    write_removed(prune / "condprune_hyper_hypo" / "adapted_a", [(0, 1), (0, 2), (1, 3)])
    write_removed(prune / "condprune_hyper_hypo" / "adapted_b", [(0, 1), (0, 5), (1, 4)])
    doc, findings = build_report(tmp_path, "hand", 0, "test", ROOT)
    comps = {c["key"]: c for c in doc["comparisons"]}
    assert comps["condprune_vs_baseline"]["test_sets"] == ["ood_a", "ood_b"]
    assert comps["condprune_vs_baseline"]["difference"] == pytest.approx(-20.0)
    assert comps["condprune_vs_random"]["a"] == "condprune_random"
    assert comps["condprune_vs_random"]["difference"] == pytest.approx(10.0 - 45.0)
    assert comps["condprune_vs_one_reference"]["difference"] == pytest.approx(10.0 - 20.0)
    rows = {r["comparison"]: r for r in doc["claims"] if r["protocol"] == PER_CONDITION}
    assert rows["condprune_hyper_hypo vs baseline"]["verdict"] == HOLDS
    assert rows["condprune_hyper_hypo vs condprune_random"]["verdict"] == HOLDS
    assert rows["condprune_hyper_hypo vs condprune_random"]["seeds"] == "1 vs 2"
    assert "each condition's ood_adapt_<c>" in doc["selection"]["condition_pruning"]
    assert doc["systems"]["condprune_hyper_hypo"]["test.a"]["wer"] == 20.0
    text = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert "### Removal as unsupervised adaptation: neurons chosen per condition" in text
    # ood_a, ood_b, mean OOD, change against the baseline's 30.00, in-domain test after pruning (mean of test.a/.b)
    assert "| condprune_hyper_hypo | each ood_adapt_<c> | 10.00 | 10.00 | 10.00 | -66.7% | 20.00 |" in text
    random_row = ("| condprune_random | each ood_adapt_<c> | 45.00 ± 7.07 (2) | 45.00 ± 7.07 (2) | 45.00 | +50.0% "
                  "| 25.00 |")
    assert random_row in text
    assert "a: 3 (Jaccard 1.00 with pooled's); b: 3 (Jaccard 0.20 with pooled's)" in text
    # a run with the per-condition systems worse than the baseline
    for c in CONDITIONS:
        shutil.rmtree(decode / "condprune_hyper_hypo" / layout.adapted_name(c) / layout.ood_set(c))
        write_decode(decode / "condprune_hyper_hypo" / layout.adapted_name(c) / layout.ood_set(c), [6] * n)
    doc, _ = build_report(tmp_path, "hand", 0, "test", ROOT)
    rows = {r["comparison"]: r for r in doc["claims"] if r["protocol"] == PER_CONDITION}
    assert rows["condprune_hyper_hypo vs baseline"]["verdict"] == REFUTED


def test_retraining_keeps_one_model_per_condition(tiny_speech, tmp_path, capsys):  # noqa: F811
    """``conf/retrain.yaml`` can name the condprune_* systems: each condition's model is fine-tuned
    like every other system into ``<id>_retrain.s<k>/adapted_<c>/`` and decoded on ``ood_<c>`` and test."""
    baseline, prune, lang = corpus_layout(tiny_speech, tmp_path)
    for sid in ("condprune_hyper_hypo", "condprune_random.s1"):
        for c in CONDITIONS:
            (prune / sid / layout.adapted_name(c)).mkdir(parents=True)
            shutil.copy(prune / "prune_hyper_hypo" / "model.pt", prune / sid / layout.adapted_name(c) / "model.pt")
    conf = tmp_path / "retrain.yaml"
    conf.write_text("steps: 2\nmax_duration: 6.0\nlr_grid: [1.0e-3]\nseeds: [0]\n"
                    "systems: [condprune_hyper_hypo, condprune_random]\n")
    args = ["--config", str(conf), str(baseline), str(prune), str(tiny_speech.fbank_dir), str(lang),
            str(tmp_path / "retrain")]
    assert retrain.main(args) == 0 and retrain.main(["status", *args]) == UP_TO_DATE
    out = tmp_path / "retrain"
    lr = json.loads((layout.retrain_lr_dir(out) / "lr.json").read_text())
    for sid, pruned in (("condprune_hyper_hypo_retrain.s0", "condprune_hyper_hypo"),
                        ("condprune_random_retrain.s0", "condprune_random.s1")):
        for c in CONDITIONS:
            info = json.loads((out / sid / layout.adapted_name(c) / "retrain.json").read_text())
            assert (info["steps"], info["lr"], info["plan_sha256"]) == (2, lr["chosen"], lr["plan_sha256"])
            assert info["from"].endswith(f"{pruned}/{layout.adapted_name(c)}/model.pt")
    capsys.readouterr()
    assert retrain.main(["systems", "--sets", "test,ood_a,ood_b", *args]) == 0
    assert capsys.readouterr().out.split() == [
        "baseline_ft.s0:test,ood_a,ood_b", "condprune_hyper_hypo_retrain.s0/adapted_a:test,ood_a",
        "condprune_hyper_hypo_retrain.s0/adapted_b:test,ood_b", "condprune_random_retrain.s0/adapted_a:test,ood_a",
        "condprune_random_retrain.s0/adapted_b:test,ood_b"]
