"""bench/: the parsing, selection, ratio and report code on real inputs (logs written by the real
launcher and by run.sh's own log function, Lhotse cuts). No timing is asserted."""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
from pathlib import Path

import pytest
from lhotse import CutSet
from lhotse.testing.dummies import dummy_cut

from bench import cluster, e2e, report, scaling, tta
from bench.inputs import find_workdir
from bench.common import Metric, Section, interleaved, run_child
from bench.inputs import Workdir, take_count, take_seconds

ROOT = Path(__file__).resolve().parents[1]


def run_pl(workdir: Path, log: str, command: str, jobs: int = 1) -> None:
    """Run ``command`` through utils/run.pl with its log under ``workdir``."""
    spec = [f"JOB=1:{jobs}"] if jobs > 1 else []
    subprocess.run(["utils/run.pl", *spec, str(workdir / log), "bash", "-c", command], cwd=ROOT)


def console_lines(*messages: str) -> str:
    """Lines in run.sh's own console format: its log() function, taken from run.sh and run."""
    log_fn = next(line for line in (ROOT / "run.sh").read_text().splitlines() if line.startswith("log()"))
    script = log_fn + "\n" + "\n".join(f"log {json.dumps(m)}" for m in messages)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stderr


def test_interleaved_alternates_order_and_skips_warmup():
    calls: list[str] = []
    timings = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=3, warmup=1)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert len(timings["a"].wall) == len(timings["b"].cpu) == 3


def test_child_peak_memory_is_the_child_own_not_the_parent(tmp_path):
    ballast = bytearray(300 * 2**20)
    ballast[::4096] = b"\1" * len(ballast[::4096])  # touched, so resident in this (the parent) process
    grow = "b = bytearray(60 * 2**20); b[::4096] = bytes(len(b[::4096])); print('{\"ok\": 1}')"
    run = run_child(["python3", "-c", grow], tmp_path / "child.log")
    assert run.returncode == 0 and run.output == {"ok": 1}
    assert 60 < run.peak_rss_mb < 200 and run.cpu_seconds > 0
    assert run_child(["bash", "-c", "exit 3"], tmp_path / "fail.log").returncode == 3
    del ballast


def test_step_logs_give_stage_spans_and_failures(tmp_path):
    run_pl(tmp_path, "data/fbank/log/features.JOB.log", "true", jobs=2)
    run_pl(tmp_path, "data/fbank/log/merge.log", "true")
    run_pl(tmp_path, "exp/baseline/log/job.log", "exit 3")
    run_pl(tmp_path, "exp/decode/adapt_all/log/decode.1.log", "true")
    times = e2e.parse_step_logs(tmp_path)
    assert [s.stage for s in times.stages] == [1, 3, 7]
    assert times.stages[0].problem == "" and times.stages[0].seconds >= 0
    assert times.stages[1].problem == "a job failed"
    assert not times.complete


def test_pseudo_label_decodes_in_the_baseline_dir_count_for_stage_7(tmp_path):
    run_pl(tmp_path, "exp/decode/baseline/log/tune.log", "echo --sets dev,test")
    run_pl(tmp_path, "exp/decode/baseline/log/decode.1.log", "echo --sets ood_adapt_noise,ood_adapt_reverb")
    times = e2e.parse_step_logs(tmp_path)
    assert [s.stage for s in times.stages] == [4, 7]


def test_console_log_stage_times_and_completeness():
    full = console_lines("recipe synth, work dir w, stages 0..100, seed 42, nj 2",
                         *(f"stage {n}: x" for n in range(9)), "done (stages 0..100)")
    times = e2e.parse_console("noise before\n" + full)
    assert [s.stage for s in times.stages] == list(range(9)) and times.complete
    assert times.total >= sum(s.seconds for s in times.stages) - 1e-9
    stopped = e2e.parse_console(full + console_lines("recipe synth, work dir w, stages 3..4", "stage 3: train"))
    assert [s.stage for s in stopped.stages] == [3] and stopped.stages[0].seconds is None
    assert not stopped.complete


def test_console_logs_of_parts_of_a_run_combine():
    first = console_lines("recipe synth, work dir w, stages 0..2", "stage 0: x", "stage 1: x", "stage 2: x",
                          "done (stages 0..2)")
    failed = console_lines("recipe synth, work dir w, stages 3..100", "stage 3: x", "stage 4: x")
    rest = console_lines("recipe synth, work dir w, stages 4..100", *(f"stage {n}: x" for n in range(4, 9)),
                         "done (stages 4..100)")
    runs = [r for text in (first, failed, rest) for r in e2e.console_runs(text)]
    combined = e2e.combine(runs)
    assert [s.stage for s in combined.stages] == list(range(9)) and combined.complete
    assert all(s.seconds is not None for s in combined.stages)
    assert not e2e.combine(runs[:2]).complete


def test_e2e_section_without_any_run_says_so(tmp_path):
    section = e2e.run(tmp_path, [], None, tmp_path)
    assert not section.metrics and "no run to read" in section.notes[0]


def test_take_seconds_and_count_copy_under_new_ids():
    cuts = CutSet.from_cuts([dummy_cut(i, duration=2.0) for i in range(3)])
    four = take_count(cuts, 7)
    assert len(four) == 7 and len(set(four.ids)) == 7
    five_s = take_seconds(cuts, 9.0)
    assert sum(c.duration for c in five_s) >= 9.0 and len(set(five_s.ids)) == len(five_s) == 5


def test_linear_fit_and_superlinearity():
    fixed, per_unit = scaling.linear_fit([1, 2, 4], [5.0, 7.0, 11.0])
    assert fixed == pytest.approx(3.0) and per_unit == pytest.approx(2.0)
    assert scaling.superlinearity([1, 2, 4], [5.0, 7.0, 11.0]) == pytest.approx(1.0)
    assert scaling.superlinearity([1, 2, 4], [5.0, 7.0, 15.0]) == pytest.approx(2.0)


def test_cluster_times_steps_from_the_train_log_and_jobs_from_launcher_logs(tmp_path):
    log = tmp_path / "train.log"
    handler = logging.FileHandler(log)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))  # the trainer's
    logger = logging.getLogger("neurosel.train")
    logger.addHandler(handler)
    old_level, logger.propagate = logger.level, False
    logger.setLevel(logging.INFO)
    try:
        logger.info("training x: 5 parameters")
        for step in (5, 10, 15):
            logger.info("epoch 0 step %d: loss 1.0000 lr 1.00e-03, 5.00 steps/s, 20000 frames/s", step)
        logger.info("epoch 0 step 15: validation loss 1.0 per token")
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(old_level)
        logger.propagate = True
    per_step, timed = cluster.seconds_per_step(log)
    assert timed == 10 and 0 <= per_step < 1
    run_pl(tmp_path, "dec/log/decode.JOB.log", "sleep 1", jobs=2)
    assert cluster.longest_job(tmp_path / "dec" / "log") >= 1


def test_workdir_of_another_checkout_runs_steps_from_a_linked_root(tmp_path):
    other = tmp_path / "other"
    fbank = other / "egs" / "x" / "data" / "fbank"
    (fbank / "feats_test").mkdir(parents=True)
    (fbank / "feats_test" / "1.lca").write_bytes(b"")
    with gzip.open(fbank / "cuts_test.jsonl.gz", "wt") as f:
        f.write(json.dumps({"id": "a", "features": {"storage_path": "egs/x/data/fbank/feats_test/1.lca"}}) + "\n")
    work = Workdir(other / "egs" / "x")
    assert work.storage_root() == other
    root = cluster.step_root(work, tmp_path / "scratch")
    assert (root / "egs/x/data/fbank/feats_test/1.lca").is_file() and (root / "steps" / "decode.sh").is_file()
    assert cluster.step_root(Workdir(tmp_path / "no_run"), tmp_path / "s2") == ROOT  # nothing to relocate


def test_results_merge_record_and_render(tmp_path):
    machine = {"cores": 2, "usable_cores": 2, "cpu_model": "x", "python": "3", "torch": "t", "nice": 19,
               "torch_threads": 2, "load_average": [1.0, 1.0, 1.0]}
    first = Section("decode", "Decoding", [Metric("rtf", 0.08, "", "<= 0.05", "decode.rtf")], load_end=[1, 1, 1])
    doc = report.merge_results(tmp_path / "results.json", [first], machine, "python -m bench.run --only decode")
    report.record(doc, ["decode"], tmp_path / "history" / "before.json", "before the fix")
    second = Section("features", "Features", [Metric("rt", 700.0, "x", ">= 300", "features.rt")], load_end=[1, 1, 1])
    doc = report.merge_results(tmp_path / "results.json", [second], machine, "python -m bench.run --only features")
    assert list(doc["sections"]) == ["features", "decode"]
    text = report.render(doc, report.load_history(tmp_path / "history"))
    assert "| Decoding | rtf | 0.0800 | <= 0.05 | **no** |" in text
    assert "| Features | rt | 700 x | >= 300 | yes |" in text
    assert "before the fix" in text and "## Before and after" in text


@pytest.mark.slow
@pytest.mark.e2e
def test_e2e_reads_the_tiny_recipe_run(tiny_recipe):
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = e2e.parse_console(proc.stderr)
    assert console.complete and [s.stage for s in console.stages] == list(range(9))
    steps = e2e.parse_step_logs(workdir)
    assert {1, 3, 4, 5}.issubset({s.stage for s in steps.stages})
    assert steps.total <= console.total + 5  # the step logs see less than the console does


def test_tta_section_on_the_tiny_recipe_run(tiny_recipe, tmp_path):
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    section = tta.run(find_workdir(workdir), tmp_path, quick=True)
    assert [m.key for m in section.metrics] == ["tta.selective_10", "tta.all_10"]
    assert all(m.value > 0 for m in section.metrics)
    rows = {row[0]: row for row in section.table}
    assert {f"TTA {k} steps, {m}" for k in (1, 5, 10) for m in ("all", "selective")} <= set(rows)
    assert all(rows[f"TTA 10 steps, {m}"][2].endswith("%") for m in ("all", "selective"))
