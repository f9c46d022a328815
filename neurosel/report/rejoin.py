"""Join the claims of runs with another FC activation into an existing report's dashboard, from
their ``results.json`` files alone, without the report's work dir.

Stage 8 builds the dashboard from its own run's ``results.json`` and the other activations'
(``results_<activation>/results.json`` beside the tracked ``RESULTS.md``). When one arm of a study
is rerun on its own (another machine, a cluster job, a later session) and the other arm's work dir
is gone, ``rejoin_dashboard`` rebuilds the dashboard rows the same way (``claim_rows`` of each
document), rewrites ``results.json["claims"]`` and the ``## Claims dashboard`` section of
``RESULTS.md``, and says in that section which files were joined when. Every other section is left
byte for byte as stage 8 wrote it.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from neurosel.errors import NeuroselError
from neurosel.io import write_json, write_text
from neurosel.report.claims import DASHBOARD_NOTE, ClaimRow, claim_rows, dashboard_section, rows_json

DASHBOARD = "## Claims dashboard\n"
FINDINGS = "## What the data say\n"  # the section stage 8 writes after the dashboard
NEXT = "\n" + FINDINGS


def sibling_results(results_md: Path, activations: tuple[str, ...]) -> dict[str, Path]:
    """``{activation: results_<activation>/results.json}`` for each activation with such a folder
    beside ``results_md`` (stage 8's default for ``--also``)."""
    return {act: results_md.parent / f"results_{act}" / "results.json" for act in activations
            if (results_md.parent / f"results_{act}").is_dir()}


def read_results(path: Path) -> dict | None:
    """A ``results.json`` document, None where the file is missing; a one-line error where it is not
    a report's ``results.json``."""
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NeuroselError(f"{path}: not a readable results.json ({e})") from e
    if not isinstance(doc, dict) or "systems" not in doc:
        raise NeuroselError(f"{path}: not a stage 8 results.json (no 'systems')")
    return doc


def other_rows(doc: dict | None, activation: str, path: Path, report_dir: Path) -> list[ClaimRow]:
    """The dashboard rows of another activation's run (``doc``, read from ``path``) in a report
    written to ``report_dir``: each row links to its table in that run's own ``RESULTS.md`` beside
    its ``results.json``, not to this report's table of the same name."""
    target = os.path.relpath(Path(path).parent / "RESULTS.md", report_dir)
    return [replace(r, anchor=target + r.anchor) if r.anchor else r for r in claim_rows(doc, activation)]


def dashboard_text(rows: list[ClaimRow], joined: str = "") -> str:
    """The dashboard section as stage 8 writes it (heading, table, note), with ``joined`` (a line
    saying which runs were joined when) after the note."""
    return "\n".join([DASHBOARD, dashboard_section(rows), DASHBOARD_NOTE] + ([joined] if joined else []))


def rejoin_dashboard(results_md: Path, others: dict[str, Path], now: datetime | None = None) -> list[ClaimRow]:
    """Rebuild the dashboard of ``results_md`` (and ``results.json`` beside it) from that run's
    ``results.json`` and ``others`` (``{activation: results.json}``); returns the rows. Every input
    is read and checked, and both new texts built, before either file is written (each atomically)."""
    own_path = results_md.parent / "results.json"
    doc = read_results(own_path)
    if doc is None:
        raise NeuroselError(f"{own_path}: missing (the dashboard is rebuilt from the run's results.json beside {results_md.name})")
    activation = doc.get("activation")
    if not activation:
        raise NeuroselError(f"{own_path}: no 'activation' (a report older than the claims dashboard; rerun its stage 8)")
    if activation in others:
        raise NeuroselError(f"{own_path}: is the {activation} run itself; join runs with another activation")
    try:
        text = results_md.read_text()
    except OSError as e:
        raise NeuroselError(f"{results_md}: cannot read ({e.strerror})") from e
    start, end = text.find(DASHBOARD), text.find(NEXT)
    if start < 0 or end < start:
        raise NeuroselError(f"{results_md}: no '{DASHBOARD.strip()}' section followed by '{NEXT.strip()}' "
                            "(not a stage 8 RESULTS.md)")
    rows = claim_rows(doc, activation)
    for name, path in others.items():
        rows += other_rows(read_results(path), name, path, results_md.parent)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y-%m-%d %H:%M")
    joined = (f"Rows of {', '.join(others)} joined on {stamp} UTC from "
              + ", ".join(f"`{_shown(p, results_md)}`" for p in others.values())
              + " (`neurosel.bin.dashboard`); the rest of this report is its stage 8's.\n") if others else ""
    doc["claims"] = rows_json(rows)
    new_text = text[:start] + dashboard_text(rows, joined) + text[end:]
    write_json(own_path, doc)
    write_text(results_md, new_text)
    return rows


def _shown(path: Path, results_md: Path) -> str:
    """``path`` relative to the report's folder where it lies under it."""
    try:
        return str(Path(path).resolve().relative_to(results_md.parent.resolve()))
    except ValueError:
        return str(path)
