"""Test-time adaptation of a recipe's model, one utterance at a time (``neurosel.recipe.tta``).

    python -m neurosel.bin.tta [run|status] [--config conf/tta.yaml] --moves selective
        --mode episodic [--source running|condition] [--seed N] [--target ood_noise|test|stream20]
        [--device auto|cpu|cuda[:N]] [--job J --num-jobs N] [--force]
        <model.pt> <lang-dir> <fbank-dir> <exp-dir>
    python -m neurosel.bin.tta subset --per-set N [--seed S] <fbank-dir> <out-fbank-dir>
    python -m neurosel.bin.tta report [--stage7 <exp-dir>] [--out table.md] <exp-dir>

``run`` (the default action) adapts on ``--device`` (the search stays on the CPU) and writes ``<exp-dir>/decode/<system>/<target>/`` (hyp.txt, ref.txt,
errs.txt, wer, progress.tsv, tta.json) with ``<system>`` =
``tta_<moves>_<mode>[_<source>][.s<seed>]``, resuming a killed run, and marks it done for its
config and inputs (an up-to-date run is skipped, a changed one redone from the start); needs
stage 4's tuned ``<exp-dir>/decode/baseline/decode.yaml`` and, for ``--source condition``, stage
5's ``<exp-dir>/saliency/ood_adapt_<c>/neurons.tsv``. Prints the WER line and the CPU cost per
second of audio. ``--moves``, ``--mode``, ``--source``, ``--seed`` and ``--target`` take comma
lists: every combination is a run (sources apply to ``selective``, seeds to ``random``), and
``--job J --num-jobs N`` does runs J, J+N, ... ``status`` answers the stage protocol for the same arguments (0 up to date, 3 to
do, 1 a broken config or missing input). ``subset`` writes a fixed, seeded subset of a fbank dir's
sets (the same utterances for every system). ``report`` prints (or writes) the markdown table of
every TTA run under ``<exp-dir>/decode`` beside the unadapted model and stage 7's systems.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, run_main
from neurosel.device import resolve_device
from neurosel.errors import NeuroselError
from neurosel.io import write_json, write_text
from neurosel.recipe import layout
from neurosel.recipe.tta import MOVES, TtaRun, TtaStageConfig, run_inputs, run_tta, subset_fbank
from neurosel.stage import clear, fingerprint, mark_done, status, status_code

ACTIONS = ("run", "status", "subset", "report")


def _run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tta", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--moves", required=True, help=f"which parameters adapt, a,b,.. of {', '.join(MOVES)}")
    parser.add_argument("--mode", required=True, help="episodic, continual or both (episodic,continual)")
    parser.add_argument("--source", default="running",
                        help="where the hyper/hypo neurons of --moves selective come from: running, condition or both")
    parser.add_argument("--seed", default="1", help="seeds a,b,.. of --moves random; the first seeds torch for the others")
    parser.add_argument("--target", default="stream20", help="ood_<c>, test or stream<segment>, a,b,..")
    parser.add_argument("--job", type=int, default=1, help="this job's number, 1-based: runs job, job+N, ..")
    parser.add_argument("--num-jobs", type=int, default=1, help="how many jobs share the runs")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads")
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where the model adapts (default auto: a CUDA device if present, else the CPU); "
                        "the search runs on the CPU, and the device is not part of a run's marker")
    parser.add_argument("--force", action="store_true", help="redo even if up to date")
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("exp", type=Path)
    return parser


def _items(value: str, flag: str) -> list[str]:
    items = [v for v in value.split(",") if v]
    if not items:
        raise NeuroselError(f"tta: {flag} names nothing")
    return items


def _runs(args: argparse.Namespace) -> list[TtaRun]:
    """Every run the flags name: moves x mode x (source of selective) x (seed of random) x target."""
    seeds = [int(s) for s in _items(args.seed, "--seed")]
    runs = []
    for moves in _items(args.moves, "--moves"):
        for mode in _items(args.mode, "--mode"):
            if mode not in ("episodic", "continual"):
                raise NeuroselError(f"tta: unknown mode '{mode}' (episodic, continual)")
            for source in _items(args.source, "--source") if moves == "selective" else ["running"]:
                if source not in ("running", "condition"):
                    raise NeuroselError(f"tta: unknown source '{source}' (running, condition)")
                for seed in seeds if moves == "random" else seeds[:1]:
                    runs += [TtaRun(moves, mode, source, seed, t) for t in _items(args.target, "--target")]  # type: ignore[arg-type]
    return runs


def _run(action: str, argv: list[str]) -> int:
    args = _run_parser().parse_args(argv)
    device = resolve_device(args.device)
    if not 1 <= args.job <= args.num_jobs:
        raise NeuroselError(f"tta: job {args.job} is not in 1..{args.num_jobs}")
    torch.set_num_threads(args.num_threads)
    cfg = C.resolve(TtaStageConfig, args.config, args.overlay, "tta", args.overrides)
    decode_yaml = layout.decode_dir(args.exp, layout.BASELINE) / "decode.yaml"
    saliency = layout.saliency_dir(args.exp)
    runs = _runs(args)
    for run in runs:  # a missing input of any run stops status (and the step) before any job
        run_inputs(run, args.model, args.lang, args.fbank, decode_yaml, saliency)
    if action == "status":
        todo = [f"{r.system}/{r.target}" for r in runs
                if status(_out_dir(args.exp, r), _digest(r, cfg, args, decode_yaml, saliency)) != "done"]
        return status_code("tta", layout.decode_root(args.exp), todo, args.force)
    for run in runs[args.job - 1::args.num_jobs]:
        summary = _run_one(run, cfg, args, decode_yaml, saliency, device)
        print(json.dumps({k: summary[k] for k in ("system", "wer", "adapt_cpu_per_audio_second",
                                                  "search_cpu_per_audio_second")}), flush=True)
    return 0


def _out_dir(exp: Path, run: TtaRun) -> Path:
    return layout.decode_dir(exp, run.system) / run.target


def _digest(run: TtaRun, cfg: TtaStageConfig, args: argparse.Namespace, decode_yaml: Path, saliency: Path) -> str:
    """The fingerprint of one run: its settings, the config and the files it reads."""
    return fingerprint({"run": asdict(run), "config": C.to_dict(cfg)},
                       run_inputs(run, args.model, args.lang, args.fbank, decode_yaml, saliency))


def _run_one(run: TtaRun, cfg: TtaStageConfig, args: argparse.Namespace, decode_yaml: Path,
             saliency: Path, device: torch.device) -> dict:
    """Run (or skip, when up to date) one TTA run; returns its summary."""
    out_dir = _out_dir(args.exp, run)
    digest = _digest(run, cfg, args, decode_yaml, saliency)
    state = status(out_dir, digest)
    if state == "done" and not args.force:
        return json.loads((out_dir / "tta.json").read_text(encoding="utf-8"))
    if state != "new" or args.force:  # another config's or a forced redo: never resume its state
        for name in ("state.pt", "progress.tsv"):
            (out_dir / name).unlink(missing_ok=True)
    clear(out_dir)
    summary = run_tta(run, cfg, args.model, args.lang, args.fbank, decode_yaml, saliency, out_dir, device)
    write_json(out_dir / "tta.json", {**summary, "config": C.to_dict(cfg)})
    mark_done(out_dir, digest, stage="tta")
    return summary


def _subset(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tta subset", description="a fixed, seeded subset of a fbank dir's sets")
    parser.add_argument("--per-set", type=int, required=True, help="utterances kept of each set")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    names = subset_fbank(args.fbank, args.out, args.per_set, args.seed)
    print(f"{args.out}: {args.per_set} utterances (at most) of each of {', '.join(names)}")
    return 0


def _report(argv: list[str]) -> int:
    from neurosel.recipe.tta_report import report_markdown  # only the report needs it

    parser = argparse.ArgumentParser(prog="tta report", description="the markdown table of a TTA comparison")
    parser.add_argument("--stage7", type=Path, help="a recipe exp dir whose stage 7 systems to show beside")
    parser.add_argument("--out", type=Path, help="write the table here instead of printing it")
    parser.add_argument("exp", type=Path)
    args = parser.parse_args(argv)
    text = report_markdown(args.exp, args.stage7)
    if args.out:
        write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    action = argv.pop(0) if argv and argv[0] in ACTIONS else "run"
    if action == "subset":
        return _subset(argv)
    if action == "report":
        return _report(argv)
    return _run(action, argv)


if __name__ == "__main__":
    run_main(main)
