"""Test-time adaptation of a recipe's model, one utterance at a time (``neurosel.recipe.tta``).

    python -m neurosel.bin.tta [--config conf/tta.yaml] --moves selective --mode episodic
        [--source running|condition] [--seed N] [--target ood_noise|test|stream20]
        <model.pt> <lang-dir> <fbank-dir> <exp-dir>

Writes ``<exp-dir>/decode/<system>/<target>/`` (hyp.txt, ref.txt, errs.txt, wer, progress.tsv,
tta.json) with ``<system>`` = ``tta_<moves>_<mode>[_<source>][.s<seed>]``, resuming a killed run;
needs stage 4's tuned ``<exp-dir>/decode/baseline/decode.yaml`` and, for ``--source
condition``, stage 5's ``<exp-dir>/saliency/ood_adapt_<c>/neurons.tsv``. Prints the WER line and
the CPU cost per second of audio.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, run_main
from neurosel.io import write_json
from neurosel.recipe import layout
from neurosel.recipe.tta import MOVES, TtaRun, TtaStageConfig, run_tta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tta", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--moves", choices=MOVES, required=True, help="which parameters adapt")
    parser.add_argument("--mode", choices=["episodic", "continual"], required=True)
    parser.add_argument("--source", choices=["running", "condition"], default="running",
                        help="where the hyper/hypo neurons of --moves selective come from")
    parser.add_argument("--seed", type=int, default=1, help="seed of --moves random (and torch)")
    parser.add_argument("--target", default="stream20", help="an ood_<c> or test set, or stream<segment>")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads")
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("exp", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.num_threads)
    cfg = C.resolve(TtaStageConfig, args.config, args.overlay, "tta", args.overrides)
    run = TtaRun(args.moves, args.mode, args.source, args.seed, args.target)
    out_dir = layout.decode_dir(args.exp, run.system) / run.target
    summary = run_tta(run, cfg, args.model, args.lang, args.fbank,
                      layout.decode_dir(args.exp, layout.BASELINE) / "decode.yaml",
                      layout.saliency_dir(args.exp), out_dir)
    write_json(out_dir / "tta.json", {**summary, "config": C.to_dict(cfg)})
    print(json.dumps({k: summary[k] for k in ("system", "wer", "adapt_cpu_per_audio_second",
                                              "search_cpu_per_audio_second")}))
    return 0


if __name__ == "__main__":
    run_main(main)
