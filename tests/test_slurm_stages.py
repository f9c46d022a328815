"""Recipe stages on the real Slurm cluster (started by tools/slurm/cluster.sh when none answers):
stage 1 fanned out over two jobs of utils/slurm.pl writes the artifacts utils/run.pl writes, and
stage 3 trains with two processes started by srun."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from fixtures_speech import TinySpeech, tiny_speech  # noqa: F401  (session fixture)
from lhotse import load_manifest

from slurm_fixture import parse_log, slurm_cluster  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "egs" / "synth" / "conf"
# the jobs run `python -m neurosel...` in the checkout, as run.sh's steps do
ENV = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def stage1(cmd: str, data_dir: Path, fbank_dir: Path) -> None:
    out = subprocess.run(["steps/make_fbank.sh", "--cmd", cmd, "--nj", "2", "--config", str(CONF / "features.yaml"),
                          str(data_dir), str(fbank_dir)], capture_output=True, text=True, cwd=REPO, env=ENV,
                         timeout=300)
    assert out.returncode == 0, out.stderr


def outputs(fbank_dir: Path) -> dict[str, object]:
    """Every stage output by path: bytes, or for a manifest its cuts with the feature storage path
    relative to ``fbank_dir`` (the launchers' own files, logs and q/, left out)."""
    found: dict[str, object] = {}
    for path in sorted(fbank_dir.rglob("*")):
        name = str(path.relative_to(fbank_dir))
        if path.is_dir() or name.startswith(("log/", "q/")):
            continue
        if name.endswith(".jsonl.gz"):
            cuts = [json.loads(line) for line in gzip.open(path, "rt")]
            for cut in cuts:
                storage = Path(cut["features"]["storage_path"])
                cut["features"]["storage_path"] = str(storage.relative_to(fbank_dir))
            found[name] = cuts
        else:
            found[name] = path.read_bytes()
    return found


def test_stage1_on_slurm_equals_run_pl(tiny_speech: TinySpeech, tmp_path: Path, slurm_cluster) -> None:
    data = tmp_path / "data"
    for split, count in (("train", 6), ("dev", 3)):
        cuts = load_manifest(tiny_speech.fbank_dir / f"cuts_{split}.jsonl.gz").subset(first=count).drop_features()
        (data / "manifests").mkdir(parents=True, exist_ok=True)
        cuts.to_file(data / "manifests" / f"cuts_{split}.jsonl.gz")

    stage1("utils/run.pl", data, tmp_path / "local")
    stage1("utils/slurm.pl --mem 2G", data, tmp_path / "slurm")

    local, slurm = outputs(tmp_path / "local"), outputs(tmp_path / "slurm")
    assert sorted(slurm) == sorted(local)
    assert sum(name.endswith(".lca") for name in local) == 4  # 2 jobs x 2 splits
    for name in local:
        assert slurm[name] == local[name], name
    job_ids = set()
    for job in (1, 2):
        header = parse_log(tmp_path / "slurm" / "log" / f"features.{job}.log")
        assert header["code"] == "0"
        job_ids.add(header["host"].split("Slurm job ")[1].split("_")[0])
    assert len(job_ids) == 1  # one job array


def test_srun_starts_a_two_process_training(tiny_speech: TinySpeech, tmp_path: Path, slurm_cluster) -> None:
    args = ["--config", str(CONF / "train.yaml"), "--quiet"]
    for item in ("model.conv_channels=[4,4]", "model.fc_dims=[32,32]", "num_threads=1", "num_epochs=0",
                 "max_steps=2", "max_duration=3", "log_every=1"):
        args += ["--set", item]
    exp = tmp_path / "exp"
    out = subprocess.run(["srun", "--ntasks=2", "--cpus-per-task=1", "--mem-per-cpu=2G", "--kill-on-bad-exit=1",
                          sys.executable, "-m", "neurosel.bin.train", *args, str(tiny_speech.fbank_dir),
                          str(tiny_speech.lang_dir), str(exp)],
                         capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "process 0 of 2 (srun" in out.stderr and "process 1 of 2 (srun" in out.stderr
    assert "2 training processes share each batch" in (exp / "log" / "train.log").read_text()
    ckpt = torch.load(exp / "checkpoint-2.pt", weights_only=True)
    assert len(ckpt["rng_per_process"]) == 2 and (exp / "model.pt").is_file() and (exp / ".done").is_file()
