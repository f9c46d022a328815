"""Run the benchmarks and write ``bench/results.json`` and ``bench/RESULTS.md``.

    python -m bench.run [--only features,train,saliency,decode,prune,tta,e2e,scaling,cluster] [--quick]
                        [--workdir DIR] [--e2e-log FILE | --e2e-fresh default|tiny] ...

The micro-benchmarks (features, train, saliency, decode, prune, tta) read a finished run of stages
0-4 (``--workdir``, default ``egs/synth``); scaling reads its stage 0 manifests and model; the
end-to-end section reads the console log or step logs of a run (see ``bench.e2e``); cluster times
its decode step through run.pl and slurm.pl and 1- against 2-process training. Nothing is
written into the work dir: scratch files go to ``--scratch`` and are removed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench import cluster, decoding, e2e, features, pruning, report, saliency, scaling, training, tta
from bench.common import REPO, Section, load_average, machine
from bench.inputs import find_workdir
from neurosel.io import write_text

MICRO = {"features": features.run, "train": training.run, "saliency": saliency.run, "decode": decoding.run,
         "prune": pruning.run, "tta": tta.run}
ALL = list(MICRO) + ["e2e", "scaling", "cluster"]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(ALL), help=f"comma-separated sections (default: all of {ALL})")
    parser.add_argument("--quick", action="store_true", help="less data and fewer repeats (a smoke run)")
    parser.add_argument("--workdir", type=Path, help="a finished recipe run (default: egs/synth)")
    parser.add_argument("--scratch", type=Path, help="scratch dir (default: a new temporary dir)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "RESULTS.md")
    parser.add_argument("--results", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--e2e-log", type=Path, action="append", default=[],
                        help="console output of a whole ./run.sh (exact stage times); repeat it for runs of "
                        "parts of the recipe, oldest first")
    parser.add_argument("--e2e-workdir", type=Path, help="work dir whose step logs time the stages "
                        "(default: --workdir)")
    parser.add_argument("--e2e-fresh", choices=["default", "tiny"],
                        help="run ./run.sh afresh in the scratch dir and time it (default: ~23 min, whole machine)")
    parser.add_argument("--scaling-nj", type=int, default=1, help="--nj of the scaled stages (default 1)")
    parser.add_argument("--scaling-epochs", type=int, default=1, help="training epochs per scaled stage 3")
    parser.add_argument("--scaling-repeats", type=int, default=1, help="runs per scaling point (median)")
    parser.add_argument("--record", help="also save this run's metrics as bench/history/<RECORD>.json")
    parser.add_argument("--note", default="", help="what the recorded run is (with --record)")
    args = parser.parse_args(argv)
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in args.only if s not in ALL]
    if unknown:
        parser.error(f"unknown section {unknown[0]!r} (known: {', '.join(ALL)})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("workdir", "scratch", "out", "results", "e2e_workdir"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    args.e2e_log = [p.resolve() for p in args.e2e_log]
    os.chdir(REPO)  # recipe manifests name their feature files relative to the repository root
    snapshot = machine(torch.get_num_threads())
    needs_run = any(s in MICRO or s in ("scaling", "cluster") for s in args.only)
    work = find_workdir(args.workdir) if needs_run else None
    if work is not None:  # a run in another checkout names its features relative to that checkout
        os.chdir(work.storage_root())
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="neurosel_bench_"))
    scratch.mkdir(parents=True, exist_ok=True)
    sections: list[Section] = []
    try:
        for name in args.only:
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            t = time.perf_counter()
            if name in MICRO:
                section = MICRO[name](work, scratch, args.quick)
                section.threads = torch.get_num_threads()
            elif name == "e2e":
                e2e_dir = args.e2e_workdir or args.workdir or REPO / "egs" / "synth"
                section = e2e.run(e2e_dir, args.e2e_log, args.e2e_fresh, scratch)
            elif name == "cluster":
                section = cluster.run(work, scratch, args.quick)
            else:
                section = scaling.run(work, scratch, args.quick, args.scaling_nj, args.scaling_epochs,
                                      args.scaling_repeats)
            section.load_end = load_average()
            sections.append(section)
            for m in section.metrics:
                verdict = "" if m.met is None else ("  [target met]" if m.met else "  [target MISSED]")
                print(f"  {m.name}: {m.value:.4g} {m.unit}{verdict}", file=sys.stderr)
            print(f"  ({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
    doc = report.merge_results(args.results, sections, snapshot, command.strip())
    history_dir = args.out.parent / "history"
    if args.record:
        report.record(doc, [s.name for s in sections], history_dir / f"{args.record}.json", args.note)
    write_text(args.out, report.render(doc, report.load_history(history_dir)))
    print(f"bench: wrote {args.out} and {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
