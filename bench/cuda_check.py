"""The CUDA check: the tiny recipe's model-running stages on two devices, compared.

``python -m bench.cuda_check [--workdir DIR] [--base DIR] [--device-a cuda] [--device-b cpu] [--stop-stage 7]``

Trains (or, with ``--base``, reuses) one tiny recipe run's baseline (stages 0-3, ``./run.sh
--corpus-size tiny``), then runs stages 4..``--stop-stage`` twice from it, once with ``--device
<a>`` and once with ``--device <b>``, in ``DIR/<a>`` and ``DIR/<b>`` (data and the baseline are
shared by symbolic links, so both sides study the same model). Compared, with these tolerances:

- every decode both sides scored (``exp/decode/<system>[/adapted_<c>]/<set>/wer``): WER within ``WER_TOL``
  points for the baseline and the pruned systems (the same weights; only the forward pass's
  floating-point order differs), within ``ADAPTED_WER_TOL`` for adapted systems (a few optimiser
  steps amplify that difference) and for systems pruned by a gradient criterion (``prune_taylor*``:
  each device computes its own gradients, and neurons near a tie in the ranking can swap; on the
  tiny recipe on an H200, prune_taylor1 decoded 0.52 and 0.57 points from the CPU's);
- the neuron statistics of every reference set (``exp/saliency/<ref>/stats.pt``): on-rates within
  ``ON_RATE_TOL`` (a frame near the on-threshold may flip) and mean activations within
  ``MEAN_ACT_TOL`` relative to the layer's largest mean; the share of neurons whose hyper/hypo/normal
  class differs at most ``CLASS_TOL``.

Prints one line per comparison, the wall time of each side and PASS or FAIL; exits 1 on a failure
or when a side's run fails. On a CPU-only machine ``--device-a cpu --device-b cpu`` runs the same
path (tests/test_cuda_check.py); on one GPU stages 0-7 of the tiny recipe take a few minutes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurosel.recipe.neuron_table import read_neurons_tsv
from neurosel.saliency.stats import load_stats

REPO = Path(__file__).resolve().parent.parent
WER_TOL = 0.5
ADAPTED_WER_TOL = 2.0
ON_RATE_TOL = 0.01
MEAN_ACT_TOL = 1e-3
CLASS_TOL = 0.01


@dataclass
class Check:
    """One compared quantity: what, the difference found, the tolerance."""

    what: str
    difference: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.difference <= self.tolerance

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what:<56} {self.difference:10.6f} <= {self.tolerance:g}"


def run_recipe(workdir: Path, *options: str) -> subprocess.CompletedProcess:
    """``./run.sh --corpus-size tiny --workdir <workdir> --quiet true <options>``."""
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}"}
    command = ["./run.sh", "--corpus-size", "tiny", "--workdir", str(workdir), "--quiet", "true", *options]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)


def side(base: Path, workdir: Path) -> None:
    """A work dir that shares ``base``'s data and trained baseline."""
    (workdir / "exp").mkdir(parents=True, exist_ok=True)
    for link, target in ((workdir / "data", base / "data"), (workdir / "exp" / "baseline", base / "exp" / "baseline")):
        if not link.exists():
            link.symlink_to(target.resolve())


def read_wer(path: Path) -> float:
    return float(path.read_text(encoding="utf-8").split()[1])


def compare(a: Path, b: Path) -> list[Check]:
    """The checks between the ``exp`` dirs of two sides."""
    checks = []
    for wer_a in sorted((a / "decode").rglob("wer")):  # <system>/<set>/wer, adapted: <system>/adapted_<c>/<set>/wer
        rel = wer_a.relative_to(a)
        wer_b = b / rel
        if not wer_b.is_file():
            checks.append(Check(f"{rel.parent}: not decoded on side b", float("inf"), 0.0))
            continue
        tol = ADAPTED_WER_TOL if rel.parts[1].startswith(("adapt", "prune_taylor")) else WER_TOL
        checks.append(Check(f"WER {rel.parent}", abs(read_wer(wer_a) - read_wer(wer_b)), tol))
    for stats_a in sorted((a / "saliency").glob("*/stats.pt")):
        ref = stats_a.parent.name
        sa, sb = load_stats(stats_a), load_stats(b / "saliency" / ref / "stats.pt")
        on = max(float((x - y).abs().max()) for x, y in zip(sa.on_rate, sb.on_rate))
        mean = max(float((x - y).abs().max() / max(float(x.abs().max()), 1e-12))
                   for x, y in zip(sa.mean_act, sb.mean_act))
        ca = read_neurons_tsv(stats_a.parent / "neurons.tsv").classes
        cb = read_neurons_tsv(b / "saliency" / ref / "neurons.tsv").classes
        checks += [Check(f"on-rate {ref}", on, ON_RATE_TOL), Check(f"mean activation (relative) {ref}", mean, MEAN_ACT_TOL),
                   Check(f"neuron classes differing {ref}", float(np.mean(ca != cb)), CLASS_TOL)]
    return checks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cuda_check", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "bench" / "work" / "cuda_check")
    parser.add_argument("--base", type=Path, help="a tiny recipe work dir with stages 0-3 done (else trained)")
    parser.add_argument("--device-a", default="cuda")
    parser.add_argument("--device-b", default="cpu")
    parser.add_argument("--stop-stage", type=int, default=7, choices=range(4, 8))
    args = parser.parse_args(argv)
    base = args.base or args.workdir / "base"
    times: dict[str, float] = {}
    if args.base is None:
        start = time.perf_counter()
        done = run_recipe(base, "--stop-stage", "3")
        times["stages 0-3"] = time.perf_counter() - start
        if done.returncode != 0:
            print(f"FAIL: stages 0-3 of the tiny recipe failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
            return 1
    dirs = []
    for label, device in (("a", args.device_a), ("b", args.device_b)):
        workdir = args.workdir / f"{label}_{device.replace(':', '')}"
        side(base, workdir)
        start = time.perf_counter()
        done = run_recipe(workdir, "--stage", "4", "--stop-stage", str(args.stop_stage), "--device", device)
        times[f"side {label}: stages 4-{args.stop_stage} --device {device}"] = time.perf_counter() - start
        if done.returncode != 0:
            print(f"FAIL: stages 4-{args.stop_stage} with --device {device} failed (exit {done.returncode}):\n"
                  f"{done.stderr[-3000:]}")
            return 1
        dirs.append(workdir / "exp")
    checks = compare(*dirs)
    for check in checks:
        print(check.line())
    for what, seconds in times.items():
        print(f"time {what}: {seconds:.1f} s")
    failed = [c for c in checks if not c.ok]
    if not checks:
        print("FAIL: nothing to compare")
        return 1
    print(f"{'FAIL' if failed else 'PASS'}: {len(checks) - len(failed)} of {len(checks)} checks within tolerance "
          f"(--device {args.device_a} against --device {args.device_b})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
