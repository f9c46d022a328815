"""The weak-baseline warning: stage 4 says loudly when the baseline's dev WER is above
``weak_baseline_wer`` (conf/decode.yaml), and stage 8's RESULTS.md opens with the same warning; not
when the bound is above the WER. The tiny run's model (120 training steps) is weak."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from neurosel.decode.baseline_check import baseline_wer, weak_baseline_warning
from neurosel.errors import NeuroselError
from neurosel.report.build import build_report

ROOT = Path(__file__).resolve().parents[1]


def test_stage_4_and_results_md_warn_on_the_weak_tiny_model(tiny_recipe):
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-3000:]
    decode = workdir / "exp" / "decode" / "baseline"
    wer, cfg = baseline_wer(decode)
    assert wer == float((decode / "dev" / "wer").read_text().split()[1])
    assert wer > cfg.weak_baseline_wer == 40.0, "the tiny model is expected to be weak"
    stage4 = proc.stderr.split("run.sh: stage 4")[1].split("run.sh: stage 5")[0]
    flat = " ".join(stage4.split())
    assert f"WARNING: weak baseline: dev WER {wer:.2f}% is above weak_baseline_wer 40%" in flat
    assert "num_epochs" in flat and "max_minutes: 0" in flat and "--train-hours" in flat
    lines = (workdir / "exp" / "RESULTS.md").read_text().splitlines()
    assert lines[0].startswith("# Results")
    assert lines[2].startswith(f"> **WARNING: weak baseline: dev WER {wer:.2f}%")


def _with_bound(decode: Path, target: Path, bound: float) -> Path:
    """A copy of the baseline decode dir's decode.yaml and dev/wer with ``weak_baseline_wer: bound``."""
    (target / "dev").mkdir(parents=True)
    shutil.copy(decode / "dev" / "wer", target / "dev" / "wer")
    cfg = yaml.safe_load((decode / "decode.yaml").read_text())
    (target / "decode.yaml").write_text(yaml.safe_dump({**cfg, "weak_baseline_wer": bound}))
    return target


def test_no_warning_when_the_bound_is_above_the_wer(tiny_recipe, tmp_path):
    workdir, _ = tiny_recipe
    decode = workdir / "exp" / "decode" / "baseline"
    wer, _ = baseline_wer(decode)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    for bound, warned in ((wer + 0.5, False), (wer - 0.5, True)):
        d = _with_bound(decode, tmp_path / f"bound_{bound}", bound)
        assert (weak_baseline_warning(d) is not None) == warned
        done = subprocess.run([sys.executable, "-m", "neurosel.bin.decode", "check", "m.pt", "lang", "fbank", str(d)],
                              capture_output=True, text=True, env=env)
        assert done.returncode == 0
        assert ("WARNING: weak baseline" in done.stderr) == warned
    # stage 8 on the same run with the bound above its WER: RESULTS.md opens with the tables
    copy = tmp_path / "run"
    (copy / "exp" / "decode").mkdir(parents=True)
    for entry in (workdir / "exp").iterdir():
        if entry.name not in ("decode", "RESULTS.md", "results.json", "plots"):
            (copy / "exp" / entry.name).symlink_to(entry)
    (copy / "data").symlink_to(workdir / "data")
    for entry in (workdir / "exp" / "decode").iterdir():
        if entry.name != "baseline":
            (copy / "exp" / "decode" / entry.name).symlink_to(entry)
    shutil.copytree(decode, copy / "exp" / "decode" / "baseline")
    _with_bound(decode, tmp_path / "unused", wer + 0.5)
    shutil.copy(tmp_path / "unused" / "decode.yaml", copy / "exp" / "decode" / "baseline" / "decode.yaml")
    build_report(copy, "synth", 42, "./run.sh --corpus-size tiny", ROOT)
    text = (copy / "exp" / "RESULTS.md").read_text()
    assert "WARNING: weak baseline" not in text and text.startswith("# Results")


def test_check_needs_a_tuned_decode_dir(tmp_path):
    with pytest.raises(NeuroselError, match="decode.yaml: no such file"):
        weak_baseline_warning(tmp_path)
    assert weak_baseline_warning(tmp_path, missing_ok=True) is None
    (tmp_path / "decode.yaml").write_text("tune_set: dev\n")
    with pytest.raises(NeuroselError, match="dev/wer: no such file"):
        weak_baseline_warning(tmp_path)
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "wer").write_text("garbage\n")
    with pytest.raises(NeuroselError, match="no '%WER <number>' line"):
        weak_baseline_warning(tmp_path)
