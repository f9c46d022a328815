"""Is this audio like the training data? Shift scores, predicted WER and a verdict (issue 18):

``python -m neurosel.bin.shift fit [--out DIR] [--level 0.9] [--ridge 0] <work-dir>``
    measure the shift signals of dev, test and every ood_<c> with a baseline WER, judge WER
    predictors leave-one-condition-out, fit the best; writes exp/shift/{signals.tsv,
    evaluation.json, predictor.json} (or into --out) and prints the comparison
``python -m neurosel.bin.shift score [--predictor exp/shift/predictor.json] <work-dir> <data> <out-dir>``
    ``<data>``: an unlabeled Kaldi data dir (wav.scp, optionally segments) or a Lhotse cut set;
    writes <out-dir>/{utterances.tsv, summary.json, shift.png} and prints the verdict line

``python -m neurosel.bin.shift severity [--config conf/severity.yaml] [--force] <work-dir>``
    (opt-in) build and decode the severity sets of ``neurosel.recipe.severity``; ``fit --severity``
    then fits and judges on them too
``python -m neurosel.bin.shift status [--severity] [--severity-config C] [--out DIR] <work-dir>``
    the stage protocol: exit 0 when fit (and, with --severity-config, the severity sets) is up
    to date, 3 when there is work to do, 1 on an error

``--device auto|cpu|cuda[:N]`` (before the action): where the model runs (``auto``: a CUDA device
if PyTorch sees one); the signals and the search stay on the CPU. ``neurosel.recipe.shift`` says
what each file holds. Errors (exit 1, one line naming the file): a
missing reference (exp/saliency/dev/stats.pt), a reference of another model, an empty data dir or
cut set, a missing predictor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neurosel.cli import device_args, run_main
from neurosel.device import resolve_device
from neurosel.recipe.severity import SeverityFiles, build_severity_sets, load_severity_config
from neurosel.recipe.severity import stale as stale_severity_sets
from neurosel.recipe.shift import RecipeFiles, evaluation_table, fit_recipe, fit_status
from neurosel.recipe.shift_score import score_audio
from neurosel.stage import status_code, why_redo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shift", description=__doc__.splitlines()[0])
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads")
    device_args(parser)
    sub = parser.add_subparsers(dest="action", required=True)
    fit = sub.add_parser("fit", help="measure, judge and fit the WER predictor of a recipe run")
    fit.add_argument("--out", type=Path, help="output dir (default <work-dir>/exp/shift)")
    fit.add_argument("--level", type=float, default=0.9, help="prediction interval level")
    fit.add_argument("--ridge", type=float, default=0.0, help="ridge penalty of the fits (0: least squares)")
    fit.add_argument("--severity", action="store_true", help="also fit and judge on the built severity sets")
    fit.add_argument("workdir", type=Path)
    severity = sub.add_parser("severity", help="build and decode the severity sets (opt-in)")
    severity.add_argument("--config", type=Path, help="severity config (default: neurosel.recipe.severity's)")
    severity.add_argument("--force", action="store_true", help="rebuild even if up to date")
    severity.add_argument("workdir", type=Path)
    status = sub.add_parser("status", help="exit 0 when up to date, 3 when there is work to do, 1 on an error")
    status.add_argument("--out", type=Path, help="fit's output dir (default <work-dir>/exp/shift)")
    status.add_argument("--level", type=float, default=0.9)
    status.add_argument("--ridge", type=float, default=0.0)
    status.add_argument("--severity", action="store_true", help="fit includes the severity sets")
    status.add_argument("--severity-config", type=Path, help="also check the severity sets of this config")
    status.add_argument("workdir", type=Path)
    score = sub.add_parser("score", help="shift scores, predicted WER and verdict of a data dir or cut set")
    score.add_argument("--predictor", type=Path, help="predictor.json (default <work-dir>/exp/shift/predictor.json)")
    score.add_argument("workdir", type=Path)
    score.add_argument("data", type=Path, help="Kaldi data dir or Lhotse cuts (.jsonl.gz)")
    score.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    if args.action == "status":
        return shift_status(args)
    device = resolve_device(args.device)
    if args.action == "severity":
        build_severity_sets(args.workdir, load_severity_config(args.config), args.force, device)
    elif args.action == "fit":
        print(evaluation_table(fit_recipe(args.workdir, args.out, args.ridge, args.level, args.severity, device)))
    else:
        summary = score_audio(args.workdir, args.data, args.out_dir, args.predictor, device)
        print(f"{args.data}: {summary['verdict']}")
    return 0


def shift_status(args: argparse.Namespace) -> int:
    """The stage protocol's exit code for ``fit`` (and the severity sets of ``--severity-config``)."""
    todo = []
    if args.severity_config is not None:
        todo += stale_severity_sets(SeverityFiles(args.workdir), load_severity_config(args.severity_config))
    out = args.out if args.out is not None else RecipeFiles(args.workdir).shift
    state = "new" if todo else fit_status(args.workdir, args.out, args.ridge, args.level, args.severity)
    if state != "done":
        todo.append("fit")
    return status_code("shift", out, todo, why=why_redo(state))


if __name__ == "__main__":
    run_main(main)
