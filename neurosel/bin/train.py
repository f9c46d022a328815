"""Stage 3: ``python -m neurosel.bin.train [--config conf/train.yaml] [--overlay conf/tiny.yaml]
[--set key=value] [--seed N] [--quiet] <fbank-dir> <lang-dir> <exp-dir>``.

Trains the CNN CTC model on ``<fbank-dir>/cuts_train.jsonl.gz`` (validating on ``cuts_dev``) with
targets from ``<lang-dir>/bpe.model`` and CMVN from ``<fbank-dir>/cmvn.npz``. Resumes from the
newest ``<exp-dir>/checkpoint-*.pt`` when there is one; writes ``<exp-dir>/model.pt`` at the end.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, run_main, show_progress
from neurosel.errors import NeuroselError
from neurosel.stage import clear, fingerprint, mark_done, status
from neurosel.train import TrainConfig, train
from neurosel.train.checkpoint import list_checkpoints

log = logging.getLogger("neurosel.train")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    parser.add_argument("--force", action="store_true", help="train again from scratch even if up to date")
    parser.add_argument("fbank_dir", type=Path, help="stage 1 output: cuts_{train,dev}.jsonl.gz, cmvn.npz")
    parser.add_argument("lang_dir", type=Path, help="stage 2 output: bpe.model")
    parser.add_argument("exp_dir", type=Path, help="output: checkpoints, model.pt, logs")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = C.resolve(TrainConfig, args.config, args.overlay, "train", overrides)
    inputs = [args.fbank_dir / "cuts_train.jsonl.gz", args.fbank_dir / "cuts_dev.jsonl.gz",
              args.fbank_dir / "cmvn.npz", args.lang_dir / "bpe.model"]
    for path in inputs:
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (run the earlier stages first)")
    digest = fingerprint(C.to_dict(cfg), inputs)
    state = status(args.exp_dir, digest)
    if state == "done" and not args.force:
        log.info("stage 3 (train): up to date in %s, skipping (use --force to redo)", args.exp_dir)
        return 0
    if state == "stale" or args.force:
        # a finished model of another config: its checkpoints cannot be resumed, start afresh
        log.info("stage 3 (train): %s; removing the old checkpoints and training from scratch",
                 "--force given" if args.force else "config or inputs changed since the last run")
        for old in list_checkpoints(args.exp_dir) + [args.exp_dir / "model.pt"]:
            old.unlink(missing_ok=True)
    clear(args.exp_dir)  # a killed run (no marker) resumes from its newest checkpoint
    train(cfg, inputs[0], inputs[1], args.lang_dir, inputs[2], args.exp_dir, quiet=not show_progress(args))
    mark_done(args.exp_dir, digest, stage="train")
    return 0


if __name__ == "__main__":
    run_main(main)
