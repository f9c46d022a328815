"""Stage 6, prune, in the steps that ``steps/prune.sh`` strings together:

``python -m neurosel.bin.prune list   [cfg] [--sets a,b] <model.pt> <saliency-dir> <fbank> <prune-dir>``
    print the system folders (one per line: ``<system>``, or ``<system>/adapted_<c>`` for each model of a
    ``condprune_*`` system) to stdout; with ``--sets``, ``<folder>/<set>`` for each set it is decoded on
``python -m neurosel.bin.prune work   [cfg] --job J --num-jobs N <model.pt> <saliency-dir> <fbank> <prune-dir>``
    job J of N: build every N-th system -> ``<prune-dir>/<folder>/{model.pt,removed.tsv,prune.json}``
``python -m neurosel.bin.prune merge  [cfg] <model.pt> <saliency-dir> <fbank> <prune-dir>``
    ``<prune-dir>/summary.tsv`` and ``reference.json``; prints the summary table
``python -m neurosel.bin.prune status [cfg] [--sets a,b --lang L --decode-config Y [--decode-root R]] ...``
    exit 0 if every system is built and up to date, 3 if not, 1 on an error; with ``--sets``, the
    same for the systems' decodes
``python -m neurosel.bin.prune table  [cfg] [--sets a,b --decode-root R] <model.pt> <saliency-dir> <fbank> <prune-dir>``
    print the summary table (reference set, removed neurons, parameters, speed-up per system);
    with ``--sets``, the WER of each system's decodes instead
``python -m neurosel.bin.prune decode [cfg] --job J --num-jobs N --lang L --sets a,b --decode-config Y [--decode-root R] ...``
    job J of N: decode every N-th system's ``model.pt`` on the sets into ``R/<system>/<set>/``
    (default R: ``<prune-dir>/../decode``) with the baseline's tuned decode config Y, in this one
    process (the graph and features are loaded once per system, not once per launcher job);
    systems already decoded with the same model and config are skipped. The ``curve_*`` systems
    are decoded on the ``ood_*`` sets only: the pruning curve plots nothing else; the model of
    condition c of a ``condprune_*`` system on ``ood_<c>`` and ``test`` into ``R/<system>/adapted_<c>/<set>/``
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, device_args, job_args, run_main
from neurosel.decode import stage as decode_stage
from neurosel.decode.run import DecodeStageConfig, load_cuts
from neurosel.errors import NeuroselError
from neurosel.device import resolve_device
from neurosel.inference import feature_batches
from neurosel.io import write_json, write_text
from neurosel.recipe import layout
from neurosel.recipe.neuron_table import read_neurons_tsv
from neurosel.recipe.prune_stage import (SUMMARY_HEADER, PruneStageConfig, SystemPlan, build_system, choose_reference,
                                         condition_reference, decode_sets, format_rows, plan_systems, set_reference,
                                         summary_rows)
from neurosel.stage import fingerprint, require, run_once, status, status_code
from neurosel.data.batches import load_cmvn

log = logging.getLogger("neurosel.prune")


def summary(prune_dir: Path, plans: list[SystemPlan], reference: tuple[str, str]) -> str:
    """The reference set, where the speed was measured and the summary table of the built systems."""
    rows = summary_rows(prune_dir, plans)
    speeds = [json.loads((prune_dir / p.folder / "prune.json").read_text(encoding="utf-8"))["speed"] for p in plans]
    where = sorted({f"{s.get('device', 'cpu')} ({s.get('clock', 'process CPU')} time)" for s in speeds})
    per_condition = "; condprune_*: each condition's own ood_adapt_<c>" if any(p.condition for p in plans) else ""
    return (f"reference set: {reference[0]} ({reference[1]}){per_condition}\nspeed measured on {', '.join(where)}\n"
            + format_rows(SUMMARY_HEADER, rows))


def decode_config(args: argparse.Namespace) -> DecodeStageConfig:
    """The baseline's tuned decode config, after checking what decoding the systems needs."""
    if args.lang is None or args.decode_config is None or not args.sets:
        raise NeuroselError(f"action {args.action} with decodes needs --lang, --sets and --decode-config")
    require([args.decode_config, layout.bpe_model(args.lang)])
    return decode_stage.load_decode_config(args.decode_config)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prune", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "work", "merge", "status", "decode", "table"])
    config_args(parser)
    job_args(parser)
    device_args(parser)
    parser.add_argument("--lang", type=Path, help="lang dir (action decode, status of the decodes)")
    parser.add_argument("--sets", default="", help="comma-separated sets to decode (actions decode, list, status, "
                        "table: of the decodes)")
    parser.add_argument("--decode-config", type=Path, help="the baseline's tuned decode.yaml (action decode, status "
                        "of the decodes)")
    parser.add_argument("--decode-root", type=Path, help="default <prune-dir>/../decode")
    parser.add_argument("model", type=Path, help="baseline model.pt")
    parser.add_argument("saliency_dir", type=Path, help="stage 5 output: <ref>/neurons.tsv")
    parser.add_argument("fbank", type=Path, help="stage 1 output (cuts of the speed-test set, cmvn.npz)")
    parser.add_argument("prune_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    device = resolve_device(args.device)
    cfg = C.resolve(PruneStageConfig, args.config, args.overlay, "prune", args.overrides)
    reference = choose_reference(args.saliency_dir, cfg.reference_set)
    table_path = args.saliency_dir / reference[0] / "neurons.tsv"
    table = read_neurons_tsv(table_path)
    conditions = layout.conditions(args.fbank) if cfg.per_condition else []
    if cfg.per_condition and not conditions:
        raise NeuroselError(f"{args.fbank}: per_condition needs OOD adaptation sets (cuts_ood_adapt_<c>), "
                            "there are none")
    # per plan's source (None: the stage's one reference set; a condition; set:<name>): (reference set, why),
    # its neurons.tsv, the table
    references = {None: (reference, table_path, table)}
    for key, ref in [*((c, condition_reference(args.saliency_dir, c)) for c in conditions),
                     *((f"set:{n}", set_reference(args.saliency_dir, n)) for n in cfg.hyper_hypo_from)]:
        path = args.saliency_dir / ref[0] / "neurons.tsv"
        references[key] = (ref, path, read_neurons_tsv(path))
    plans = plan_systems(cfg, list(table.scores), conditions)
    data = [layout.cuts_path(args.fbank, cfg.speed_set), layout.cmvn_path(args.fbank)]
    decode_root = args.decode_root or layout.decode_root(args.prune_dir.parent)
    stage_config = cfg.build_settings()

    def inputs(plan: SystemPlan) -> list[Path]:
        return [args.model, references[plan.source][1], *data]

    def digest_config(plan: SystemPlan) -> dict:
        return {"prune": stage_config, "system": plan.hashed(), "reference": references[plan.source][0][0]}

    if args.action == "list":
        sets = args.sets.split(",") if args.sets else []
        print("\n".join(f"{p.folder}/{s}" for p in plans for s in decode_sets(p, sets)) if sets
              else "\n".join(p.folder for p in plans))
        return 0
    if args.action == "status" and args.sets:
        decode_cfg = decode_config(args)
        todo = [f"{plan.folder}/{name}" for plan in plans
                for name in decode_stage.stale_sets(decode_cfg, args.prune_dir / plan.folder / "model.pt", args.lang,
                                                    args.fbank, decode_root / plan.folder,
                                                    decode_sets(plan, args.sets.split(",")))]
        return status_code("decodes of the pruned systems", decode_root, todo, args.force)
    if args.action == "status":
        require(dict.fromkeys(p for plan in plans for p in inputs(plan)))
        stale = [p.folder for p in plans
                 if status(args.prune_dir / p.folder, fingerprint(digest_config(p), inputs(p))) != "done"]
        return status_code(f"prune (reference set {reference[0]})", args.prune_dir, stale, args.force)
    if args.action == "table":
        if not args.sets:
            print(summary(args.prune_dir, plans, reference))
            return 0
        for plan in plans:
            for name in decode_sets(plan, args.sets.split(",")):
                print(f"{plan.folder + '/' + name:<32} {decode_stage.wer_line(decode_root / plan.folder / name)}")
        return 0
    if args.action == "decode":
        decode_cfg = decode_config(args)
        if not 1 <= args.job <= args.num_jobs:
            raise NeuroselError(f"job {args.job} is not in 1..{args.num_jobs}")
        for plan in plans[args.job - 1::args.num_jobs]:
            decode_stage.decode_here(decode_cfg, args.prune_dir / plan.folder / "model.pt", args.lang, args.fbank,
                                     decode_root / plan.folder, decode_sets(plan, args.sets.split(",")), args.force,
                                     device)
        return 0
    if args.action == "work":
        if not 1 <= args.job <= args.num_jobs:
            raise NeuroselError(f"job {args.job} is not in 1..{args.num_jobs}")
        log.info("reference set %s (%s); speed measured on %s", *reference, device)
        cuts = load_cuts(args.fbank, cfg.speed_set)
        cuts = cuts.subset(cut_ids=sorted(cuts.ids)[:cfg.speed_utterances])
        batches = list(feature_batches(cuts, load_cmvn(layout.cmvn_path(args.fbank)), cfg.max_duration))
        for plan in plans[args.job - 1::args.num_jobs]:
            out = args.prune_dir / plan.folder
            ref, _, ref_table = references[plan.source]
            run_once(f"prune {plan.folder}", out, digest_config(plan), inputs(plan),
                     lambda: build_system(plan, args.model, ref, ref_table, batches, cfg.speed_repeats, out, device),
                     force=args.force)
        return 0
    rows = summary_rows(args.prune_dir, plans)
    write_text(args.prune_dir / "summary.tsv", "\n".join("\t".join(r) for r in [SUMMARY_HEADER, *rows]) + "\n")
    write_json(args.prune_dir / "reference.json", {"reference_set": reference[0], "why": reference[1],
                                                    "per_condition": {c: references[c][0][0] for c in conditions},
                                                    "systems": [p.folder for p in plans]})
    C.save(cfg, args.prune_dir / "config.yaml")
    return 0


if __name__ == "__main__":
    run_main(main)
