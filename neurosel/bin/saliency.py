"""Stage 5, saliency, in the steps that ``steps/saliency.sh`` strings together:

``python -m neurosel.bin.saliency taylor [cfg] <model.pt> <fbank> <lang> <saliency-dir>``
    Taylor statistics on labelled in-domain data -> ``<saliency-dir>/taylor/taylor.pt``
``python -m neurosel.bin.saliency work   [cfg] --job J --num-jobs N <model.pt> <fbank> <lang> <saliency-dir>``
    job J of N: every N-th reference set (dev, ood_adapt_*) -> ``<saliency-dir>/<ref>/``
``python -m neurosel.bin.saliency merge  [cfg] <model.pt> <fbank> <lang> <saliency-dir>``
    ``pooled`` from the ood_adapt_* statistics, ``overlap.json``/``overlap.tsv``
``python -m neurosel.bin.saliency status [cfg] <model.pt> <fbank> <lang> <saliency-dir>``
    exit 0 if every output is up to date, 3 if not, 1 on an error
``python -m neurosel.bin.saliency list   [cfg] <model.pt> <fbank> <lang> <saliency-dir>``
    print the reference sets, one per line
``python -m neurosel.bin.saliency table  [cfg] <model.pt> <fbank> <lang> <saliency-dir>``
    print the hyper/hypo counts per reference set and the criteria study

Every output folder gets a ``.done`` marker (hash of the resolved config and the input files), so
each step skips work that is up to date.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, device_args, job_args, run_main
from neurosel.decode.run import load_cuts
from neurosel.errors import NeuroselError
from neurosel.device import resolve_device
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.recipe.layout import DEV, POOLED
from neurosel.recipe.saliency_stage import (SaliencyStageConfig, analyse_reference, pooled_stats, reference_sets,
                                            reference_stats, summary_table, taylor_stats, write_overlap)
from neurosel.saliency.taylor import load_taylor, save_taylor
from neurosel.stage import fingerprint, require, run_once, status, status_code
from neurosel.data.batches import CtcDataset, load_bpe, load_cmvn

log = logging.getLogger("neurosel.saliency")


class Paths:
    """Inputs and outputs of the stage, and the fingerprint of each output folder."""

    def __init__(self, args: argparse.Namespace, cfg: SaliencyStageConfig):
        self.cfg = cfg
        self.model: Path = args.model
        self.fbank: Path = args.fbank
        self.lang: Path = args.lang
        self.out: Path = args.saliency_dir
        self.refs = reference_sets(self.fbank)
        self.taylor_dir = self.out / "taylor"
        self.taylor = self.taylor_dir / "taylor.pt"
        self.device = resolve_device(args.device)  # where the forward (and backward) passes run

    def taylor_job(self) -> tuple[dict, list[Path]]:
        c = self.cfg
        config = {"taylor": C.to_dict(c.taylor), "set": c.taylor_set, "utterances": c.taylor_utterances,
                  "max_duration": c.taylor_max_duration, "seed": c.seed}
        return config, [self.model, layout.cuts_path(self.fbank, c.taylor_set), layout.cmvn_path(self.fbank),
                        layout.bpe_model(self.lang)]

    def ref_job(self, ref: str) -> tuple[dict, list[Path]]:
        inputs = [self.model, layout.cmvn_path(self.fbank)] + ([self.taylor] if self.cfg.needs_taylor() else [])
        if ref == POOLED:
            inputs += [self.out / r / "stats.pt" for r in self.refs if layout.is_adapt_set(r)]
        else:
            inputs.append(layout.cuts_path(self.fbank, ref))
        return {"saliency": C.to_dict(self.cfg), "reference_set": ref}, inputs

    def all_refs(self) -> list[str]:
        return self.refs + ([POOLED] if len(self.refs) > 1 else [])

    def overlap_job(self) -> tuple[dict, list[Path]]:
        return {"overlap": self.all_refs()}, [self.out / r / "neurons.tsv" for r in self.all_refs()]

    def stale(self) -> list[str]:
        """Names of the outputs that are not up to date."""
        jobs = [("taylor", self.taylor_dir, self.taylor_job())] if self.cfg.needs_taylor() else []
        jobs += [(r, self.out / r, self.ref_job(r)) for r in self.all_refs()]
        jobs.append(("overlap", self.out, self.overlap_job()))
        return [name for name, d, (config, inputs) in jobs if status(d, fingerprint(config, inputs)) != "done"]


def _taylor(paths: Paths, force: bool) -> None:
    cfg = paths.cfg
    if not cfg.needs_taylor():
        log.info("no Taylor criterion configured, skipping the Taylor pass")
        return

    def work() -> None:
        model = load_model(paths.model)[0].to(paths.device)
        dataset = CtcDataset(load_bpe(paths.lang), load_cmvn(layout.cmvn_path(paths.fbank)))
        stats = taylor_stats(model, load_cuts(paths.fbank, cfg.taylor_set), dataset, cfg)
        log.info("Taylor statistics over %d frames of %s", stats.count, cfg.taylor_set)
        save_taylor(stats, paths.taylor)

    config, inputs = paths.taylor_job()
    run_once(f"Taylor statistics on {cfg.taylor_set}", paths.taylor_dir, config, inputs, work, force=force)


def _reference(paths: Paths, ref: str, force: bool) -> None:
    def work() -> None:
        model, _ = load_model(paths.model)
        taylor = load_taylor(paths.taylor) if paths.cfg.needs_taylor() else None
        if ref == POOLED:
            stats = pooled_stats(paths.out, paths.refs)
        else:
            stats = reference_stats(model.to(paths.device), load_cuts(paths.fbank, ref),
                                    load_cmvn(layout.cmvn_path(paths.fbank)), paths.cfg)
            model.cpu()  # the criteria are computed on the CPU, beside the statistics
        analyse_reference(ref, model, stats, taylor, paths.cfg, paths.out / ref)

    config, inputs = paths.ref_job(ref)
    if paths.cfg.needs_taylor() and not paths.taylor.is_file():
        raise NeuroselError(f"{paths.taylor}: no such file (run the 'taylor' action first)")
    run_once(f"saliency on {ref}", paths.out / ref, config, inputs, work, force=force)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="saliency", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["taylor", "work", "merge", "status", "list", "table"])
    config_args(parser)
    job_args(parser)
    device_args(parser)
    parser.add_argument("model", type=Path, help="baseline model.pt")
    parser.add_argument("fbank", type=Path, help="stage 1 output: cuts_<split>.jsonl.gz, cmvn.npz")
    parser.add_argument("lang", type=Path, help="stage 2 output: bpe.model (Taylor targets)")
    parser.add_argument("saliency_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    cfg = C.resolve(SaliencyStageConfig, args.config, args.overlay, "saliency", args.overrides)
    paths = Paths(args, cfg)

    if args.action == "status":
        require([paths.model, layout.cmvn_path(paths.fbank), layout.cuts_path(paths.fbank, DEV),
                 layout.bpe_model(paths.lang)])
        return status_code("saliency", paths.out, paths.stale(), args.force)
    if args.action == "list":
        print("\n".join(paths.all_refs()))
        return 0
    if args.action == "table":
        print(summary_table(paths.out, paths.all_refs()))
        return 0
    if args.action == "taylor":
        _taylor(paths, args.force)
        return 0
    if args.action == "work":
        if not 1 <= args.job <= args.num_jobs:
            raise NeuroselError(f"job {args.job} is not in 1..{args.num_jobs}")
        for ref in paths.refs[args.job - 1::args.num_jobs]:
            _reference(paths, ref, args.force)
        return 0
    if POOLED in paths.all_refs():
        _reference(paths, POOLED, args.force)
    config, inputs = paths.overlap_job()
    run_once("selection overlap", paths.out, config, inputs,
             lambda: write_overlap(paths.out, paths.all_refs()), force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
