"""Kill and resume on the tiny recipe, through ./run.sh as a user runs it.

The session's uninterrupted tiny run (``tiny_recipe`` in conftest.py) is the reference. Its work
dir moves aside and a copy takes its place, so that every path written inside manifests and stage
hashes stays the same. The copy loses part of the outputs of stages 1, 3, 5, 6 and 7 as if an
earlier run had never finished them: all features; the training after its last kept epoch-end
checkpoint; two reference sets, two pruned systems and two adaptation units (their decodes stay).
Then ``./run.sh`` with the reference's own arguments is
started again and again, and each run is SIGKILLed, together with every process it started (the
launcher's jobs run in sessions of their own), when a given file or log line shows it is inside
the next of those stages. A last run finishes. Checked:

- each killed run died inside the stage it was meant to, before that work's marker;
- after each kill, no artifact under its final name is half-written, and no marker claims work
  that is not complete;
- the run that finishes writes a ``results.json`` equal to the reference's;
- no marker, once written, is rewritten by a later run (finished stages are not redone), and the
  only new markers are those of the removed work;
- training resumed mid-epoch from the checkpoint the killed run left;
- every redone artifact (features, model, statistics, pruned and adapted models) has the bytes
  of the reference (same seed, same machine), which is why the stages after it are skipped.

Cost: features, the last steps of training, two saliency sets, two pruned and two adapted
systems, and six passes of ./run.sh over stages that are up to date.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import yaml
from fixtures_speech import tiny_speech  # noqa: F401  (session fixture)

from neurosel.io import is_temporary

ROOT = Path(__file__).resolve().parents[1]
STAGE_LINE = re.compile(r"run\.sh: stage (\d+):")


@dataclass
class Kill:
    """Where to kill: inside ``stage``, once ``reached(workdir, since_ns)`` is true for a run
    started at ``since_ns``. ``removed``: work dir paths deleted before the chain starts;
    ``markers``: the markers of the killed work, which must not exist after the kill."""

    stage: int
    point: str
    removed: list[str]
    reached: Callable[[Path, int], bool]
    markers: list[str]


@dataclass
class Run:
    """One ./run.sh of the chain: how it ended and what it left."""

    kill: Kill | None
    returncode: int
    stderr: str
    stages_started: list[int]
    markers_before: dict[str, tuple[int, bytes]]
    markers_after: dict[str, tuple[int, bytes]]
    half_written: list[str] = field(default_factory=list)


# --- process tree -------------------------------------------------------------------------------

def _children_by_parent() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def kill_tree(root: int) -> None:
    """SIGKILL ``root`` and every process it started. All are stopped first, so that none can
    start another in between; launcher jobs (``setsid``) are found by parent, not by group."""
    stopped: set[int] = set()
    while True:
        tree, todo, found = _children_by_parent(), [root], []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo += tree.get(pid, [])
        new = [p for p in found if p not in stopped]
        if not new:
            break
        for pid in new:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        stopped.update(new)
    for pid in stopped:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in stopped - {root}):
        assert time.monotonic() < deadline, "killed processes did not go away"
        time.sleep(0.05)


# --- what a work dir holds ------------------------------------------------------------------------

def markers(workdir: Path) -> dict[str, tuple[int, bytes]]:
    """Every stage marker: relative path -> (mtime_ns, content)."""
    return {str(p.relative_to(workdir)): (p.stat().st_mtime_ns, p.read_bytes()) for p in workdir.rglob(".done")}


def half_written(workdir: Path, since_ns: int) -> list[str]:
    """Files under their final names, changed since ``since_ns``, that do not read back whole:
    checkpoints (weights_only), JSON and markers, gzip manifests (and the features they point to),
    npz, YAML, PNG. Returns 'path: problem' strings."""
    from lhotse import CutSet, load_manifest

    problems = []
    for path in sorted(workdir.rglob("*")):
        if not path.is_file() or is_temporary(path) or path.stat().st_mtime_ns < since_ns:
            continue
        name = path.name
        try:
            if name.endswith(".pt"):
                torch.load(path, map_location="cpu", weights_only=True)
            elif name.endswith(".json") or name == ".done":
                json.loads(path.read_text())
            elif name.endswith(".jsonl.gz"):
                with gzip.open(path, "rt") as f:
                    for line in f:
                        json.loads(line)
                if name.startswith("cuts_") and "fbank" in path.parts:
                    for cut in load_manifest(path, CutSet):
                        cut.load_features()
            elif name.endswith(".npz"):
                with np.load(path, allow_pickle=False) as npz:
                    [npz[k] for k in npz.files]
            elif name.endswith(".yaml"):
                yaml.safe_load(path.read_text())
            elif name.endswith(".png"):
                data = path.read_bytes()
                assert data.startswith(b"\x89PNG") and data.endswith(b"IEND\xaeB`\x82"), "not a whole PNG"
        except Exception as e:  # any failure to read back is the finding
            problems.append(f"{path.relative_to(workdir)}: {type(e).__name__}: {str(e)[:200]}")
    return problems


# --- kill points ----------------------------------------------------------------------------------

def _log_has(pattern: str, glob: str) -> Callable[[Path, int], bool]:
    """A line matching ``pattern`` in a job log of this run (the launcher rewrites a job's log when
    the job starts; the logs of earlier runs, copied with the work dir, are older)."""
    regex = re.compile(pattern, re.S)

    def reached(workdir: Path, since_ns: int) -> bool:
        for log in workdir.glob(glob):
            try:
                if log.stat().st_mtime_ns >= since_ns and regex.search(log.read_text(errors="replace")):
                    return True
            except OSError:
                pass
        return False

    return reached


def _mid_epoch_checkpoint(workdir: Path, since_ns: int) -> bool:
    """A checkpoint at a step that no validation (epoch end) has logged yet."""
    exp = workdir / "exp" / "baseline"
    log = exp / "log" / "train.log"
    validated = set(re.findall(r"step (\d+): validation", log.read_text())) if log.is_file() else set()
    return any(p.name[len("checkpoint-"):-3] not in validated for p in exp.glob("checkpoint-*.pt"))


def _training_cut(workdir: Path) -> list[str]:
    """What a kill right after the newest kept epoch-end checkpoint that has a mid-epoch one after
    it would not have left: the later checkpoints, the model, the marker (and the best model if a
    later validation made it)."""
    exp = workdir / "exp" / "baseline"
    validated = {int(s) for s in re.findall(r"step (\d+): validation", (exp / "log" / "train.log").read_text())}
    steps = sorted(int(p.name[len("checkpoint-"):-3]) for p in exp.glob("checkpoint-*.pt"))
    cuts = [s for i, s in enumerate(steps) if s in validated and any(t not in validated for t in steps[i + 1:])]
    assert cuts, f"tiny training keeps no epoch-end checkpoint followed by a mid-epoch one: {steps}, epochs end {validated}"
    removed = [f"checkpoint-{s}.pt" for s in steps if s > cuts[-1]] + ["model.pt", "loss.png", ".done"]
    if torch.load(exp / "best.pt", weights_only=True)["step"] > cuts[-1]:
        removed.append("best.pt")
    return [f"exp/baseline/{name}" for name in removed]


def _feature_part(workdir: Path, since_ns: int) -> bool:
    return any((workdir / "data" / "fbank" / "parts").glob("cuts_*.jsonl.gz"))


def kill_points(workdir: Path) -> list[Kill]:
    """The kills of the chain, in stage order (each run is killed at the next one)."""
    conditions = sorted(p.name[len("cuts_ood_adapt_"):-len(".jsonl.gz")]
                        for p in (workdir / "data" / "fbank").glob("cuts_ood_adapt_*.jsonl.gz"))
    adapt = workdir / "exp" / "adapt"
    sel, blind = (sorted(adapt.glob(f"{system}.s*"))[0].name for system in ("adapt_selective_full", "adapt_all"))
    kills = [
        Kill(1, "a feature job has stored the first split of its share", ["data/fbank"], _feature_part,
             ["data/fbank/.done"]),
        Kill(3, "training, resumed from an epoch end, wrote a mid-epoch checkpoint", _training_cut(workdir),
             _mid_epoch_checkpoint, ["exp/baseline/.done"]),
        Kill(5, "the statistics pass over dev has started",
             ["exp/saliency/dev", f"exp/saliency/ood_adapt_{conditions[0]}"],
             _log_has(r"saliency on dev: running", "exp/saliency/log/work.*.log"), ["exp/saliency/dev/.done"]),
        Kill(6, "the hyper+hypo system is being built", ["exp/prune/prune_hyper_hypo", "exp/prune/prune_random.s1"],
             _log_has(r"prune prune_hyper_hypo: running", "exp/prune/log/work.*.log"),
             ["exp/prune/prune_hyper_hypo/.done"]),
        Kill(7, "selective+full adaptation has selected its neurons",
             [f"exp/adapt/{sel}/adapted_{conditions[0]}", f"exp/adapt/{blind}/adapted_{conditions[-1]}"],
             _log_has(rf"{re.escape(sel)}: \d+ neurons selected", "exp/adapt/log/adapt.*.log"),
             [f"exp/adapt/{sel}/adapted_{conditions[0]}/.done"]),
    ]
    return kills


def remove(path: Path) -> None:
    """Delete a file or a folder."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


# --- one stage, quickly: training killed for real, on the tiny speech fixture ------------------------

TINY_TRAIN = ["model.conv_channels=[4,4]", "model.fc_dims=[32,32]", "num_threads=1", "num_epochs=0",
              "max_duration=4", "checkpoint_every=25", "keep_last=2", "average_last=2", "warmup_steps=5",
              "lr_schedule=noam", "model.dropout=0.2", "spec_augment.enabled=true", "max_steps=120"]


def train_command(data, exp: Path, seed: int) -> list[str]:
    args = [sys.executable, "-m", "neurosel.bin.train", "--quiet", "--seed", str(seed)]
    for item in TINY_TRAIN:
        args += ["--set", item]
    return args + [str(data.fbank_dir), str(data.lang_dir), str(exp)]


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_bytes(tiny_speech, tmp_path: Path) -> None:
    """SIGKILL stage 3 right after a mid-epoch checkpoint, run the same command again: the model
    has the bytes of an uninterrupted run with the same seed; another seed gives other bytes."""
    from neurosel import config as C
    from neurosel.train import TrainConfig, train

    straight, killed, other = tmp_path / "straight", tmp_path / "killed", tmp_path / "other"
    for exp, seed in ((straight, 3), (other, 4)):  # what the command line does, in this process
        cfg = C.resolve(TrainConfig, overrides=TINY_TRAIN + [f"seed={seed}"])
        train(cfg, tiny_speech.fbank_dir / "cuts_train.jsonl.gz", tiny_speech.fbank_dir / "cuts_dev.jsonl.gz",
              tiny_speech.lang_dir, tiny_speech.fbank_dir / "cmvn.npz", exp, quiet=True)
    proc = subprocess.Popen(train_command(tiny_speech, killed, 3), cwd=ROOT, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    while not (killed / "checkpoint-50.pt").exists():
        assert proc.poll() is None, "training ended before its step-50 checkpoint"
        time.sleep(0.01)
    kill_tree(proc.pid)
    proc.wait()
    assert not (killed / "model.pt").exists() and not (killed / ".done").exists()
    progress = torch.load(killed / "checkpoint-50.pt", weights_only=True)["progress"]
    assert progress["epoch"] >= 1 and 50 not in [step for step, _, _ in progress["valid"]]  # mid-epoch
    subprocess.run(train_command(tiny_speech, killed, 3), check=True, capture_output=True, cwd=ROOT)
    assert "resuming from" in (killed / "log" / "train.log").read_text()
    assert (killed / "model.pt").read_bytes() == (straight / "model.pt").read_bytes()
    assert (other / "model.pt").read_bytes() != (straight / "model.pt").read_bytes()


# --- the chain ------------------------------------------------------------------------------------

def run_until(command: list[str], workdir: Path, kill: Kill | None, log_path: Path) -> Run:
    """Start ./run.sh; with ``kill``, SIGKILL its process tree once the kill point is reached."""
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    before = markers(workdir)
    start_ns = time.time_ns()
    with open(log_path, "w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
        if kill is not None:
            deadline = time.monotonic() + 1500
            while not kill.reached(workdir, start_ns):
                assert proc.poll() is None, f"./run.sh ended ({proc.returncode}) before stage {kill.stage}: " \
                                            f"{kill.point}; see {log_path}"
                assert time.monotonic() < deadline, f"stage {kill.stage}: {kill.point} never happened"
                time.sleep(0.05)
            kill_tree(proc.pid)
        returncode = proc.wait(timeout=1800)
    stderr = log_path.read_text()
    run = Run(kill, returncode, stderr, [int(s) for s in STAGE_LINE.findall(stderr)], before, markers(workdir))
    if kill is not None:
        run.half_written = half_written(workdir, start_ns)
    return run


@dataclass
class Chain:
    reference: Path  # the uninterrupted run's work dir
    resumed: Path  # the killed-and-resumed copy, after the chain
    runs: list[Run]
    kills: list[Kill]


@pytest.fixture(scope="module")
def chain(tiny_recipe, tmp_path_factory) -> Chain:
    workdir, first = tiny_recipe
    assert first.returncode == 0, first.stderr[-3000:]
    train_cfg = yaml.safe_load((ROOT / "egs/synth/conf/tiny.yaml").read_text()).get("train", {})
    assert not train_cfg.get("max_minutes"), (
        "egs/synth/conf/tiny.yaml stops training by wall-clock time (train.max_minutes), so a resumed "
        "run cannot end where the uninterrupted one did; bound it with max_steps or num_epochs")
    logs = tmp_path_factory.mktemp("resume_logs")
    kills = kill_points(workdir)
    reference = workdir.with_name(workdir.name + ".reference")
    resumed = workdir.with_name(workdir.name + ".resumed")
    os.rename(workdir, reference)
    runs: list[Run] = []
    try:
        shutil.copytree(reference, workdir, symlinks=True)
        for kill in kills:
            for rel in kill.removed:
                assert (workdir / rel).exists(), f"the reference run has no {rel}"
                remove(workdir / rel)
        for i, kill in enumerate(kills + [None]):
            runs.append(run_until(first.args, workdir, kill, logs / f"run{i}.log"))
    finally:
        if workdir.exists():
            os.rename(workdir, resumed)
        os.rename(reference, workdir)  # the session's run is back as it was
    return Chain(reference=workdir, resumed=resumed, runs=runs, kills=kills)


@pytest.mark.slow
@pytest.mark.e2e
def test_each_kill_lands_inside_its_stage_and_leaves_nothing_half_written(chain: Chain) -> None:
    for run in chain.runs[:-1]:
        kill = run.kill
        assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]
        assert run.stages_started[-1] == kill.stage, (kill.point, run.stages_started)
        for marker in kill.markers:
            assert marker not in run.markers_after, f"{marker} written although stage {kill.stage} was killed"
        assert run.half_written == [], (kill.point, run.half_written)


@pytest.mark.slow
@pytest.mark.e2e
def test_rerun_finishes_with_the_uninterrupted_results(chain: Chain) -> None:
    last = chain.runs[-1]
    assert last.returncode == 0, last.stderr[-3000:]
    resumed = json.loads((chain.resumed / "exp" / "results.json").read_text())
    reference = json.loads((chain.reference / "exp" / "results.json").read_text())
    assert resumed == reference


@pytest.mark.slow
@pytest.mark.e2e
def test_finished_stages_are_not_redone(chain: Chain) -> None:
    for i, run in enumerate(chain.runs):
        rewritten = [m for m, state in run.markers_before.items() if run.markers_after.get(m) != state]
        assert rewritten == [], f"run {i} redid finished work: {rewritten}"
    first, last = chain.runs[0].markers_before, chain.runs[-1].markers_after
    new = sorted(set(last) - set(first))
    removed = [rel for kill in chain.kills for rel in kill.removed]
    assert all(any(m == r or m.startswith(r + "/") for r in removed) for m in new), new
    assert set(first) <= set(last)
    reference = markers(chain.reference)
    assert set(last) == set(reference)  # the removed work got its markers back, and nothing more


@pytest.mark.slow
@pytest.mark.e2e
def test_training_resumed_mid_epoch(chain: Chain) -> None:
    exp = chain.resumed / "exp" / "baseline"
    log = (exp / "log" / "train.log").read_text()
    resumed = [int(s) for s in re.findall(r"resuming from \S*checkpoint-(\d+)\.pt", log)]
    validated = {int(s) for s in re.findall(r"step (\d+): validation", log)}
    # the chain's first resume starts from an epoch end; the run killed inside stage 3 left a
    # checkpoint at which no epoch had ended, and the next run resumed from it
    assert len(resumed) == 2 and resumed[0] in validated and resumed[1] > resumed[0], (resumed, validated)
    assert resumed[1] not in validated


@pytest.mark.slow
@pytest.mark.e2e
def test_redone_work_has_the_reference_bytes(chain: Chain) -> None:
    patterns = ["data/fbank/cuts_*.jsonl.gz", "data/fbank/cmvn.npz", "data/fbank/feats_*/*.lca",
                "exp/baseline/model.pt", "exp/baseline/best.pt",
                "exp/saliency/*/stats.pt", "exp/saliency/*/neurons.tsv",
                "exp/prune/*/model.pt", "exp/prune/*/removed.tsv", "exp/adapt/*/*/model.pt"]
    compared, differ = 0, []
    for pattern in patterns:
        for path in sorted(chain.reference.glob(pattern)):
            rel = path.relative_to(chain.reference)
            compared += 1
            if (chain.resumed / rel).read_bytes() != path.read_bytes():
                differ.append(str(rel))
    assert compared > 40 and differ == [], differ
