"""Decoding and scoring, Kaldi-style in steps that ``steps/decode.sh`` strings together (the stage
protocol of ``neurosel.stage``; the work is ``neurosel.decode.stage``):

``python -m neurosel.bin.decode tune   [cfg] <model.pt> <lang> <fbank> <decode-dir>``
    search the LM weight and blank penalty on the tune set (dev); write ``<decode-dir>/decode.yaml``
    (resolved, with the chosen values) and ``<decode-dir>/tune/search.tsv`` (skipped when up to date)
``python -m neurosel.bin.decode decode [cfg] --sets a,b --job J --num-jobs N <model.pt> <lang> <fbank> <decode-dir>``
    job J of N: decode its share of each set into ``<decode-dir>/<set>/parts/J.tsv``
``python -m neurosel.bin.decode merge  [cfg] --sets a,b --num-jobs N <model.pt> <lang> <fbank> <decode-dir>``
    join the parts, score each set, write the ``.done`` marker of each set dir
``python -m neurosel.bin.decode status [cfg] (--sets a,b | --tune) <model.pt> <lang> <fbank> <decode-dir>``
    exit 0 if every set is decoded (with ``--tune``: the LM weight tuned) and up to date, 3 if not,
    1 on an error
``python -m neurosel.bin.decode list   [cfg] --sets a,b <model.pt> <lang> <fbank> <decode-dir>``
    print the sets, one per line (a set is the unit of the up-to-date check)
``python -m neurosel.bin.decode table  [cfg] --sets a,b <model.pt> <lang> <fbank> <decode-dir>``
    print ``<decode-dir name>/<set> <%WER line>`` for each set
``python -m neurosel.bin.decode check [--strict] <model.pt> <lang> <fbank> <decode-dir>``
    stage 4's weak-baseline check: a loud warning on stderr when the tuning set's WER is above
    ``weak_baseline_wer`` of the tuned ``decode.yaml`` (``neurosel.decode.baseline_check``); exit 0,
    or with ``--strict`` exit 4 for a weak baseline (the full study skips adapting from one)
"""

from __future__ import annotations

import argparse
import logging
import sys
import textwrap
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, device_args, job_args, run_main
from neurosel.decode import stage
from neurosel.decode.baseline_check import baseline_wer, weak_baseline_warning
from neurosel.decode.run import DecodeStageConfig
from neurosel.device import resolve_device
from neurosel.recipe import layout
from neurosel.stage import require, status_code

WEAK_BASELINE = 4  # exit code of ``check --strict`` for a weak baseline
log = logging.getLogger("neurosel.decode")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decode", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["tune", "decode", "merge", "status", "list", "table", "check"])
    parser.add_argument("--strict", action="store_true", help="check: exit 4 for a weak baseline")
    config_args(parser)
    parser.add_argument("--sets", default="", help="comma-separated split names to decode")
    parser.add_argument("--tune", action="store_true", help="action status: of the LM-weight tuning")
    job_args(parser)
    device_args(parser)
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("decode_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    cfg = C.resolve(DecodeStageConfig, args.config, args.overlay, "decode", args.overrides)
    sets = [s for s in args.sets.split(",") if s]
    where = (cfg, args.model, args.lang, args.fbank, args.decode_dir)

    if args.action == "status":
        checked = sets + ([cfg.tune_set] if args.tune else [])
        require([args.model, layout.bpe_model(args.lang), layout.cmvn_path(args.fbank)]
                + [layout.cuts_path(args.fbank, name) for name in checked])
        if args.tune:
            todo = [f"LM weight on {cfg.tune_set}"] if stage.tune_stale(*where) else []
            return status_code("decode (tuning)", args.decode_dir, todo, args.force)
        return status_code("decode", args.decode_dir, stage.stale_sets(*where, sets), args.force)
    if args.action == "check":
        warning = weak_baseline_warning(args.decode_dir)
        if warning is None:
            wer, tuned = baseline_wer(args.decode_dir)
            log.info("baseline %s WER %.2f%% is within weak_baseline_wer %g%%", tuned.tune_set, wer,
                     tuned.weak_baseline_wer)
        else:
            bar = "#" * 100
            print(f"{bar}\n{textwrap.fill(warning, 100, break_on_hyphens=False)}\n{bar}", file=sys.stderr)
            return WEAK_BASELINE if args.strict else 0
        return 0
    if args.action == "list":
        print("\n".join(sets))
        return 0
    if args.action == "table":
        for name in sets:
            print(f"{args.decode_dir.name + '/' + name:<24} {stage.wer_line(args.decode_dir / name)}")
        return 0
    if args.action == "tune":
        stage.tune(*where, force=args.force, device=device)
    elif args.action == "decode":
        stage.decode_job(*where, sets, args.job, args.num_jobs, device)
    else:
        stage.merge(*where, sets, args.num_jobs)
    return 0


if __name__ == "__main__":
    run_main(main)
