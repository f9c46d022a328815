"""Multi-process training (neurosel.train.distributed): two gloo processes sharing each batch follow
the single-process loss curve and write the same checkpoints; torchrun starts the same training;
how the launchers' environments are read."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures_speech import TinySpeech, tiny_speech  # noqa: F401  (session fixture)
from lhotse import load_manifest

from neurosel import config as C
from neurosel.bin.train import main as train_main
from neurosel.errors import NeuroselError
from neurosel.data.batches import make_sampler
from neurosel.train import TrainConfig, train
from neurosel.train.checkpoint import list_checkpoints
from neurosel.train.distributed import Launch, ProcessGroup, launch_from_env

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "synth" / "conf"
# A small model on batches of at most 3 s (3-4 cuts of the tiny corpus; the 9th batch of epoch 0
# holds a single cut, so one process gets an empty share). No dropout and no feature perturbation:
# the processes' RNG streams differ from the single process's.
SETTINGS = ["model.conv_channels=[4,4]", "model.fc_dims=[32,32]", "model.dropout=0.0", "feature_warp.enabled=false",
            "num_threads=1",
            "num_epochs=0", "max_duration=3", "checkpoint_every=5", "keep_last=2", "average_last=2",
            "lr=0.01", "warmup_steps=3", "lr_schedule=noam", "log_every=1"]


def config(*overrides: str) -> TrainConfig:
    return C.resolve(TrainConfig, CONF / "train.yaml", overrides=SETTINGS + list(overrides))


def cli_args(data: TinySpeech, exp: Path, *overrides: str) -> list[str]:
    args = ["--config", str(CONF / "train.yaml"), "--quiet"]
    for item in SETTINGS + list(overrides):
        args += ["--set", item]
    return args + [str(data.fbank_dir), str(data.lang_dir), str(exp)]


def single(cfg: TrainConfig, data: TinySpeech, exp: Path) -> Path:
    return train(cfg, data.fbank_dir / "cuts_train.jsonl.gz", data.fbank_dir / "cuts_dev.jsonl.gz", data.lang_dir,
                 data.fbank_dir / "cmvn.npz", exp, quiet=True)


def test_two_processes_follow_the_single_process_run_and_resume_it(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz")
    sampler = make_sampler(cuts, 3, shuffle=True, seed=0)
    sampler.set_epoch(0)
    sizes = [len(batch) for batch in sampler]
    assert len(sizes) < 10 and min(sizes[:10]) == 1  # steps 6-10 cross an epoch and hold a 1-cut batch

    single(config("max_steps=10"), tiny_speech, tmp_path / "one")
    # the same run, its first 5 steps by one process and the other 5 by two processes
    single(config("max_steps=5"), tiny_speech, tmp_path / "two")
    assert train_main(["--num-procs", "2"] + cli_args(tiny_speech, tmp_path / "two", "max_steps=10")) == 0

    one = torch.load(tmp_path / "one" / "checkpoint-10.pt", weights_only=True)
    two = torch.load(tmp_path / "two" / "checkpoint-10.pt", weights_only=True)
    assert two["progress"]["step"] == 10 and two["progress"]["epoch"] == one["progress"]["epoch"] == 1
    assert two["progress"]["train_losses"] == pytest.approx(one["progress"]["train_losses"], rel=1e-4)
    valid_one = {step: loss for step, _, loss in one["progress"]["valid"]}  # steps 9 (epoch end) and 10
    valid_two = {step: loss for step, _, loss in two["progress"]["valid"] if step > 5}
    assert valid_two == pytest.approx(valid_one, rel=1e-2) and len(valid_one) == 2
    # weights ahead of BatchNorm get no gradient through it, only float noise that Adam magnifies:
    # the linears' biases and BatchNorm means drift apart, everything else agrees closely
    for name in ("conv.0.0.weight", "fc.0.weight", "fc.1.weight", "fc_norm.1.weight", "output.weight"):
        torch.testing.assert_close(two["model"][name], one["model"][name], rtol=1e-3, atol=1e-4)
    assert set(two) - set(one) == {"rng_per_process"} and len(two["rng_per_process"]) == 2
    assert two["sampler"] == one["sampler"]

    # rank 0 alone wrote the outputs, and the run is a finished stage
    exp = tmp_path / "two"
    assert [p.name for p in list_checkpoints(exp)] == ["checkpoint-9.pt", "checkpoint-10.pt"]
    assert (exp / "model.pt").is_file() and (exp / ".done").is_file()
    log = (exp / "log" / "train.log").read_text()
    assert "2 training processes share each batch" in log and log.count("epoch 0 step 7:") == 1
    assert len(list((exp / "tensorboard").glob("events.out.tfevents.*"))) == 2  # the 1- and the 2-process run
    assert train_main(cli_args(tiny_speech, exp, "max_steps=10")) == 0  # one process: up to date, skipped
    assert list_checkpoints(exp)[-1].name == "checkpoint-10.pt"


def test_a_failing_process_fails_the_run_with_its_message(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    # the launcher checks the transcripts against bpe.model itself; the CMVN statistics are read
    # first inside the training processes
    bad = tmp_path / "fbank"
    bad.mkdir()
    for name in ("cuts_train.jsonl.gz", "cuts_dev.jsonl.gz"):
        shutil.copy(tiny_speech.fbank_dir / name, bad / name)
    (bad / "cmvn.npz").write_text("not CMVN statistics")
    args = cli_args(tiny_speech, tmp_path / "exp", "max_steps=2")
    args[-3] = str(bad)
    with pytest.raises(NeuroselError, match=r"training process 0 of 2: .*fbank/cmvn\.npz"):
        train_main(["--num-procs", "2"] + args)


def test_torchrun_starts_a_two_process_run(tiny_speech: TinySpeech, tmp_path: Path) -> None:
    torchrun = Path(sys.executable).parent / "torchrun"
    out = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "neurosel.bin.train",
                          *cli_args(tiny_speech, tmp_path / "exp", "max_steps=2")],
                         capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "2 training processes share each batch" in (tmp_path / "exp" / "log" / "train.log").read_text()
    ckpt = torch.load(tmp_path / "exp" / "checkpoint-2.pt", weights_only=True)
    assert len(ckpt["rng_per_process"]) == 2 and (tmp_path / "exp" / ".done").is_file()


@pytest.mark.parametrize("env, expected", [
    ({}, None),
    ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"},
     Launch(1, 4, 1, "n1", 29500, "torchrun")),
    # an srun step of 2 tasks; the port comes from job 17, step 3
    ({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "17",
      "SLURM_STEP_ID": "3", "SLURM_STEP_NODELIST": "gpu7,gpu8"}, Launch(1, 2, 0, "gpu7", 20275, "srun")),
    # a Slurm batch script (slurm.pl's job) or a 1-task step: no launcher, num_procs decides
    ({"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_JOB_ID": "17"}, None),
    ({"SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0", "SLURM_JOB_ID": "17", "SLURM_STEP_ID": "0"}, None),
])
def test_launch_from_env(env: dict[str, str], expected: Launch | None) -> None:
    assert launch_from_env(env) == expected


def test_launch_from_env_errors() -> None:
    with pytest.raises(NeuroselError, match="MASTER_ADDR or MASTER_PORT is not"):
        launch_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(NeuroselError, match="SLURM_PROCID='x': expected an integer"):
        launch_from_env({"SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "x", "SLURM_LOCALID": "0",
                         "SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0", "SLURM_STEP_NODELIST": "a"})


def test_shares_of_a_batch_cover_it_once(tiny_speech: TinySpeech) -> None:
    cuts = load_manifest(tiny_speech.fbank_dir / "cuts_train.jsonl.gz").subset(first=7)
    shares = [ProcessGroup(rank, 3).shard(cuts) for rank in range(3)]
    assert sorted(c.id for share in shares for c in share) == sorted(cuts.ids)
    assert [len(share) for share in shares] == [3, 2, 2]
    assert len(ProcessGroup(3, 8).shard(cuts.subset(first=2))) == 0  # fewer cuts than processes
    assert ProcessGroup().shard(cuts) is cuts
