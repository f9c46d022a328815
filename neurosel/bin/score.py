"""Scoring: ``python -m neurosel.bin.score <ref-text> <hyp-text> <out-dir>``.

Aligns each reference transcript with its hypothesis (kaldialign) and writes ``ref.txt``,
``hyp.txt``, ``errs.txt`` and ``wer`` into ``<out-dir>``; prints the ``%WER`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurosel.cli import run_main
from neurosel.score import read_text, score


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="score", description=__doc__.splitlines()[0])
    parser.add_argument("ref_text", type=Path, help="Kaldi text file of reference transcripts")
    parser.add_argument("hyp_text", type=Path, help="Kaldi text file of hypotheses")
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    result = score(read_text(args.ref_text), read_text(args.hyp_text), args.out_dir)
    print(result.line())
    return 0


if __name__ == "__main__":
    run_main(main)
