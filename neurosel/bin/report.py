"""Stage 8: ``python -m neurosel.bin.report [--recipe NAME] [--seed N] [--copy-to RESULTS.md] <work-dir>``.

Collects every scored decode dir under ``<work-dir>/exp/decode`` with the saliency and pruning
outputs into ``exp/results.json``, ``exp/RESULTS.md`` and ``exp/plots/``; ``--copy-to`` also
writes the tables (and the plots and results.json beside them) to a tracked file such as
``egs/synth/RESULTS.md``. ``--also NAME=results.json`` (repeatable) adds the claims of a run with
another FC activation to the dashboard; by default ``results_<activation>/results.json`` beside
``--copy-to`` for each FC activation the model offers (e.g. ``egs/synth/results_sigmoid/``; such a
folder without one is reported as having no results.json).
Prints the findings (RESULTS.md's "What the data say") to stdout.
"""

from __future__ import annotations

import argparse
import logging
from typing import get_args, get_type_hints
from pathlib import Path

from neurosel.cli import run_main
from neurosel.model.cnn import ModelConfig
from neurosel.report.build import build_report
from neurosel.report.rejoin import sibling_results

log = logging.getLogger("neurosel.report")
ACTIVATIONS = get_args(get_type_hints(ModelConfig)["fc_activation"])


def parse_also(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, Path]:
    """``--also NAME=results.json`` values as ``{NAME: path}``."""
    others = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"--also {item!r}: expected NAME=path/to/results.json")
        others[name] = Path(path)
    return others


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report", description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="synth")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--command", default="./run.sh", help="the command that produced the run")
    parser.add_argument("--copy-to", type=Path, help="also write RESULTS.md (and plots/) here")
    parser.add_argument("--also", action="append", default=None, metavar="NAME=RESULTS_JSON",
                        help="another activation's results.json for the claims dashboard")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args(argv)
    repo = Path(__file__).resolve().parents[2]
    others = parse_also(parser, args.also or [])
    if args.also is None and args.copy_to is not None:
        others = sibling_results(args.copy_to, ACTIVATIONS)
    doc, findings = build_report(args.workdir, args.recipe, args.seed, args.command, repo, args.copy_to, others)
    print("\n".join(f"- {line}" for line in findings))
    log.info("%d systems on %d test sets -> %s", len(doc["systems"]), len(doc["test_sets"]),
             args.workdir / "exp" / "RESULTS.md")
    return 0


if __name__ == "__main__":
    run_main(main)
