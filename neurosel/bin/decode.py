"""Decoding and scoring, Kaldi-style in three steps that ``steps/decode.sh`` strings together:

``python -m neurosel.bin.decode tune   [cfg] <model.pt> <lang> <fbank> <decode-dir>``
    search the LM weight and blank penalty on the tune set (dev); write ``<decode-dir>/decode.yaml``
    (resolved, with the chosen values) and ``<decode-dir>/tune/search.tsv`` (skipped when up to date)
``python -m neurosel.bin.decode decode [cfg] --sets a,b --job J --num-jobs N <model.pt> <lang> <fbank> <decode-dir>``
    job J of N: decode its share of each set into ``<decode-dir>/<set>/parts/J.tsv``
``python -m neurosel.bin.decode merge  [cfg] --sets a,b --num-jobs N <model.pt> <lang> <fbank> <decode-dir>``
    join the parts, score each set, write the ``.done`` marker of each set dir
``python -m neurosel.bin.decode status [cfg] --sets a,b <model.pt> <lang> <fbank> <decode-dir>``
    exit 0 if every set is decoded and up to date, 1 otherwise
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, job_args, run_main
from neurosel.decode.graph import load_graph
from neurosel.decode.run import (DecodeStageConfig, decode_cuts, job_share, load_cuts, merge_and_score,
                                 tune_search, write_part)
from neurosel.model import load_model
from neurosel.stage import fingerprint, mark_done, run_once, status
from neurosel.train.data import load_cmvn

log = logging.getLogger("neurosel.decode")


def _digest(cfg: DecodeStageConfig, args: argparse.Namespace, name: str) -> str:
    inputs = [args.model, args.lang / "TLG.fst", args.lang / "bpe.model", args.fbank / f"cuts_{name}.jsonl.gz"]
    return fingerprint({"decode": C.to_dict(cfg), "set": name}, inputs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="decode", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["tune", "decode", "merge", "status"])
    config_args(parser)
    parser.add_argument("--sets", default="", help="comma-separated split names to decode")
    job_args(parser)
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("decode_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    cfg = C.resolve(DecodeStageConfig, args.config, args.overlay, "decode", args.overrides)
    sets = [s for s in args.sets.split(",") if s]

    if args.action == "status":
        stale = [s for s in sets if status(args.decode_dir / s, _digest(cfg, args, s)) != "done"]
        if stale or args.force:
            log.info("to decode: %s", ", ".join(stale or sets))
            return 1
        log.info("%s: every set up to date (%s), skipping", args.decode_dir, ", ".join(sets))
        return 0

    if args.action == "tune":
        tune_dir = args.decode_dir / "tune"

        def work() -> None:
            model, _ = load_model(args.model)
            lm_weight, blank_penalty = tune_search(
                model, load_cuts(args.fbank, cfg.tune_set), load_cmvn(args.fbank / "cmvn.npz"),
                load_graph(args.lang, with_tlg=True), cfg, tune_dir)
            log.info("chosen on %s: lm_weight %g, blank_penalty %g", cfg.tune_set, lm_weight, blank_penalty)
            C.save(DecodeStageConfig(**{**C.to_dict(cfg), "lm_weight": lm_weight, "blank_penalty": blank_penalty,
                                        "lm_weights": [], "blank_penalties": []}),
                   args.decode_dir / "decode.yaml")

        inputs = [args.model, args.lang / "TLG.fst", args.fbank / f"cuts_{cfg.tune_set}.jsonl.gz"]
        run_once(f"LM-weight and blank-penalty tuning on {cfg.tune_set}", tune_dir, C.to_dict(cfg), inputs, work, force=args.force)
        return 0

    if args.action == "decode":
        model, _ = load_model(args.model)
        cmvn = load_cmvn(args.fbank / "cmvn.npz")
        graph = load_graph(args.lang, with_tlg=cfg.method == "wfst")
        for name in sets:
            share = job_share(load_cuts(args.fbank, name), args.job, args.num_jobs)
            hyps = decode_cuts(model, share, cmvn, graph, cfg.search(), cfg.max_duration)
            write_part(hyps, args.decode_dir / name / "parts" / f"{args.job}.tsv")
        return 0

    for name in sets:  # merge
        set_dir = args.decode_dir / name
        merge_and_score(set_dir, load_cuts(args.fbank, name), args.num_jobs)
        C.save(cfg, set_dir / "decode.yaml")
        mark_done(set_dir, _digest(cfg, args, name), stage="decode", model=str(args.model))
    return 0


if __name__ == "__main__":
    run_main(main)
