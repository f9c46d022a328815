#!/usr/bin/env python3
"""Prepare the egs/librispeech splits under <work-dir>/corpus (see neurosel.corpora.librispeech).

Usage: egs/librispeech/local/prepare_librispeech.py --config egs/librispeech/conf/corpus.yaml
           [--overlay egs/librispeech/conf/tiny.yaml] [--set key=value ...] [--seed N] [--nj N]
           [--force] <work-dir>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from neurosel.cli import config_args, run_main  # noqa: E402
from neurosel.config import resolve  # noqa: E402
from neurosel.corpora.librispeech import LibriSpeechConfig, prepare_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--nj", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument("--force", action="store_true", help="redo every split")
    parser.add_argument("work_dir", help="the recipe's work dir (relative paths of the config start here)")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = resolve(LibriSpeechConfig, args.config, args.overlay, "corpus", overrides)
    prepare_corpus(cfg, args.work_dir, num_jobs=args.nj, force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
