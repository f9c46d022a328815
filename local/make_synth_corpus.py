#!/usr/bin/env python3
"""Synthesise the egs/synth corpus: Kaldi data dirs per split under <corpus-dir>/data/.

Usage: local/make_synth_corpus.py --config egs/synth/conf/corpus.yaml [--overlay egs/synth/conf/tiny.yaml]
           [--set key=value ...] [--nj 2] [--seed N] [--quiet] <corpus-dir>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurosel.cli import config_args, run_main  # noqa: E402
from neurosel.config import resolve  # noqa: E402
from neurosel.synth.config import CorpusConfig  # noqa: E402
from neurosel.synth.corpus import make_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--nj", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--seed", type=int, help="overrides the config's seed")
    parser.add_argument("corpus_dir", help="output folder (wav/, data/<split>/, manifest.json)")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = resolve(CorpusConfig, args.config, args.overlay, "corpus", overrides)
    make_corpus(cfg, args.corpus_dir, nj=args.nj, quiet=args.quiet)
    return 0


if __name__ == "__main__":
    run_main(main)
