"""Test-time adaptation on the tiny recipe's model: a run decodes every utterance of its target,
writes a scored decode dir and its cost, selective TTA leaves the frozen weights alone, and a
killed run resumes to the same hypotheses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import neurosel.recipe.tta as tta
from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.recipe.tta import TtaRun, TtaStageConfig, run_tta, stream_items

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def paths(workdir: Path) -> dict[str, Path]:
    exp = workdir / "exp"
    return {"model_path": exp / "baseline" / "model.pt", "lang": workdir / "data" / "lang",
            "fbank": workdir / "data" / "fbank", "decode_yaml": exp / "decode" / "baseline" / "decode.yaml",
            "saliency": exp / "saliency"}


CFG = TtaStageConfig(steps=2, checkpoint_every=4, lr={m: 1e-3 for m in tta.MOVES})


def test_a_run_scores_its_target_and_resumes_after_a_kill(tiny_recipe, tmp_path, monkeypatch):
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = TtaRun("selective", "continual", "running", 1, "ood_noise")
    straight = run_tta(run, CFG, out_dir=tmp_path / "straight", **paths(workdir))
    n = len(stream_items(paths(workdir)["fbank"], "ood_noise", 0))
    assert straight["utterances"] == n and straight["wer"].startswith("%WER")
    assert (tmp_path / "straight" / "wer").read_text().strip() == straight["wer"]
    assert straight["adapt_cpu_per_audio_second"] > 0

    calls = {"n": 0}
    real = tta.decode_log_probs

    def killed_after_ten(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tta, "decode_log_probs", killed_after_ten)
    with pytest.raises(KeyboardInterrupt):
        run_tta(run, CFG, out_dir=tmp_path / "resumed", **paths(workdir))
    assert len((tmp_path / "resumed" / "progress.tsv").read_text().splitlines()) == 8  # last checkpoint
    monkeypatch.setattr(tta, "decode_log_probs", real)
    resumed = run_tta(run, CFG, out_dir=tmp_path / "resumed", **paths(workdir))
    assert resumed["wer"] == straight["wer"]
    assert (tmp_path / "resumed" / "hyp.txt").read_text() == (tmp_path / "straight" / "hyp.txt").read_text()


def test_the_stream_and_the_cli(tiny_recipe, tmp_path):
    workdir, _ = tiny_recipe
    fbank = paths(workdir)["fbank"]
    items = stream_items(fbank, "stream10", 0)
    sets = {s for s, _ in items}
    assert sets == {s for s in layout.test_sets(fbank) if layout.is_ood_set(s)}
    assert items == stream_items(fbank, "stream10", 0)
    with pytest.raises(NeuroselError, match="neither a set nor"):
        TtaRun("all", "episodic", target="streamX")
    exp = tmp_path / "exp"  # the run's own exp dir: the shared tiny run stays as it was
    (exp / "decode" / "baseline").mkdir(parents=True)
    shutil.copy(workdir / "exp" / "decode" / "baseline" / "decode.yaml", exp / "decode" / "baseline")
    (exp / "saliency").symlink_to(workdir / "exp" / "saliency")
    command = [sys.executable, "-m", "neurosel.bin.tta", "--set", "steps=1", "--moves", "lhuc", "--mode",
               "episodic", "--target", "ood_telephone", str(workdir / "exp" / "baseline" / "model.pt"),
               str(workdir / "data" / "lang"), str(fbank), str(exp)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((exp / "decode" / "tta_lhuc_episodic" / "ood_telephone" / "tta.json").read_text())
    assert summary["system"] == "tta_lhuc_episodic" and summary["config"]["steps"] == 1
    assert json.loads(done.stdout)["wer"] == summary["wer"]
