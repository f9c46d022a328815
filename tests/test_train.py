"""Stage 3 training on a tiny real speech corpus: the loss falls, a killed run resumes to the
same state as an uninterrupted one, the shipped configs overfit a few utterances, the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_speech import TinySpeech, tiny_speech  # noqa: F401  (session fixture)
from lhotse import CutSet, load_manifest
from lhotse.utils import LOG_EPSILON

from neurosel import config as C
from neurosel.bin.train import main as train_main
from neurosel.errors import NeuroselError
from neurosel.model import ModelConfig, build_model, load_model
from neurosel.data.batches import CtcDataset, load_bpe, load_cmvn, make_sampler
from neurosel.train import FeatureWarpConfig, TrainConfig, ctc_loss_sum, train
from neurosel.train.checkpoint import list_checkpoints
from neurosel.train.augment import TrainingAugment, stretch_time, warp_frequency

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "synth" / "conf"
TINY_MODEL = ["model.conv_channels=[4,4]", "model.fc_dims=[32,32]", "num_threads=1", "log_every=2"]


def tiny_config(*overrides: str, config_file: Path = CONF / "train.yaml") -> TrainConfig:
    return C.resolve(TrainConfig, config_file, overrides=TINY_MODEL + list(overrides))


def run(cfg: TrainConfig, data: TinySpeech, exp: Path, train_cuts: CutSet | None = None) -> Path:
    cuts = train_cuts if train_cuts is not None else data.fbank_dir / "cuts_train.jsonl.gz"
    return train(cfg, cuts, data.fbank_dir / "cuts_dev.jsonl.gz", data.lang_dir, data.fbank_dir / "cmvn.npz",
                 exp, quiet=True)


def test_training_lowers_the_loss_and_writes_its_outputs(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    cfg = tiny_config("max_steps=60", "num_epochs=0", "max_duration=6", "checkpoint_every=20", "keep_last=2",
                      "average_last=2", "lr=0.01", "warmup_steps=5", "lr_schedule=noam")
    model_path = run(cfg, tiny_speech, tmp_path)
    ckpt = torch.load(list_checkpoints(tmp_path)[-1], weights_only=True)
    losses = ckpt["progress"]["train_losses"]
    assert len(losses) == 60 and ckpt["progress"]["step"] == 60
    assert sum(losses[-8:]) / 8 < 0.6 * sum(losses[:8]) / 8
    valid = [loss for _, _, loss in ckpt["progress"]["valid"]]
    assert valid[-1] < 0.8 * valid[0]  # on the dev split's unseen voice too
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-56.pt", "checkpoint-60.pt"]
    for name in ("model.pt", "best.pt", "config.yaml", "log/train.log", "loss.png"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert "validation loss" in (tmp_path / "log" / "train.log").read_text()
    model, model_cfg = load_model(model_path)
    assert model_cfg.fc_norm == "none" and model_cfg.vocab_size == 40
    assert torch.load(model_path, weights_only=True)["stopped_by"] == "max_steps"
    assert load_model(list_checkpoints(tmp_path)[-1])[1].fc_norm == "batchnorm"  # resumable ones load too
    saved = C.load_yaml(tmp_path / "config.yaml")
    assert saved["model"]["fc_norm"] == "batchnorm" and saved["model"]["vocab_size"] == 40


def test_killed_run_resumes_to_the_uninterrupted_state(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    # dropout, SpecAugment (python + numpy RNG) and a shuffled sampler all have to resume exactly
    common = ["num_epochs=0", "max_duration=4", "checkpoint_every=3", "keep_last=3", "average_last=3",
              "lr_schedule=noam", "model.dropout=0.2", "spec_augment.enabled=true",
              "spec_augment.time_warp_factor=5", "feature_warp.enabled=true"]
    run(tiny_config("max_steps=11", *common), tiny_speech, tmp_path / "straight")

    killed = tmp_path / "killed"
    run(tiny_config("max_steps=8", *common), tiny_speech, killed)
    # a kill after step 8 without its checkpoint: the newest left is mid-epoch at step 6
    (killed / "checkpoint-8.pt").unlink()
    assert list_checkpoints(killed)[-1].name == "checkpoint-6.pt"
    run(tiny_config("max_steps=11", *common), tiny_speech, killed)

    a = torch.load(tmp_path / "straight" / "checkpoint-11.pt", weights_only=True)
    b = torch.load(killed / "checkpoint-11.pt", weights_only=True)
    assert a["progress"]["step"] == b["progress"]["step"] == 11
    assert a["progress"]["epoch"] == b["progress"]["epoch"] >= 1  # the run crossed an epoch boundary
    assert a["progress"]["train_losses"] == pytest.approx(b["progress"]["train_losses"], rel=1e-5)
    for name, tensor in a["model"].items():
        torch.testing.assert_close(b["model"][name], tensor, rtol=1e-5, atol=1e-6)
    for state_a, state_b in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        torch.testing.assert_close(state_b["exp_avg_sq"], state_a["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    assert a["sampler"] == b["sampler"]

    # the finished run is complete: the same command again only rewrites model.pt
    run(tiny_config("max_steps=11", *common), tiny_speech, killed)
    assert list_checkpoints(killed)[-1].name == "checkpoint-11.pt"


def test_a_model_cut_short_by_max_minutes_says_so(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    cfg = tiny_config("max_minutes=0.0001", "num_epochs=0", "max_steps=0", "max_duration=6", "lr_schedule=noam")
    saved = torch.load(run(cfg, tiny_speech, tmp_path), weights_only=True)
    assert saved["stopped_by"] == "max_minutes" and saved["step"] >= 1
    assert "cut short by max_minutes=0.0001" in (tmp_path / "log" / "train.log").read_text()


def test_empty_cut_set_is_an_error(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    with pytest.raises(NeuroselError, match="the train cut set is empty"):
        run(tiny_config("max_steps=2"), tiny_speech, tmp_path, train_cuts=CutSet.from_cuts([]))


def test_resume_refuses_a_changed_training_config(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    run(tiny_config("max_steps=2", "num_epochs=0", "max_duration=6"), tiny_speech, tmp_path)
    with pytest.raises(NeuroselError, match=r"checkpoint-2\.pt: trained with lr=0\.002"):
        run(tiny_config("max_steps=4", "num_epochs=0", "max_duration=6", "lr=0.01"), tiny_speech, tmp_path)


@pytest.mark.parametrize("config_file", ["train.yaml", "train_sigmoid.yaml"])
def test_shipped_configs_overfit_and_greedy_decode_a_training_utterance(
        tiny_speech: TinySpeech, tmp_path: Path, config_file: str) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz").subset(first=4)
    cfg = tiny_config("num_epochs=100", "max_minutes=0", "max_duration=100", "lr=0.02", "warmup_steps=5",
                      "weight_decay=0.0", "model.dropout=0.0", "feature_warp.enabled=false",
                      "model.conv_channels=[8,8]", "model.fc_dims=[64,64]",
                      config_file=CONF / config_file)
    model, _ = load_model(run(cfg, tiny_speech, tmp_path, train_cuts=cuts))
    sp = load_bpe(tiny_speech.lang_dir)
    batch = CtcDataset(sp, load_cmvn(tiny_speech.fbank_dir / "cmvn.npz"))[cuts]
    with torch.no_grad():
        log_probs, out_lens = model(batch.feats, batch.feat_lens)
    hyps = []
    for b in range(len(cuts)):
        tokens = torch.unique_consecutive(log_probs[b, :out_lens[b]].argmax(-1)).tolist()
        hyps.append(sp.decode([t for t in tokens if t != 0]))
    refs = [c.supervisions[0].text for c in cuts]
    assert sum(h == r for h, r in zip(hyps, refs)) >= 2, list(zip(hyps, refs))


def test_loss_weights_scale_each_utterance(tiny_speech: TinySpeech) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz").subset(first=3)
    batch = CtcDataset(load_bpe(tiny_speech.lang_dir), load_cmvn(tiny_speech.fbank_dir / "cmvn.npz"))[cuts]
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=40, fc_dims=[16])).eval()
    plain, tokens = ctc_loss_sum(model, batch)
    assert tokens == int(batch.target_lens.sum())
    batch.weights = torch.tensor([0.0, 0.0, 0.0])
    assert float(ctc_loss_sum(model, batch)[0]) == 0.0
    batch.weights = torch.tensor([2.0, 2.0, 2.0])
    assert float(ctc_loss_sum(model, batch)[0]) == pytest.approx(2 * float(plain), rel=1e-5)


def _tone_fbank(hz: float) -> torch.Tensor:
    """(T, 80) log-mel features of one second of a 16 kHz sine tone of ``hz`` Hz plus faint noise."""
    from lhotse import Fbank, FbankConfig
    t = np.arange(16000) / 16000
    audio = 0.5 * np.sin(2 * np.pi * hz * t) + 1e-4 * np.random.default_rng(0).standard_normal(16000)
    feats = Fbank(FbankConfig(sampling_rate=16000, num_filters=80)).extract(audio.astype(np.float32), 16000)
    return torch.from_numpy(feats)


def test_frequency_warp_turns_a_tone_into_a_higher_or_lower_one() -> None:
    low, high = _tone_fbank(1000.0), _tone_fbank(1150.0)
    assert torch.allclose(warp_frequency(low, 1.0), low, atol=1e-4)
    peak = int(high.mean(0).argmax())
    assert int(low.mean(0).argmax()) < peak - 1  # the two tones are bins apart
    up, down = warp_frequency(low, 1.15), warp_frequency(high, 1 / 1.15)
    assert abs(int(up.mean(0).argmax()) - peak) <= 1
    assert abs(int(down.mean(0).argmax()) - int(low.mean(0).argmax())) <= 1
    # the whole warped spectrum, not just its peak, is close to the other tone's
    assert float(torch.corrcoef(torch.stack([up.mean(0), high.mean(0)]))[0, 1]) > 0.95
    assert stretch_time(low, 1.25).shape == (round(low.shape[0] / 1.25), 80)
    assert stretch_time(low, 0.8).shape == (round(low.shape[0] / 0.8), 80)


def test_feature_warp_perturbs_each_training_utterance(tiny_speech: TinySpeech) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz").subset(first=4)
    sp, cmvn = load_bpe(tiny_speech.lang_dir), load_cmvn(tiny_speech.fbank_dir / "cmvn.npz")
    plain = CtcDataset(sp, cmvn)[cuts]
    off = CtcDataset(sp, cmvn, TrainingAugment(feature_warp=FeatureWarpConfig(enabled=False)))[cuts]
    torch.testing.assert_close(off.feats, plain.feats)
    torch.manual_seed(1)
    warped = CtcDataset(sp, cmvn, TrainingAugment(feature_warp=FeatureWarpConfig(enabled=True, freq_warp=0.2, time_stretch=0.2)))[cuts]
    assert torch.equal(warped.targets, plain.targets) and warped.cut_ids == plain.cut_ids
    assert not torch.equal(warped.feat_lens, plain.feat_lens)
    assert torch.all(warped.feat_lens >= (plain.feat_lens / 1.2).floor())
    assert torch.all(warped.feat_lens <= (plain.feat_lens / 0.8).ceil())
    assert warped.feats.shape[1] == int(warped.feat_lens.max())
    for i, n in enumerate(warped.feat_lens.tolist()):  # padded as Lhotse pads, then normalised
        if n < warped.feats.shape[1]:
            torch.testing.assert_close(warped.feats[i, n:], ((LOG_EPSILON - cmvn[0]) / cmvn[1]).expand(
                warped.feats.shape[1] - n, -1))
    torch.manual_seed(1)
    again = CtcDataset(sp, cmvn, TrainingAugment(feature_warp=FeatureWarpConfig(enabled=True, freq_warp=0.2, time_stretch=0.2)))[cuts]
    torch.testing.assert_close(again.feats, warped.feats)  # torch's RNG (saved in checkpoints) drives it


def test_sampler_state_resumes_mid_epoch(tiny_speech: TinySpeech) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz")
    sampler = make_sampler(cuts, max_duration=3, shuffle=True, seed=3)
    sampler.set_epoch(2)
    epoch = [[c.id for c in batch] for batch in sampler]
    assert len(epoch) > 3 and sorted(i for batch in epoch for i in batch) == sorted(cuts.ids)
    sampler.set_epoch(2)
    it = iter(sampler)
    assert [[c.id for c in next(it)] for _ in range(2)] == epoch[:2]
    restored = make_sampler(cuts, max_duration=3, shuffle=True, seed=3)
    restored.load_state_dict(sampler.state_dict())
    assert [[c.id for c in batch] for batch in restored] == epoch[2:]


def test_cli_trains_and_reports_bad_input(tiny_speech: TinySpeech, tmp_path: Path, capsys) -> None:
    args = ["--config", str(CONF / "train.yaml"), "--quiet", "--seed", "3"]
    for item in TINY_MODEL + ["max_steps=3", "num_epochs=0"]:
        args += ["--set", item]
    fbank, lang = str(tiny_speech.fbank_dir), str(tiny_speech.lang_dir)
    assert train_main(args + [fbank, lang, str(tmp_path / "exp")]) == 0
    assert (tmp_path / "exp" / "model.pt").is_file()
    assert C.load_yaml(tmp_path / "exp" / "config.yaml")["seed"] == 3
    with pytest.raises(NeuroselError, match=r"nowhere/cuts_train\.jsonl\.gz: no such file"):
        train_main(args + [str(tmp_path / "nowhere"), lang, str(tmp_path / "exp2")])
    with pytest.raises(NeuroselError, match="unknown key 'learning_rate'"):
        train_main(args + ["--set", "learning_rate=1", fbank, lang, str(tmp_path / "exp3")])


def test_a_changed_config_keeps_the_old_model_until_the_new_one_replaces_it(
        tiny_speech: TinySpeech, tmp_path: Path, monkeypatch) -> None:
    from neurosel.bin import train as train_cli

    args = ["--config", str(CONF / "train.yaml"), "--quiet"]
    for item in TINY_MODEL + ["max_steps=2", "num_epochs=0", "max_duration=6"]:
        args += ["--set", item]
    paths = [str(tiny_speech.fbank_dir), str(tiny_speech.lang_dir), str(tmp_path)]
    assert train_main(args + paths) == 0
    old = (tmp_path / "model.pt").read_bytes()

    def killed(*a, **k):  # the new run dies before it writes a model
        assert not list_checkpoints(tmp_path)  # the old run's checkpoints cannot be resumed: gone
        raise NeuroselError("killed")

    monkeypatch.setattr(train_cli, "train", killed)
    with pytest.raises(NeuroselError, match="killed"):
        train_main(args + ["--set", "lr=0.01"] + paths)
    assert (tmp_path / "model.pt").read_bytes() == old and not (tmp_path / ".done").exists()
    monkeypatch.undo()
    assert train_main(args + ["--set", "lr=0.01"] + paths) == 0
    new = torch.load(tmp_path / "model.pt", weights_only=True)
    assert new["train_config"]["lr"] == 0.01 and (tmp_path / ".done").is_file()
