"""Stage 7, unsupervised adaptation, as units of work that ``steps/adapt.sh`` fans out (the stage
protocol of ``neurosel.stage``; the work is ``neurosel.recipe.adapt_units`` and ``adapt_plan``):

``python -m neurosel.bin.adapt list    [cfg] --seed S <model.pt> <lang> <fbank> <exp-dir>``
    print the units, one per line (``<system-dir> <condition>``)
``python -m neurosel.bin.adapt status  [cfg] --seed S --decode-config Y <model.pt> <lang> <fbank> <exp-dir>``
    exit 0 if every score file, search and unit is done (adapted, decoded) and up to date, 3 if
    not, 1 on an error
``python -m neurosel.bin.adapt scores  [cfg] --seed S <model.pt> <lang> <fbank> <exp-dir>``
    with a ``*_shift<NN>`` system configured, each adaptation set's per-utterance shift score
    into ``<exp-dir>/adapt/shift_scores/<set>/`` unless up to date (``neurosel.recipe.adapt_shift``;
    needs ``<saliency-dir>/dev/stats.pt``); nothing otherwise
``python -m neurosel.bin.adapt pending [cfg] --seed S --what tunes|units [--decode-config Y] ...``
    plan the jobs left to run into ``<exp-dir>/adapt/log/pending.<what>`` and print their number
    N: a job is a learning-rate search (``lr_search: system``) that is not up to date, or the units
    of one (system, seed) that are not (its conditions run in one process)
``python -m neurosel.bin.adapt tune    [cfg] --seed S (--job J | --unit U) <model.pt> <lang> <fbank> <exp-dir>``
    the searches of planned job J of N (``JOB=1:N``), or search U of ``systems`` + ``pooled_systems``,
    into ``<exp-dir>/adapt/lr/<system>/`` unless up to date
``python -m neurosel.bin.adapt unit    [cfg] --seed S (--job J | --unit U) --decode-config Y ...``
    the units of planned job J of N, or unit U: adapt (``<exp-dir>/adapt/...``) unless up to date,
    then decode its sets (``<exp-dir>/decode/...``) with the decode config Y unless up to date
``python -m neurosel.bin.adapt table   [cfg] --seed S <model.pt> <lang> <fbank> <exp-dir>``
    print WER per system and set, mean +- std over seeds, from the decode dirs

Pseudo-labels are read from ``--pseudo-dir`` (default ``<exp-dir>/decode/baseline``, the
baseline's decode of ``ood_adapt_<c>``), neurons from ``--saliency-dir`` (default
``<exp-dir>/saliency``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, device_args, run_main
from neurosel.decode.stage import load_decode_config
from neurosel.device import resolve_device
from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.recipe.adapt_plan import (pending_jobs, planned_indices, run_and_decode, tune_done, unit_done,
                                        wer_table, write_plan)
from neurosel.recipe.adapt_shift import run_scores, scores_done, shift_sets
from neurosel.recipe.adapt_systems import AdaptConfig
from neurosel.recipe.adapt_units import StagePaths, list_units, run_tune, tune_units
from neurosel.stage import require, status_code

log = logging.getLogger("neurosel.adapt")


def chosen_indices(args: argparse.Namespace, adapt_root: Path, count: int) -> list[int]:
    """The 0-based indices of the searches or units this process runs: those of planned job
    ``--job`` of ``pending --what <tunes|units>``, or ``--unit`` itself."""
    if args.job is not None:
        return planned_indices(layout.pending_jobs_path(adapt_root, "tunes" if args.action == "tune" else "units"),
                               args.job, count)
    if not 1 <= args.unit <= count:
        raise NeuroselError(f"unit {args.unit} is not in 1..{count}")
    return [args.unit - 1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adapt", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "status", "pending", "scores", "tune", "unit", "table"])
    config_args(parser)
    parser.add_argument("--seed", type=int, default=42, help="first seed; seeds are seed..seed+num_seeds-1")
    parser.add_argument("--job", type=int, help="planned job J (actions tune and unit; see pending)")
    parser.add_argument("--unit", type=int, default=0, help="1-based index of one search or unit (tune, unit)")
    parser.add_argument("--what", choices=["tunes", "units"], default="units", help="action pending: of which")
    parser.add_argument("--decode-config", type=Path, help="the tuned decode config of the baseline")
    parser.add_argument("--saliency-dir", type=Path, help="default <exp-dir>/saliency")
    parser.add_argument("--pseudo-dir", type=Path, help="default <exp-dir>/decode/baseline")
    parser.add_argument("--force", action="store_true")
    device_args(parser)
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("exp_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = C.resolve(AdaptConfig, args.config, args.overlay, "adapt", args.overrides)
    paths = StagePaths(model=args.model, lang=args.lang, fbank=args.fbank,
                       saliency=args.saliency_dir or layout.saliency_dir(args.exp_dir),
                       pseudo=args.pseudo_dir or layout.decode_dir(args.exp_dir, layout.BASELINE),
                       adapt=layout.adapt_dir(args.exp_dir), decode=layout.decode_root(args.exp_dir),
                       device=resolve_device(args.device))
    conditions = layout.conditions(args.fbank)
    if not conditions:
        raise NeuroselError(f"{args.fbank}: no {layout.cuts_name(layout.adapt_set('<condition>'))} "
                            "(nothing to adapt to)")
    units = list_units(cfg, conditions, args.seed)
    tunes = tune_units(cfg, args.seed)
    scored = shift_sets(cfg.systems + cfg.pooled_systems, [layout.adapt_set(c) for c in conditions])

    if args.action == "list":
        print("\n".join(f"{u.model_dir(paths.adapt).relative_to(paths.adapt)} {u.condition}" for u in units))
        return 0
    if args.action == "table":
        print(wer_table(units, paths, conditions))
        return 0
    if args.action == "scores":
        for set_name in scored:
            run_scores(set_name, paths, cfg, args.force)
        return 0
    if args.action == "tune":
        for index in chosen_indices(args, paths.adapt, len(tunes)):
            log.info("learning-rate search %d of %d: %s", index + 1, len(tunes), tunes[index].system)
            run_tune(tunes[index], paths, cfg, conditions, args.force)
        return 0
    if args.action == "pending" and args.what == "tunes":
        todo = [[i + 1] for i, u in enumerate(tunes) if args.force or not tune_done(u, paths, cfg, conditions)]
        print(write_plan(layout.pending_jobs_path(paths.adapt, "tunes"), todo))
        return 0
    if args.decode_config is None:
        raise NeuroselError(f"action {args.action} needs --decode-config (the baseline's tuned decode.yaml)")
    decode_cfg = load_decode_config(args.decode_config)
    if args.action == "pending":
        todo = [args.force or not unit_done(u, paths, cfg, conditions, decode_cfg) for u in units]
        print(write_plan(layout.pending_jobs_path(paths.adapt, "units"), pending_jobs(units, todo)))
        return 0
    if args.action == "status":
        require([args.model, layout.bpe_model(args.lang), layout.cmvn_path(args.fbank), args.decode_config])
        todo = [f"shift scores of {s}" for s in scored if not scores_done(s, paths, cfg)]
        todo += [f"learning rates of {u.system}" for u in tunes if not tune_done(u, paths, cfg, conditions)]
        todo += [f"{u.name} on {u.condition}" for u in units if not unit_done(u, paths, cfg, conditions, decode_cfg)]
        return status_code(f"adapt ({len(scored)} score files, {len(tunes)} searches, {len(units)} units)",
                           paths.adapt, todo, args.force)
    for index in chosen_indices(args, paths.adapt, len(units)):
        log.info("unit %d of %d: %s on %s", index + 1, len(units), units[index].name, units[index].condition)
        run_and_decode(units[index], paths, cfg, conditions, decode_cfg, args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
