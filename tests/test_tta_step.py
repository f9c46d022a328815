"""steps/tta.sh and the tta command's status, subset and report actions on the tiny recipe run:
the step runs what its options name and then launches nothing while that is up to date, a broken
config or a missing set stops it before any job, and the report's table is the runs' files."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.recipe.tta import subset_fbank
from neurosel.recipe.tta_report import report_markdown
from neurosel.stage import MARKER

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}


def own_exp(workdir: Path, exp: Path) -> Path:
    """An exp dir of the test's own that reads the tiny run's baseline decodes and statistics."""
    (exp / "decode").mkdir(parents=True)
    (exp / "decode" / "baseline").symlink_to(workdir / "exp" / "decode" / "baseline")
    (exp / "saliency").symlink_to(workdir / "exp" / "saliency")
    return exp


def step(workdir: Path, exp: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["steps/tta.sh", "--config", "egs/synth/conf/tta.yaml", *options,
                           str(workdir / "exp" / "baseline" / "model.pt"), str(workdir / "data" / "fbank"),
                           str(workdir / "data" / "lang"), str(exp)], cwd=ROOT, env=ENV, capture_output=True,
                          text=True)


RUN = ("--overrides", "steps=1", "--device", "cpu", "--moves", "all,selective", "--modes", "episodic",
       "--targets", "ood_noise")


@pytest.fixture(scope="module")
def tta_run(tiny_recipe, tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    exp = own_exp(workdir, tmp_path_factory.mktemp("tta_step") / "exp")
    return workdir, exp, step(workdir, exp, *RUN)


def wer_of(path: Path) -> float:
    return float(path.read_text().split()[1])


def table_row(table: str, system: str) -> list[str]:
    row = next(line for line in table.splitlines() if line.startswith(f"| {system} |"))
    return [c.strip() for c in row.strip("|").split("|")]


def test_the_step_runs_its_runs_and_then_launches_nothing(tta_run):
    workdir, exp, first = tta_run
    assert first.returncode == 0, first.stderr[-2000:]
    logs = exp / "decode" / "log"
    assert (logs / "tta.1.log").is_file()
    for system in ("tta_all_episodic", "tta_selective_episodic_running"):
        assert (layout.decode_dir(exp, system) / "ood_noise" / "wer").is_file()
    for log in logs.iterdir():
        log.unlink()
    again = step(workdir, exp, *RUN)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "up to date" in again.stderr
    assert not list(logs.iterdir()), "an up-to-date step launched a job"
    assert again.stdout == first.stdout  # the same table, read from the same files


@pytest.mark.parametrize("options, message", [
    (("--overrides", "no_such_key=1", "--moves", "lhuc", "--targets", "ood_noise"), "no_such_key"),
    (("--moves", "lhuc", "--targets", "ood_nowhere"), "cuts_ood_nowhere.jsonl.gz: no such file"),
    (("--moves", "lhuc", "--modes", "sometimes", "--targets", "ood_noise"), "unknown mode 'sometimes'"),
    (("--moves", "lhuc", "--targets", "ood_noise", "--device", "gpu"), "--device gpu: expected auto, cpu, cuda"),
])
def test_a_broken_config_or_missing_set_stops_the_step_before_any_job(tiny_recipe, tmp_path, options, message):
    workdir, _ = tiny_recipe
    exp = own_exp(workdir, tmp_path / "exp")
    done = step(workdir, exp, *options)
    assert done.returncode == 1, done.stderr[-2000:]
    assert message in done.stderr and "no job launched" in done.stderr, done.stderr[-2000:]
    assert not (exp / "decode" / "log").exists() and not list((exp / "decode").glob("tta_*"))


def test_the_report_is_read_from_the_runs_files(tta_run):
    workdir, exp, first = tta_run
    table = report_markdown(exp)
    assert table == first.stdout
    decode = layout.decode_root(exp)
    all_wer = wer_of(decode / "tta_all_episodic" / "ood_noise" / "wer")
    selective_wer = wer_of(decode / "tta_selective_episodic_running" / "ood_noise" / "wer")
    assert table_row(table, "tta all") [:3] == ["tta all", "episodic", f"{all_wer:.2f}"]
    assert table_row(table, "tta selective (running)")[2] == f"{selective_wer:.2f}"
    # the unadapted model on the same utterances: the whole tiny ood_noise set here
    baseline = wer_of(workdir / "exp" / "decode" / "baseline" / "ood_noise" / "wer")
    assert table_row(table, "unadapted")[2] == f"{baseline:.2f}"
    cpu = json.loads((decode / "tta_all_episodic" / "ood_noise" / "tta.json").read_text())
    assert table_row(table, "tta all")[-1] == f"{cpu['adapt_cpu_per_audio_second']:.3f}"
    comparison = next(line for line in table.splitlines() if line.startswith("| all -> selective (running) |"))
    assert f"| {all_wer:.2f} | {selective_wer:.2f} | {selective_wer - all_wer:+.2f} |" in comparison


def test_a_run_killed_before_its_marker_is_not_reported(tta_run, tmp_path):
    workdir, exp, _ = tta_run
    (marker := layout.decode_root(exp) / "tta_all_episodic" / "ood_noise" / MARKER).unlink()
    try:
        assert "| tta all |" not in report_markdown(exp)
    finally:
        step(workdir, exp, *RUN)  # marks it again (its config and inputs did not change: no redo needed)
    assert marker.is_file()
    with pytest.raises(NeuroselError, match="no finished TTA run"):
        report_markdown(own_exp(workdir, tmp_path / "empty"))


def ids(path: Path) -> list[str]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line)["id"] for line in f]


def test_the_subset_is_fixed_by_its_seed(tiny_recipe, tmp_path):
    workdir, _ = tiny_recipe
    fbank = workdir / "data" / "fbank"
    names = subset_fbank(fbank, tmp_path / "a", 5, 0)
    assert "train" not in names and "ood_noise" in names
    subset_fbank(fbank, tmp_path / "b", 5, 0)
    subset_fbank(fbank, tmp_path / "c", 5, 1)
    subset_fbank(fbank, tmp_path / "all", 10 ** 6, 0)
    for name in names:
        kept = ids(layout.cuts_path(tmp_path / "a", name))
        assert len(kept) == 5 and set(kept) <= set(ids(layout.cuts_path(fbank, name)))
        assert kept == ids(layout.cuts_path(tmp_path / "b", name))
        assert sorted(ids(layout.cuts_path(tmp_path / "all", name))) == sorted(ids(layout.cuts_path(fbank, name)))
    assert any(ids(layout.cuts_path(tmp_path / "a", n)) != ids(layout.cuts_path(tmp_path / "c", n)) for n in names)
    assert (tmp_path / "a" / "cmvn.npz").read_bytes() == layout.cmvn_path(fbank).read_bytes()
    with pytest.raises(NeuroselError, match="per-set must be >= 1"):
        subset_fbank(fbank, tmp_path / "d", 0, 0)
