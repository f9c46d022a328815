"""Is this audio like the training data? Shift scores, predicted WER and a verdict (issue 18):

``python -m neurosel.bin.shift fit [--out DIR] [--level 0.9] [--ridge 0] <work-dir>``
    measure the shift signals of dev, test and every ood_<c> with a baseline WER, judge WER
    predictors leave-one-condition-out, fit the best; writes exp/shift/{signals.tsv,
    evaluation.json, predictor.json} (or into --out) and prints the comparison
``python -m neurosel.bin.shift score [--predictor exp/shift/predictor.json] <work-dir> <data> <out-dir>``
    ``<data>``: an unlabeled Kaldi data dir (wav.scp, optionally segments) or a Lhotse cut set;
    writes <out-dir>/{utterances.tsv, summary.json, shift.png} and prints the verdict line

``neurosel.recipe.shift`` says what each file holds. Errors (exit 1, one line naming the file): a
missing reference (exp/saliency/dev/stats.pt), a reference of another model, an empty data dir or
cut set, a missing predictor.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from neurosel.cli import run_main
from neurosel.recipe.shift import evaluation_table, fit_recipe, score_audio


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shift", description=__doc__.splitlines()[0])
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads")
    sub = parser.add_subparsers(dest="action", required=True)
    fit = sub.add_parser("fit", help="measure, judge and fit the WER predictor of a recipe run")
    fit.add_argument("--out", type=Path, help="output dir (default <work-dir>/exp/shift)")
    fit.add_argument("--level", type=float, default=0.9, help="prediction interval level")
    fit.add_argument("--ridge", type=float, default=0.0, help="ridge penalty of the fits (0: least squares)")
    fit.add_argument("workdir", type=Path)
    score = sub.add_parser("score", help="shift scores, predicted WER and verdict of a data dir or cut set")
    score.add_argument("--predictor", type=Path, help="predictor.json (default <work-dir>/exp/shift/predictor.json)")
    score.add_argument("workdir", type=Path)
    score.add_argument("data", type=Path, help="Kaldi data dir or Lhotse cuts (.jsonl.gz)")
    score.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    if args.action == "fit":
        print(evaluation_table(fit_recipe(args.workdir, args.out, args.ridge, args.level)))
    else:
        summary = score_audio(args.workdir, args.data, args.out_dir, args.predictor)
        print(f"{args.data}: {summary['verdict']}")
    return 0


if __name__ == "__main__":
    run_main(main)
