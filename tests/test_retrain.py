"""Prune, then retrain (neurosel.train.finetune, python -m neurosel.bin.retrain) on the tiny speech
corpus: the control baseline_ft takes exactly the steps, data order and learning rate of the
retrained pruned systems; the learning rate is the grid's lowest dev loss; status answers the stage
protocol."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from fixtures_speech import TinySpeech, tiny_speech  # noqa: F401  (session fixture)
from neurosel.errors import NeuroselError
from neurosel.bin import retrain
from neurosel.data.batches import load_bpe
from neurosel.model import build_model, load_model, save_model
from neurosel.model.cnn import ModelConfig
from neurosel.prune.remove import remove_neurons
from neurosel.recipe import layout
from neurosel.train.finetune import batch_plan
from lhotse import load_manifest


def corpus_layout(data: TinySpeech, root: Path, random_seeds: tuple[int, ...] = (1,)) -> tuple[Path, Path, Path]:
    """(baseline.pt, prune dir, lang dir) beside the tiny corpus: a random model and pruned copies
    of it (hyper_hypo and each of ``random_seeds``; two neurons of each FC layer removed)."""
    vocab = load_bpe(data.lang_dir).get_piece_size()
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=vocab, conv_channels=[4, 4], fc_dims=[16, 16], fc_norm="none"))
    baseline = root / "baseline" / "model.pt"
    save_model(model, baseline)
    prune = root / "prune"
    for sid, idx in (("prune_hyper_hypo", [0, 1]), *((f"prune_random.s{r}", [5 + r - 1, 9]) for r in random_seeds)):
        pruned, _ = load_model(baseline)
        pruned, _, _ = remove_neurons(pruned, pruned.fc_spec(), {0: torch.tensor(idx), 1: torch.tensor(idx)})
        save_model(pruned, prune / sid / "model.pt")
    return baseline, prune, data.lang_dir


def test_batch_plan_is_fixed_by_its_seed_and_cycles_epochs(tiny_speech: TinySpeech) -> None:  # noqa: F811
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz")
    plan = batch_plan(cuts, 6.0, seed=3, steps=40)
    assert len(plan) == 40 and plan == batch_plan(cuts, 6.0, seed=3, steps=40)
    assert plan != batch_plan(cuts, 6.0, seed=4, steps=40)
    assert sum(map(len, plan)) > len(cuts)  # more steps than one epoch: the next epochs follow


def test_control_takes_the_steps_and_data_order_of_the_pruned_systems(tiny_speech: TinySpeech,  # noqa: F811
                                                                      tmp_path: Path) -> None:
    """Each retraining seed k fine-tunes baseline_ft.s<k> and every pruned system with seed k's
    batch plan and the one rate chosen on dev; prune_random's stage 6 seeds pair with the
    retraining seeds in order; the search's best run is baseline_ft of the first seed, exactly."""
    baseline, prune, lang = corpus_layout(tiny_speech, tmp_path, random_seeds=(1, 2, 10))
    conf = tmp_path / "retrain.yaml"
    conf.write_text("steps: 5\nmax_duration: 6.0\nlr_grid: [1.0e-4, 3.0e-2]\nseeds: [0, 7]\n"
                    "systems: [prune_hyper_hypo, prune_random]\n")
    args = ["--config", str(conf), str(baseline), str(prune), str(tiny_speech.fbank_dir), str(lang),
            str(tmp_path / "retrain")]
    assert retrain.main(["status", *args]) == 3
    with pytest.raises(NeuroselError, match="learning rate is not chosen yet"):
        retrain.main(["--job", "1", "--num-jobs", "2", *args])
    assert retrain.main(["lr", *args]) == 0
    assert retrain.main(["status", *args]) == 3  # the rate is chosen, the systems are not fine-tuned yet
    assert retrain.main(["--job", "2", "--num-jobs", "2", *args]) == 0
    assert retrain.main(["status", *args]) == 3  # job 1's half is still to do
    assert retrain.main(["--job", "1", "--num-jobs", "2", *args]) == 0
    assert retrain.main(["status", *args]) == 0
    out = tmp_path / "retrain"
    lr = json.loads((layout.retrain_lr_dir(out) / "lr.json").read_text())
    assert set(lr["grid_dev_loss"]) == {"0.0001", "0.03"}
    assert lr["chosen"] == float(min(lr["grid_dev_loss"], key=lr["grid_dev_loss"].get))
    names = [f"{s}.s{k}" for k in (0, 7) for s in (layout.BASELINE_FT, "prune_hyper_hypo_retrain",
                                                    "prune_random_retrain")]
    runs = {name: json.loads((out / name / "retrain.json").read_text()) for name in names}
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz")
    from neurosel.train.finetune import plan_digest
    for k in (0, 7):
        digest = plan_digest(batch_plan(cuts, 6.0, seed=k, steps=5))
        for name in names:
            if name.endswith(f".s{k}"):
                info = runs[name]
                assert (info["steps"], info["lr"], info["seed"], info["plan_sha256"]) == (5, lr["chosen"], k, digest)
    assert lr["plan_sha256"] == runs["baseline_ft.s0"]["plan_sha256"] != runs["baseline_ft.s7"]["plan_sha256"]
    # random selections pair with retraining seeds in order (seed order 1, 2, 10: not 1, 10, 2)
    assert runs["prune_random_retrain.s0"]["from"].endswith("prune_random.s1/model.pt")
    assert runs["prune_random_retrain.s7"]["from"].endswith("prune_random.s2/model.pt")
    assert not (out / "prune_random_retrain.s1").exists()
    # the retrained model keeps its pruned shape and moved away from the pruned weights
    before, _ = load_model(prune / "prune_hyper_hypo" / "model.pt")
    after, _ = load_model(out / "prune_hyper_hypo_retrain.s0" / "model.pt")
    b, a = before.state_dict(), after.state_dict()
    assert all(a[k].shape == b[k].shape for k in b) and any(not torch.equal(a[k], b[k]) for k in b)
    # baseline_ft of the first seed is the search's best run; of another seed, another model
    search, _ = load_model(layout.retrain_lr_dir(out) / "model.pt")
    first, _ = load_model(out / "baseline_ft.s0" / "model.pt")
    other, _ = load_model(out / "baseline_ft.s7" / "model.pt")
    assert all(torch.equal(v, first.state_dict()[k]) for k, v in search.state_dict().items())
    assert any(not torch.equal(v, other.state_dict()[k]) for k, v in search.state_dict().items())
    # adding a seed leaves the others up to date: only the new seed's three models are to do
    conf.write_text(conf.read_text().replace("seeds: [0, 7]", "seeds: [0, 7, 3]"))
    assert retrain.main(["status", *args]) == 3
    marks = {n: (out / n / ".done").stat().st_mtime_ns for n in names}
    assert retrain.main(args) == 0
    assert {n: (out / n / ".done").stat().st_mtime_ns for n in names} == marks
    assert json.loads((out / "prune_random_retrain.s3" / "retrain.json").read_text())["from"].endswith(
        "prune_random.s10/model.pt")


def test_a_system_stage_6_did_not_build_is_an_error(tiny_speech: TinySpeech, tmp_path: Path) -> None:  # noqa: F811
    baseline, prune, lang = corpus_layout(tiny_speech, tmp_path)
    conf = tmp_path / "retrain.yaml"
    conf.write_text("steps: 2\nsystems: [prune_taylor1]\n")
    with pytest.raises(NeuroselError, match="prune_taylor1"):
        retrain.main(["status", "--config", str(conf), str(baseline), str(prune), str(tiny_speech.fbank_dir),
                      str(lang), str(tmp_path / "retrain")])


def test_the_step_fine_tunes_then_decodes_nothing_without_test_sets(tiny_speech: TinySpeech,  # noqa: F811
                                                                    tmp_path: Path) -> None:
    import os
    import subprocess

    baseline, prune, lang = corpus_layout(tiny_speech, tmp_path)
    conf = tmp_path / "retrain.yaml"
    conf.write_text("steps: 2\nmax_duration: 6.0\nlr_grid: [1.0e-3]\nseeds: [0]\nsystems: [prune_hyper_hypo]\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PATH": f"{root / '.venv' / 'bin'}:{os.environ['PATH']}"}
    step = ["steps/retrain.sh", "--config", str(conf), "--device", "cpu", str(baseline), str(prune),
            str(tiny_speech.fbank_dir), str(lang), str(tmp_path / "retrain")]
    done = subprocess.run(step, cwd=root, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "retrain" / "prune_hyper_hypo_retrain.s0" / "model.pt").is_file()
    listed = subprocess.run(["python", "-m", "neurosel.bin.retrain", "systems", *step[1:3], *step[5:]], cwd=root,
                            capture_output=True, text=True, env=env)
    assert listed.stdout.split() == ["baseline_ft.s0", "prune_hyper_hypo_retrain.s0"]


@pytest.mark.parametrize("overlay", [None, "study_full.yaml", "study_full.yaml,tiny.yaml"])
def test_the_recipes_retrain_lists_name_only_systems_stage_6_builds(overlay: str | None) -> None:
    """conf/retrain.yaml (the default run's pruned systems), the full study's list (every pruned
    system, per-condition removal too) and the tiny study's: each names a system that stage 6
    builds under the same overlay; the full study retrains every pruned system at the same count."""
    from neurosel import config as C
    from neurosel.recipe.prune_stage import PruneStageConfig, plan_systems
    from neurosel.recipe.saliency_stage import SaliencyStageConfig
    from neurosel.train.finetune import FinetuneConfig

    conf = Path(__file__).resolve().parents[1] / "egs" / "synth" / "conf"
    over = ",".join(str(conf / o) for o in overlay.split(",")) if overlay else None
    prune_cfg = C.resolve(PruneStageConfig, conf / "prune.yaml", over, "prune")
    criteria = C.resolve(SaliencyStageConfig, conf / "saliency.yaml", over, "saliency").criteria
    built = {layout.parse_system_id(p.name)[0] for p in plan_systems(prune_cfg, criteria, ["noise"])}
    named = C.resolve(FinetuneConfig, conf / "retrain.yaml", over, "retrain").systems
    assert named and set(named) <= built
    if overlay == "study_full.yaml":
        same_count = {s for s in built if s.startswith(("prune_", "condprune_"))}
        assert set(named) == same_count
