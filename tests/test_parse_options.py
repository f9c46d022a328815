"""utils/parse_options.sh: Kaldi's option semantics, run in real bash scripts under set -euo pipefail."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """#!/usr/bin/env bash
set -euo pipefail
nj=4
use_gpu=false
cmd=utils/run.pl
lm_order=3
{extra}
help_message="Usage: demo.sh [options] <data-dir>
  --nj <n>   jobs (default $nj)"
. {root}/utils/parse_options.sh
echo "nj=$nj use_gpu=$use_gpu cmd=$cmd lm_order=$lm_order{extra_echo} args=$*"
"""


def run_script(tmp_path: Path, *args: str, extra: str = "", extra_echo: str = "") -> subprocess.CompletedProcess:
    """Writes a demo script that sources parse_options.sh and runs it with args."""
    script = tmp_path / "demo.sh"
    script.write_text(SCRIPT.format(root=ROOT, extra=extra, extra_echo=extra_echo))
    script.chmod(0o755)
    return subprocess.run([str(script), *args], capture_output=True, text=True, cwd=tmp_path)


def test_defaults_and_positional_arguments(tmp_path):
    out = run_script(tmp_path, "data/train", "exp")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nj=4 use_gpu=false cmd=utils/run.pl lm_order=3 args=data/train exp"


def test_dashes_become_underscores_and_values_keep_spaces(tmp_path):
    out = run_script(tmp_path, "--nj", "8", "--lm-order", "5", "--cmd", "utils/slurm.pl --mem 4G",
                     "--use-gpu", "true", "data")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nj=8 use_gpu=true cmd=utils/slurm.pl --mem 4G lm_order=5 args=data"


def test_parsing_stops_at_the_first_positional_argument(tmp_path):
    out = run_script(tmp_path, "--nj", "2", "data", "--nj", "9")
    assert out.stdout.strip().endswith("nj=2 use_gpu=false cmd=utils/run.pl lm_order=3 args=data --nj 9")


def test_config_file_is_sourced_and_the_command_line_wins(tmp_path):
    (tmp_path / "a.conf").write_text("nj=7\nlm_order=6\n")
    (tmp_path / "b.conf").write_text("lm_order=9\n")
    # --config after --nj still loses to it: config files are read before the options.
    out = run_script(tmp_path, "--nj", "2", "--config", "a.conf", "--config", "b.conf", "x")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "nj=2 use_gpu=false cmd=utils/run.pl lm_order=9 args=x"


def test_a_script_with_its_own_config_variable_owns_config(tmp_path):
    (tmp_path / "stage.yaml").write_text("features:\n  num_mel_bins: 80\n")
    out = run_script(tmp_path, "--config", "stage.yaml", "x", extra="config=",
                     extra_echo=" config=$config")
    assert out.returncode == 0, out.stderr
    assert "config=stage.yaml args=x" in out.stdout


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_help_message_and_exits_zero(tmp_path, flag):
    out = run_script(tmp_path, "--nj", "3", flag, "data")
    assert out.returncode == 0
    assert out.stdout == ""
    assert out.stderr.startswith("Usage: demo.sh [options] <data-dir>\n  --nj <n>   jobs (default 4)")


@pytest.mark.parametrize("args, message", [
    (["--no-such-option", "1", "x"], "invalid option --no-such-option"),
    (["--nj"], "option --nj needs a value"),
    (["--use-gpu", "yes", "x"], 'expected "true" or "false": --use-gpu yes'),
    (["--nj=3", "x"], "must be of the form --name value, got '--nj=3'"),
    (["--cmd", "", "x"], "empty argument to --cmd option"),
    (["--config", "missing.conf", "x"], "missing config 'missing.conf'"),
    (["--bad.name", "1", "x"], "invalid option --bad.name"),
])
def test_errors_name_the_option_and_exit_one(tmp_path, args, message):
    out = run_script(tmp_path, *args)
    assert out.returncode == 1
    assert message in out.stderr
    assert out.stdout == ""


def test_no_helper_variables_leak_into_the_script(tmp_path):
    out = run_script(tmp_path, "--nj", "2", "x", extra_echo=" leaked=$(compgen -v _po_ | wc -l)")
    assert "leaked=0" in out.stdout
