"""``python -m neurosel.bin.dashboard [--also NAME=results.json ...] <RESULTS.md>``: join the claims of
runs with another FC activation into a report's claims dashboard from their ``results.json``
alone, without the report's work dir.

For a study whose arms ran apart (the sigmoid arm rerun on another machine, a cluster, a later
day): stage 8 of one arm wrote ``RESULTS.md`` and ``results.json``; this rebuilds the dashboard
rows of both (``results.json["claims"]`` and the ``## Claims dashboard`` section; every other
section unchanged). ``--also`` defaults to ``results_<activation>/results.json`` beside
``RESULTS.md``, like stage 8's.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurosel.bin.report import ACTIVATIONS, parse_also
from neurosel.cli import run_main
from neurosel.errors import NeuroselError
from neurosel.report.rejoin import rejoin_dashboard, sibling_results

log = logging.getLogger("neurosel.dashboard")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--also", action="append", default=None, metavar="NAME=RESULTS_JSON",
                        help="another activation's results.json (default: results_<activation>/ beside RESULTS.md)")
    parser.add_argument("results_md", type=Path, help="a stage 8 RESULTS.md with results.json beside it")
    args = parser.parse_args(argv)
    if not args.results_md.is_file():
        raise NeuroselError(f"{args.results_md}: no such file")
    others = (parse_also(parser, args.also) if args.also is not None
              else sibling_results(args.results_md, ACTIVATIONS))
    rows = rejoin_dashboard(args.results_md, others)
    for r in rows:
        print(f"{r.claim}\t{r.activation}\t{r.protocol}\t{r.verdict}")
    log.info("%d dashboard rows (%s) -> %s", len(rows), ", ".join(sorted({r.activation for r in rows})),
             args.results_md)
    return 0


if __name__ == "__main__":
    run_main(main)
