"""bench/cuda_check.py's CPU path: stages 4-5 of the tiny recipe run twice from one trained
baseline with --device cpu on both sides; everything compared agrees and it says PASS. A
difference beyond a tolerance is a FAIL with a non-zero exit."""

from __future__ import annotations

import shutil

import pytest

from bench import cuda_check


@pytest.mark.slow
def test_cpu_against_cpu_passes(tiny_recipe, tmp_path, capsys):
    workdir, _ = tiny_recipe
    code = cuda_check.main(["--base", str(workdir), "--workdir", str(tmp_path), "--device-a", "cpu",
                            "--device-b", "cpu", "--stop-stage", "5"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "PASS" in out.splitlines()[-1]
    assert "WER decode/baseline/dev" in out and "on-rate dev" in out
    assert "time side a: stages 4-5 --device cpu" in out and "time side b: stages 4-5 --device cpu" in out
    # the same comparison with one side's WER changed: a FAIL naming it
    a, b = (tmp_path / "a_cpu" / "exp"), (tmp_path / "b_cpu" / "exp")
    wer = b / "decode" / "baseline" / "dev" / "wer"
    wer.unlink()
    wer.write_text("%WER 1.00 [ 1 / 100, 0 ins, 0 del, 1 sub ]\n")
    checks = cuda_check.compare(a, b)
    failed = [c for c in checks if not c.ok]
    assert [c.what for c in failed] == ["WER decode/baseline/dev"]
    shutil.rmtree(tmp_path / "a_cpu")
