"""utils/slurm.pl against a real Slurm cluster (started by tools/slurm/cluster.sh when none answers)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from slurm_fixture import CLUSTER_SCRIPT, parse_log, slurm_cluster  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]
SLURM_PL = str(ROOT / "utils" / "slurm.pl")


def slurm_pl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([SLURM_PL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def job_id_of(log: Path) -> str:
    """The Slurm array job id from a log header: '# Running on host (Slurm job 12_3)' -> '12'."""
    match = re.search(r"^# Running on .* \(Slurm job (\d+)_\d+\)$", log.read_text(), re.MULTILINE)
    assert match, log.read_text()
    return match.group(1)


def start_and_wait_for_first_task(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    """Starts slurm.pl with two long tasks, one at a time; returns once task 1 runs."""
    proc = subprocess.Popen([SLURM_PL, "--max-jobs-run", "1", "JOB=1:2", f"log/{name}.JOB.log",
                             "echo", "up", ";", "sleep", "60"], cwd=tmp_path,
                            stderr=subprocess.PIPE, text=True)
    log = tmp_path / f"log/{name}.1.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and "\nup\n" in log.read_text()):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "task 1 did not start"
        time.sleep(0.05)
    return proc, log


def test_array_of_four_writes_four_logs(tmp_path, slurm_cluster):
    out = slurm_pl("--num-threads", "1", "JOB=1:4", "exp/log/hello.JOB.log", "echo", "task JOB",
                   "|", "tr", "a-z", "A-Z", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    job_ids = set()
    for task in range(1, 5):
        log = tmp_path / f"exp/log/hello.{task}.log"
        fields = parse_log(log)
        assert fields["command"] == f'echo "task {task}" | tr a-z A-Z'
        assert fields["output"] == f"TASK {task}\n"
        assert fields["code"] == "0"
        assert fields["host"].endswith(f"_{task})")
        job_ids.add(job_id_of(log))
    assert len(job_ids) == 1, "the tasks were not one job array"
    script = (tmp_path / "exp/q/hello.sh").read_text()
    assert "--array=1-4 " in script and " -p shared " in script
    assert not list((tmp_path / "exp/q").glob("*.done.*"))


def test_failing_task_gives_its_exit_code(tmp_path, slurm_cluster):
    out = slurm_pl("JOB=1:4", "log/f.JOB.log", "[", "JOB", "!=", "3", "]", "||", "exit", "3",
                   cwd=tmp_path)
    assert out.returncode == 1
    assert "slurm.pl: log/f.3.log: exit code 3" in out.stderr
    assert "slurm.pl: 1 / 4 failed, log is in log/f.3.log" in out.stderr
    assert [parse_log(tmp_path / f"log/f.{t}.log")["code"] for t in range(1, 5)] == ["0", "0", "3", "0"]


def test_max_jobs_run_one_serialises(tmp_path, slurm_cluster):
    out = slurm_pl("--max-jobs-run", "1", "JOB=1:3", "log/s.JOB.log", "echo", "start", "$(date",
                   "+%s.%N)", ";", "sleep", "0.3", ";", "echo", "end", "$(date", "+%s.%N)", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    spans = []
    for task in (1, 2, 3):
        fields = dict(line.split() for line in parse_log(tmp_path / f"log/s.{task}.log")["output"].splitlines())
        spans.append((float(fields["start"]), float(fields["end"])))
    spans.sort()
    for (_, end), (next_start, _) in zip(spans, spans[1:]):
        assert end <= next_start, spans
    assert "--array=1-3%1 " in (tmp_path / "q/s.sh").read_text()


def test_out_of_memory_is_reported(tmp_path, slurm_cluster):
    out = slurm_pl("--mem", "100M", "log/oom.log", "python3", "-c", "x = bytearray(400 * 2**20)",
                   cwd=tmp_path)
    assert out.returncode == 1
    assert "log/oom.log: out of memory" in out.stderr and "OUT_OF_MEMORY" in out.stderr
    assert "asked for --mem 100M" in out.stderr
    assert parse_log(tmp_path / "log/oom.log")["code"] == "137"


def test_scancel_is_reported_as_cancelled(tmp_path, slurm_cluster):
    proc, log = start_and_wait_for_first_task(tmp_path, "cancelled")
    subprocess.run(["scancel", job_id_of(log)], check=True)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "log/cancelled.1.log: cancelled (state CANCELLED); exit code 143" in stderr
    assert "log/cancelled.2.log: cancelled (state CANCELLED); no exit status" in stderr
    assert "slurm.pl: 2 / 2 failed, log is in log/cancelled.1.log" in stderr
    assert parse_log(log)["code"] == "143"


def test_interrupting_slurm_pl_cancels_the_array(tmp_path, slurm_cluster):
    proc, log = start_and_wait_for_first_task(tmp_path, "interrupted")
    job_id = job_id_of(log)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"slurm.pl: interrupted; cancelling Slurm job {job_id}" in stderr
    assert "slurm.pl: 2 / 2 failed" in stderr
    alive = subprocess.run(["squeue", "-h", "-j", job_id, "-t", "PD,R,CG,CF,S"],
                           capture_output=True, text=True)
    assert alive.stdout.strip() == ""


def test_rejected_submission_shows_sbatch_message(tmp_path, slurm_cluster):
    # No partition "gpu" and no GPUs on the test cluster: sbatch refuses the job.
    out = slurm_pl("--gpu", "1", "log/g.log", "true", cwd=tmp_path)
    assert out.returncode == 1
    assert "slurm.pl: sbatch failed" in out.stderr
    assert "-p gpu --gres=gpu:1" in out.stderr


def test_kaldi_style_config_file_maps_the_options(tmp_path, slurm_cluster):
    # the directives of a Kaldi recipe's conf/slurm.conf: values as separate words, comments,
    # an exact value with no options, a default
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf/cluster.conf").write_text(
        "# a Kaldi-style slurm.conf\n"
        "command sbatch --export=PATH --ntasks-per-node=1\n"
        "option time=* --time $0\n"
        "option mem=* --mem-per-cpu $0\n"
        "option mem=0          # nothing\n"
        "option num_threads=* --cpus-per-task $0 --ntasks-per-node=1\n"
        "option num_threads=1 --cpus-per-task 1  --ntasks-per-node=1\n"
        "default gpu=0\n"
        "option gpu=0 -p shared\n"
        "option gpu=* -p gpu --gres=gpu:$0\n")
    out = slurm_pl("--config", "conf/cluster.conf", "--mem", "300M", "--time", "5", "--num-threads", "1",
                   "JOB=1:2", "log/k.JOB.log", "echo", "JOB", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [parse_log(tmp_path / f"log/k.{t}.log")["output"] for t in (1, 2)] == ["1\n", "2\n"]
    submitted = (tmp_path / "q/k.sh").read_text().splitlines()[-1]
    assert submitted.startswith("# Submitted with: sbatch --export=PATH --ntasks-per-node=1 -p shared ")
    for options in ("--mem-per-cpu 300M", "--cpus-per-task 1 --ntasks-per-node=1", "--time 5", "--array=1-2 "):
        assert options in submitted


def test_undescribed_option_is_an_error(tmp_path):
    out = slurm_pl("--colour", "blue", "log/x.log", "true", cwd=tmp_path)
    assert out.returncode == 1
    assert "slurm.pl: option --colour blue is not described in the built-in default config" in out.stderr


def test_cluster_script_reuses_a_running_cluster(slurm_cluster):
    out = subprocess.run([str(CLUSTER_SCRIPT), "start"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "already running" in out.stderr or "not started by this script" in out.stderr
    status = subprocess.run([str(CLUSTER_SCRIPT), "status"], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "node" in status.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to run the script as another user")
def test_cluster_script_without_root_says_so():
    # a copy that user nobody can read: the checkout may sit in a folder only root can enter
    public = Path(tempfile.mkdtemp(prefix="cluster-sh-"))
    public.chmod(0o755)
    script = public / "cluster.sh"
    shutil.copy(CLUSTER_SCRIPT, script)
    script.chmod(0o755)
    out = subprocess.run(["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups",
                          str(script), "start"], capture_output=True, text=True, timeout=60)
    shutil.rmtree(public)
    assert out.returncode == 1
    assert "cluster.sh: needs root" in out.stderr
