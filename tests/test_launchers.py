"""utils/run.pl and utils/queue.pl (against a stand-in `qsub` that runs the task array locally)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_fixture import parse_log

ROOT = Path(__file__).resolve().parents[1]
RUN_PL = str(ROOT / "utils" / "run.pl")
QUEUE_PL = str(ROOT / "utils" / "queue.pl")
# A task that prints fine-grained start and end times, to check what ran at the same time.
TIMED_SLEEP = ["echo", "start", "$(date", "+%s.%N)", ";", "sleep", "0.3", ";", "echo", "end",
               "$(date", "+%s.%N)"]


def launch(launcher: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([launcher, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=60)


def intervals(logs: list[Path]) -> list[tuple[float, float]]:
    """(start, end) of each TIMED_SLEEP log, sorted by start."""
    spans = []
    for log in logs:
        fields = dict(line.split() for line in parse_log(log)["output"].splitlines())
        spans.append((float(fields["start"]), float(fields["end"])))
    return sorted(spans)


def test_run_pl_array_writes_one_log_per_task(tmp_path):
    out = launch(RUN_PL, "--num-threads", "3", "JOB=1:4", "exp/log/hello.JOB.log",
                 "echo", "task JOB of 4", "|", "tr", "a-z", "A-Z", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    for task in range(1, 5):
        log = parse_log(tmp_path / f"exp/log/hello.{task}.log")
        assert log["command"] == f'echo "task {task} of 4" | tr a-z A-Z'
        assert log["output"] == f"TASK {task} OF 4\n"
        assert (log["code"], log["threads"]) == ("0", "3")


def test_run_pl_single_job_forms(tmp_path):
    out = launch(RUN_PL, "one.log", "echo", "a b", "'quoted'", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert parse_log(tmp_path / "one.log")["output"] == "a b quoted\n"
    out = launch(RUN_PL, "JOB=7", "log/seven.JOB.log", "echo", "JOB", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert parse_log(tmp_path / "log/seven.7.log")["output"] == "7\n"


def test_run_pl_accepts_the_cluster_options(tmp_path):
    # a cmd.sh line written for a cluster works locally: the options are accepted, not enforced
    out = launch(RUN_PL, "--mem", "4G", "--gpu", "0", "--time", "1:00:00", "--config", "conf/absent.conf",
                 "--num-threads", "2", "JOB=1:2", "log/c.JOB.log", "echo", "JOB", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [parse_log(tmp_path / f"log/c.{t}.log")["threads"] for t in (1, 2)] == ["2", "2"]


def test_run_pl_failure_reports_count_and_log(tmp_path):
    out = launch(RUN_PL, "JOB=1:4", "log/x.JOB.log", "echo", "JOB", ";", "[", "JOB", "!=", "3", "]",
                 "||", "exit", "5", cwd=tmp_path)
    assert out.returncode == 1
    assert "run.pl: 1 / 4 failed, log is in log/x.3.log" in out.stderr
    assert "log/x.3.log: exit code 5" in out.stderr
    assert parse_log(tmp_path / "log/x.3.log")["code"] == "5"
    assert [parse_log(tmp_path / f"log/x.{t}.log")["code"] for t in (1, 2, 4)] == ["0"] * 3


def test_run_pl_sigkill_is_reported_as_probably_out_of_memory(tmp_path):
    out = launch(RUN_PL, "--mem", "1G", "log/oom.log", "kill", "-9", "$$", cwd=tmp_path)
    assert out.returncode == 1
    assert "killed by SIGKILL (exit code 137): probably out of memory (asked for --mem 1G)" in out.stderr
    assert parse_log(tmp_path / "log/oom.log")["code"] == "137"


def test_run_pl_max_jobs_run_one_serialises(tmp_path):
    out = launch(RUN_PL, "--max-jobs-run", "1", "JOB=1:3", "log/s.JOB.log", *TIMED_SLEEP, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spans = intervals([tmp_path / f"log/s.{t}.log" for t in (1, 2, 3)])
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, spans


@pytest.mark.parametrize("args, message", [
    (["JOB=1:3", "log/one.log", "true"], "putting the output into one log file (log/one.log)"),
    (["JOB=0:3", "log/x.JOB.log", "true"], "invalid job range JOB=0:3"),
    (["JOB=3:1", "log/x.JOB.log", "true"], "invalid job range JOB=3:1"),
    (["--max-jobs-run", "0", "log/x.log", "true"], "--max-jobs-run must be a positive integer"),
    (["log/x.log"], "Usage: run.pl"),
])
def test_run_pl_rejects_malformed_command_lines(tmp_path, args, message):
    out = launch(RUN_PL, *args, cwd=tmp_path)
    assert out.returncode == 1
    assert message in out.stderr


def test_run_pl_sigterm_stops_tasks_and_still_writes_footers(tmp_path):
    proc = subprocess.Popen([RUN_PL, "--max-jobs-run", "2", "JOB=1:3", "log/t.JOB.log", "echo",
                             "up", ";", "sleep", "30"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    logs = [tmp_path / f"log/t.{t}.log" for t in (1, 2)]
    deadline = time.monotonic() + 20
    while not all(log.exists() and "up\n" in log.read_text() for log in logs):
        assert time.monotonic() < deadline, "the tasks did not start"
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert [parse_log(log)["code"] for log in logs] == ["143", "143"]
    assert "log/t.3.log: not run: the launcher was interrupted first" in stderr
    assert "run.pl: 3 / 3 failed, log is in log/t.1.log" in stderr


# A stand-in for Grid Engine's qsub: runs the tasks of "-t a:b" locally (at most -tc at once) with
# SGE_TASK_ID and JOB_ID set, output appended to -o, and waits for them (-sync y). Records its
# argument list in $FAKE_QSUB_RECORD, the tasks' exit codes in $FAKE_QSUB_RECORD.codes; does not start task $FAKE_QSUB_LOSE (a task the queue lost).
FAKE_QSUB = r'''#!/usr/bin/env python3
import os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_QSUB_RECORD"], "a") as f:
    f.write(" ".join(args) + "\n")
if os.environ.get("FAKE_QSUB_REFUSE"):
    sys.exit("Unable to run job: denied: host is not a submit host.")
first = last = 1
limit = None
output = "/dev/null"
i = 0
while i < len(args) - 1:
    flag = args[i]
    if flag in ("-cwd", "-V"):
        i += 1
        continue
    if flag == "-pe":
        i += 3
        continue
    value = args[i + 1]
    if flag == "-t":
        first, last = map(int, value.split(":"))
    elif flag == "-tc":
        limit = int(value)
    elif flag == "-o":
        output = value
    i += 2
script = args[-1]
print(f'Your job-array 77.{first}-{last}:1 ("{os.path.basename(script)}") has been submitted')
lose = os.environ.get("FAKE_QSUB_LOSE")
tasks = [t for t in range(first, last + 1) if str(t) != lose]
running, codes = [], {}
with open(output, "a") as out:
    for task in tasks:
        while limit and len(running) >= limit:
            done, code = running.pop(0)
            codes[done] = code.wait()
        env = dict(os.environ, SGE_TASK_ID=str(task), JOB_ID="77")
        running.append((task, subprocess.Popen(["bash", script], env=env, stdout=out, stderr=out)))
    for task, proc in running:
        codes[task] = proc.wait()
with open(os.environ["FAKE_QSUB_RECORD"] + ".codes", "a") as f:
    for task, code in sorted(codes.items()):
        f.write(f"{task} {code}\n")
        print(f"Job 77.{task} exited with exit code {code}.")
sys.exit(1 if any(codes.values()) else 0)
'''


@pytest.fixture
def fake_qsub(tmp_path):
    """PATH with the stand-in qsub first; returns (env, the file where it records its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    qsub = bin_dir / "qsub"
    qsub.write_text(FAKE_QSUB)
    qsub.chmod(0o755)
    record = tmp_path / "qsub.args"
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_QSUB_RECORD=str(record))
    return env, record


def test_queue_pl_submits_one_task_array_and_writes_logs(tmp_path, fake_qsub):
    env, record = fake_qsub
    out = launch(QUEUE_PL, "--mem", "2G", "--num-threads", "2", "--max-jobs-run", "1", "JOB=1:4",
                 "exp/log/q.JOB.log", *TIMED_SLEEP, cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    submitted = record.read_text().splitlines()
    assert len(submitted) == 1
    args = shlex.split(submitted[0])
    assert args[:5] == ["-V", "-cwd", "-S", "/bin/bash", "-j"]
    joined = " ".join(args)
    for expected in ("-l mem_free=2G,ram_free=2G", "-pe smp 2", "-t 1:4", "-tc 1", "-sync y",
                     f"-o {tmp_path}/exp/q/q.out"):
        assert expected in joined
    assert args[-1] == f"{tmp_path}/exp/q/q.sh"
    logs = [tmp_path / f"exp/log/q.{t}.log" for t in range(1, 5)]
    for task, log in enumerate(logs, start=1):
        fields = parse_log(log)
        assert fields["host"].endswith(f"(SGE job 77.{task})")
        assert (fields["code"], fields["threads"]) == ("0", "2")
    spans = intervals(logs)
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, spans
    assert not list((tmp_path / "exp/q").glob("*.done.*"))


def test_queue_pl_failure_and_lost_task(tmp_path, fake_qsub):
    env, record = fake_qsub
    env["FAKE_QSUB_LOSE"] = "4"
    out = launch(QUEUE_PL, "JOB=1:4", "log/f.JOB.log", "exit", "$((JOB", "==", "2", "?", "100", ":",
                 "0))", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "log/f.2.log: exit code 100" in out.stderr
    assert "log/f.4.log: did not finish: no exit status" in out.stderr
    assert "queue.pl: 2 / 4 failed, log is in log/f.2.log" in out.stderr
    assert parse_log(tmp_path / "log/f.2.log")["code"] == "100"
    # Grid Engine treats exit code 100 as "put the job in error state": the task exits 1 instead.
    codes = Path(f"{record}.codes").read_text()
    assert codes == "1 0\n2 1\n3 0\n"


def test_queue_pl_config_file_maps_options(tmp_path, fake_qsub):
    env, record = fake_qsub
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/queue.conf").write_text(
        "command qsub -q test.q   # the queue for tests\n"
        "option mem=* -l h_vmem=$0\n"
        "default gpu=0\n"
        "option gpu=0\n"
        "option gpu=* -l gpu=$0 -q gpu.q\n")
    out = launch(QUEUE_PL, "--mem", "1G", "--gpu", "1", "log/c.log", "true", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert record.read_text().startswith("-q test.q -l gpu=1 -q gpu.q -l h_vmem=1G -o ")
    out = launch(QUEUE_PL, "--num-threads", "2", "log/c.log", "true", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "option --num-threads 2 is not described in conf/queue.conf" in out.stderr


def test_queue_pl_reports_a_refused_submission(tmp_path, fake_qsub):
    env, _ = fake_qsub
    env["FAKE_QSUB_REFUSE"] = "1"
    out = launch(QUEUE_PL, "log/r.log", "true", cwd=tmp_path, env=env)
    assert out.returncode == 1
    assert "queue.pl: qsub failed (exit status 1): Unable to run job: denied" in out.stderr
    assert "queue.pl: the command was: qsub -V -cwd" in out.stderr


def test_training_jobs_run_with_jemalloc_unless_told_not_to() -> None:
    """steps/train.sh prefixes its job with ``allocator_env``: the process then has jemalloc (which
    utils/setup_env.sh installs) mapped, and none with NEUROSEL_ALLOCATOR=glibc."""
    script = (f". steps/common.sh; $(allocator_env) {shlex.quote(sys.executable)} "
              "-c \"print(open('/proc/self/maps').read())\"")
    on = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "libjemalloc" in on.stdout
    off = subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "NEUROSEL_ALLOCATOR": "glibc"})
    assert "libjemalloc" not in off.stdout and "libc.so" in off.stdout
    assert "$(allocator_env) python -m neurosel.bin.train" in (ROOT / "steps" / "train.sh").read_text()
