"""``--device`` through every stage that runs the model (decode, saliency statistics, pruning and
its speed test, adaptation): parsed by each program and passed by each step and run.sh; naming
CUDA where there is none stops with one line naming the problem; the CPU keeps today's results
(the device is in no marker, so a run made with ``auto`` is up to date with ``cpu``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from neurosel.inference import log_posteriors, model_device
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.data.batches import load_cmvn
from neurosel.decode.run import load_cuts

ROOT = Path(__file__).resolve().parents[1]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without a CUDA device")
NO_CUDA_LINE = "--device cuda: PyTorch sees no CUDA device here"


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}


PROGRAMS = {
    "decode": ["status", "--sets", "dev", "m.pt", "lang", "fbank", "out"],
    "saliency": ["status", "m.pt", "fbank", "lang", "out"],
    "prune": ["status", "m.pt", "saliency", "fbank", "out"],
    "adapt": ["status", "m.pt", "lang", "fbank", "exp"],
}


@NO_CUDA
@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_cuda_without_cuda_is_one_line_error(program, tmp_path):
    done = subprocess.run([sys.executable, "-m", f"neurosel.bin.{program}", *PROGRAMS[program][:1], "--device", "cuda",
                           *PROGRAMS[program][1:]], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [f"{program}: error: {NO_CUDA_LINE} (torch {torch.__version__}); "
                                        "use --device cpu or auto"]
    bad = subprocess.run([sys.executable, "-m", f"neurosel.bin.{program}", *PROGRAMS[program][:1], "--device", "gpu",
                          *PROGRAMS[program][1:]], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1 and "--device gpu: expected auto, cpu, cuda or cuda:<index>" in bad.stderr
    assert not any(tmp_path.iterdir())  # nothing written


def test_forward_on_the_cpu_returns_the_same_tensors(tiny_recipe):
    workdir, _ = tiny_recipe
    model = load_model(workdir / "exp" / "baseline" / "model.pt")[0]
    assert model_device(model) == torch.device("cpu")
    fbank = workdir / "data" / "fbank"
    cuts = load_cuts(fbank, "dev").subset(first=4)
    cmvn = load_cmvn(layout.cmvn_path(fbank))
    for batch, log_probs, out_lens in log_posteriors(model, cuts, cmvn):
        assert batch.to(torch.device("cpu")) is batch
        with torch.inference_mode():
            expected, lens = model(batch.feats, batch.feat_lens)
        assert torch.equal(log_probs, expected) and torch.equal(out_lens, lens)
        assert log_probs.device.type == "cpu"


@NO_CUDA
def test_steps_and_run_sh_pass_the_device(tiny_recipe, tmp_path):
    workdir, _ = tiny_recipe
    exp, data = workdir / "exp", workdir / "data"
    model = exp / "baseline" / "model.pt"
    # every step asks its status with the device: up to date with cpu (the device is in no marker) ...
    steps = {
        "decode": ["--tune", "true", "--sets", "dev,test", model, data / "fbank", data / "lang", exp / "decode" / "baseline"],
        "saliency": [model, data / "fbank", data / "lang", exp / "saliency"],
        "prune": [model, data / "fbank", data / "lang", exp / "saliency", exp / "prune"],
        "adapt": [model, data / "fbank", data / "lang", exp],
    }
    for step, args in steps.items():
        config = ["--config", str(ROOT / "egs" / "synth" / "conf" / f"{step}.yaml"),
                  "--overlay", str(ROOT / "egs" / "synth" / "conf" / "tiny.yaml")]
        if step == "prune":
            config += ["--test-sets", ",".join(layout.test_sets(data / "fbank")),  # as run.sh passes them
                       "--decode-config", str(exp / "decode" / "baseline" / "decode.yaml")]
        cpu = subprocess.run([f"steps/{step}.sh", "--device", "cpu", *config, *map(str, args)], cwd=ROOT,
                             capture_output=True, text=True, env=env())
        assert cpu.returncode == 0, cpu.stderr[-2000:]
        assert "log in" not in cpu.stderr, f"{step}: a job was launched although up to date: {cpu.stderr[-3000:]}"
        # ... and stops at it, naming the problem, with cuda on a machine without it
        cuda = subprocess.run([f"steps/{step}.sh", "--device", "cuda", *config, *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, env=env())
        assert cuda.returncode == 1, cuda.stderr[-2000:]
        assert NO_CUDA_LINE in cuda.stderr and "no job launched" in cuda.stderr
    done = subprocess.run(["./run.sh", "--corpus-size", "tiny", "--workdir", str(workdir), "--stage", "4",
                           "--stop-stage", "4", "--device", "cuda", "--quiet", "true"], cwd=ROOT,
                          capture_output=True, text=True, env=env())
    assert done.returncode == 1 and NO_CUDA_LINE in done.stderr


def test_prune_says_where_its_speed_was_measured(tiny_recipe):
    workdir, _ = tiny_recipe
    infos = [json.loads(p.read_text()) for p in sorted((workdir / "exp" / "prune").glob("*/prune.json"))]
    assert infos
    for info in infos:
        assert info["speed"]["device"] == "cpu" and info["speed"]["clock"] == "process CPU"
        assert info["speed"]["seconds"] > 0
    table = subprocess.run([sys.executable, "-m", "neurosel.bin.prune", "table", "--config",
                            str(ROOT / "egs" / "synth" / "conf" / "prune.yaml"), "--overlay",
                            str(ROOT / "egs" / "synth" / "conf" / "tiny.yaml"), str(workdir / "exp" / "baseline" / "model.pt"),
                            str(workdir / "exp" / "saliency"), str(workdir / "data" / "fbank"),
                            str(workdir / "exp" / "prune")], capture_output=True, text=True, env=env())
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[1] == "speed measured on cpu (process CPU time)"
