"""``bench/results.json`` (every section's latest measurement) and ``bench/RESULTS.md`` rendered
from it and from the recorded runs in ``bench/history/*.json`` (before/after comparisons).

A run of some sections (``--only``) replaces those sections and keeps the others, each with the
date, machine snapshot and load of the run that measured it.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench.common import Section, fmt
from neurosel.io import write_text

ORDER = ["features", "train", "saliency", "decode", "prune", "tta", "e2e", "scaling", "cluster"]


def merge_results(path: Path, sections: list[Section], machine: dict[str, Any], command: str) -> dict[str, Any]:
    """The results file at ``path`` (if any) with ``sections`` replaced by this run's; written back."""
    doc = json.loads(path.read_text()) if path.is_file() else {"sections": {}}
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    for s in sections:
        doc["sections"][s.name] = s.to_dict() | {"date": now, "machine": machine, "command": command}
    doc["sections"] = {k: doc["sections"][k] for k in ORDER if k in doc["sections"]}
    write_text(path, json.dumps(doc, indent=1) + "\n")
    return doc


def record(doc: dict[str, Any], names: list[str], path: Path, note: str) -> None:
    """Save the metrics of sections ``names`` of ``doc`` as a history record (before/after)."""
    metrics = {m["key"]: m for name in names for m in doc["sections"][name]["metrics"]}
    any_section = doc["sections"][names[0]]
    write_text(path, json.dumps({"name": path.stem, "note": note, "date": any_section["date"],
                                 "load_average": any_section["load_start"], "metrics": metrics}, indent=1) + "\n")


def _met(met: bool | None) -> str:
    return {True: "yes", False: "**no**", None: "-"}[met]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render(doc: dict[str, Any], history: list[dict[str, Any]]) -> str:
    """RESULTS.md text for a results document and the history records (oldest first)."""
    sections = doc["sections"]
    lines = ["# Benchmarks", "",
             "Written by `python -m bench.run` (`make bench`): every number here comes from a run on the "
             "machine described below; rerun rather than edit. Each measurement is a ratio against a "
             "reference timed in the same run, interleaved with it (medians of alternating repeats), "
             "so that machine load cancels as far as it can; the load averages say how busy the "
             "machine was.", ""]
    if sections:
        m = next(iter(sections.values()))["machine"]
        lines += ["## Machine", "",
                  f"{m['cores']} cores ({m['usable_cores']} usable), {m['cpu_model'] or 'unknown CPU'}; "
                  f"Python {m['python']}, torch {m['torch']}; benchmarks ran at nice {m['nice']}.", ""]
        rows = [[name, s["date"], str(s["threads"] or "children"),
                 " / ".join(f"{x:.2f}" for x in s["load_start"]), " / ".join(f"{x:.2f}" for x in s["load_end"]),
                 f"{s['seconds']:.0f}"] for name, s in sections.items()]
        lines += _table(["section", "measured", "torch threads", "load avg 1/5/15 min at start",
                         "at end", "took s"], rows) + [""]
        lines += ["## Targets", ""]
        rows = [[s["title"], x["name"], fmt(x["value"]) + (f" {x['unit']}" if x["unit"] else ""), x["target"] or "-",
                 _met(x["met"])] for s in sections.values() for x in s["metrics"]]
        lines += _table(["benchmark", "measure", "value", "target", "met"], rows) + [""]
    for s in sections.values():
        lines += [f"## {s['title']}", ""]
        lines += [f"- {x['name']}: **{fmt(x['value'])}**{' ' + x['unit'] if x['unit'] else ''}"
                  + (f" (target {x['target']})" if x["target"] else "") for x in s["metrics"]]
        lines += [""]
        if s["table"]:
            lines += _table(s["table_header"], s["table"]) + [""]
        lines += [f"{note}" for note in s["notes"]] + [""]
        lines += [f"Command: `{s['command']}`.", ""]
    if history:
        lines += ["## Before and after", "",
                  "Recorded runs (`python -m bench.run --record NAME --note TEXT`, in `bench/history/`), "
                  "oldest first, then the latest measurement of each number.", ""]
        keys = []
        for h in history:
            keys += [k for k in h["metrics"] if k not in keys]
        latest = {x["key"]: x for s in sections.values() for x in s["metrics"]}
        rows = []
        for key in keys:
            ref = next(h["metrics"][key] for h in history if key in h["metrics"])
            rows.append([ref["name"], *(fmt(h["metrics"][key]["value"]) if key in h["metrics"] else "-"
                                        for h in history),
                         fmt(latest[key]["value"]) if key in latest else "-", ref["target"] or "-"])
        lines += _table(["measure", *(h["name"] for h in history), "latest", "target"], rows) + [""]
        lines += [f"- `{h['name']}` ({h['date']}, load {' / '.join(f'{x:.2f}' for x in h['load_average'])}): "
                  f"{h['note']}" for h in history] + [""]
    return "\n".join(lines)


def load_history(folder: Path) -> list[dict[str, Any]]:
    """The history records in ``folder``, oldest first."""
    records = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: (r["date"], r["name"]))
