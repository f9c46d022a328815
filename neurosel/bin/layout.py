"""On-disk names for the shell, from ``neurosel.recipe.layout`` (so ``run.sh`` and ``steps/*.sh``
never list or parse file names themselves):

``python -m neurosel.bin.layout test-sets  <fbank-dir>``  the test sets (``test``, ``ood_<c>``), comma-separated
``python -m neurosel.bin.layout adapt-sets <fbank-dir>``  the adaptation sets (``ood_adapt_<c>``), comma-separated

Each exits 1 with a one-line error when ``<fbank-dir>`` has no such set.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurosel.cli import run_main
from neurosel.errors import NeuroselError
from neurosel.recipe import layout

QUERIES = {"test-sets": (layout.test_sets, "test sets (test, ood_<condition>)"),
           "adapt-sets": (layout.adapt_sets, "adaptation sets (ood_adapt_<condition>)")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="layout", description=__doc__.splitlines()[0])
    parser.add_argument("query", choices=sorted(QUERIES))
    parser.add_argument("fbank_dir", type=Path, help="stage 1 output: cuts_<split>.jsonl.gz")
    args = parser.parse_args(argv)
    find, what = QUERIES[args.query]
    names = find(args.fbank_dir)
    if not names:
        raise NeuroselError(f"{args.fbank_dir}: no {what} among its {layout.cuts_name('<split>')} (run stage 1)")
    print(",".join(names))
    return 0


if __name__ == "__main__":
    run_main(main)
