"""The TTA table of an exp dir (``python -m neurosel.bin.tta report``), read from the runs' files.

Every finished run ``<exp>/decode/tta_*/<target>/`` (``tta.json`` and ``errs.txt``, marked done)
is a cell: WER of one system on one target. The unadapted model and, with ``stage7``, stage 7's
per-condition systems are scored on the same utterances (their ``errs.txt`` restricted to the
utterances the TTA runs decoded), so a table from a subset of a test set compares like with like.
``pooled`` pools the errors of the set targets (errors / reference words); a system run
with several seeds (``random``) shows mean ± std over seeds. The paired bootstrap compares
selective TTA with all-parameter TTA, and every TTA system with the unadapted model, per mode, on
the pooled sets and on each stream.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.report.bootstrap import mean_std, paired_bootstrap
from neurosel.report.collect import read_utterance_counts
from neurosel.stage import MARKER

UNADAPTED = "unadapted"


@dataclass
class Cell:
    """One system's per-utterance counts on one target (ids sorted)."""

    ids: list[str]
    errors: np.ndarray
    refs: np.ndarray
    cpu: float | None = None  # adaptation CPU-s per audio second

    @property
    def wer(self) -> float:
        return 100.0 * float(self.errors.sum()) / max(int(self.refs.sum()), 1)


def _restrict(errs: Path, ids: list[str]) -> Cell:
    """The counts of ``errs.txt`` for ``ids``; an utterance it lacks is an error naming it."""
    have_ids, errors, refs = read_utterance_counts(errs)
    where = {u: k for k, u in enumerate(have_ids)}
    missing = [u for u in ids if u not in where]
    if missing:
        raise NeuroselError(f"{errs}: no '#csid' line for utterance {missing[0]} ({len(missing)} missing)")
    index = [where[u] for u in ids]
    return Cell(list(ids), errors[index], refs[index])


def _all(errs: Path) -> Cell:
    ids, errors, refs = read_utterance_counts(errs)
    return Cell(ids, errors, refs)


def tta_cells(exp: Path) -> dict[tuple[str, str], dict[str, dict[int, Cell]]]:
    """``{(label, mode): {target: {seed: Cell}}}`` of every finished TTA run under ``exp``."""
    found: dict[tuple[str, str], dict[str, dict[int, Cell]]] = {}
    for summary_path in sorted(layout.decode_root(exp).glob("tta_*/*/tta.json")):
        out_dir = summary_path.parent
        if not (out_dir / MARKER).is_file():
            continue  # a run in progress or killed: not a result
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        run = summary["run"]
        label = run["moves"] + (f" ({run['source']})" if run["moves"] == "selective" else "")
        ids, errors, refs = read_utterance_counts(out_dir / "errs.txt")
        cell = Cell(ids, errors, refs, float(summary["adapt_cpu_per_audio_second"]))
        found.setdefault((label, run["mode"]), {}).setdefault(run["target"], {})[int(run["seed"])] = cell
    if not found:
        raise NeuroselError(f"{layout.decode_root(exp)}: no finished TTA run (tta_*/<target>/tta.json)")
    return found


def _target_ids(cells: dict[tuple[str, str], dict[str, dict[int, Cell]]]) -> dict[str, list[str]]:
    """The utterances of each target; every system must have decoded the same ones."""
    ids: dict[str, list[str]] = {}
    for (label, mode), targets in cells.items():
        for target, seeds in targets.items():
            for cell in seeds.values():
                if ids.setdefault(target, cell.ids) != cell.ids:
                    raise NeuroselError(f"tta report: {label} {mode} on {target} decoded other utterances "
                                        "than another system on it (different subsets in one exp dir?)")
    return ids


def _set_of(utterance: str, sets: list[str]) -> str:
    """The OOD set an utterance of a stream belongs to (its id names the set, as stage 0 makes it)."""
    for name in sets:
        if f"-{name}-" in utterance:
            return name
    raise NeuroselError(f"tta report: utterance {utterance} names none of the sets {', '.join(sets)}")


def reference_cells(exp: Path, ids: dict[str, list[str]], stage7: Path | None) -> dict[str, dict[str, Cell]]:
    """``{system: {target: Cell}}`` of the unadapted model (``<exp>/decode/baseline/<set>``; its
    streams from the OOD sets' counts) and of
    stage 7's per-condition systems (``<stage7>/decode/adapt_<x>.s<seed>/adapted_<c>/ood_<c>``,
    pooled ones ``<stage7>/decode/adapt_<x>_pooled.s<seed>/ood_<c>``), one seed each (the lowest)."""
    baseline = layout.decode_dir(exp, layout.BASELINE)
    sets = sorted(t for t in ids if not t.startswith("stream"))
    if any(t.startswith("stream") for t in ids):  # a stream holds every OOD set
        sets = sorted(set(sets) | {d.name for d in baseline.iterdir() if layout.is_ood_set(d.name)})
    systems: dict[str, dict[str, Path]] = {UNADAPTED: {s: baseline / s for s in sets}}
    if stage7 is not None:
        for system_dir in sorted(layout.decode_root(stage7).glob("adapt_*.s*")):
            name, seed = layout.parse_system_id(system_dir.name)
            if seed is None or any(layout.parse_system_id(k)[0] == name for k in systems):
                continue
            systems[system_dir.name] = {s: (system_dir / s if layout.is_pooled(name) else
                                            system_dir / layout.adapted_name(layout.condition_of(s)) / s)
                                        for s in sets if layout.is_ood_set(s)}
    cells: dict[str, dict[str, Cell]] = {}
    for name, dirs in systems.items():
        if not all((d / "errs.txt").is_file() for d in dirs.values()):
            if name == UNADAPTED:
                missing = next(d for d in dirs.values() if not (d / "errs.txt").is_file())
                raise NeuroselError(f"{missing}/errs.txt: no such file (the unadapted decode of the set)")
            continue
        per_set = {s: _restrict(d / "errs.txt", ids[s]) if s in ids else _all(d / "errs.txt")
                   for s, d in dirs.items()}
        cells[name] = dict(per_set)
        for target, utts in ids.items():
            if target.startswith("stream"):  # the same utterances, in the stream's order
                parts = [per_set[_set_of(u, list(per_set))] for u in utts]
                cells[name][target] = Cell(utts, np.array([p.errors[p.ids.index(u)] for p, u in zip(parts, utts)]),
                                           np.array([p.refs[p.ids.index(u)] for p, u in zip(parts, utts)]))
    return cells


def _pooled(cells: list[Cell]) -> Cell:
    return Cell([u for c in cells for u in c.ids], np.concatenate([c.errors for c in cells]),
                np.concatenate([c.refs for c in cells]))


def _fmt(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    m = mean_std(values)
    return f"{m.mean:.2f} ± {m.std:.2f} ({m.n})"


def report_markdown(exp: Path, stage7: Path | None = None) -> str:
    """The markdown TTA table and bootstrap comparisons of ``exp`` (see the module doc)."""
    cells = tta_cells(exp)
    ids = _target_ids(cells)
    sets = sorted(t for t in ids if not t.startswith("stream"))
    others = sorted((t for t in ids if t.startswith("stream")), key=lambda t: int(t[len("stream"):]))
    columns = sets + (["pooled"] if len(sets) > 1 else []) + others
    refs = reference_cells(exp, ids, stage7)
    lines = [f"WER in percent on {', '.join(f'{t} ({len(ids[t])} utt.)' for t in sets + others)}; "
             "pooled: the errors of all those sets over their reference words; CPU: adaptation CPU-s per audio second "
             "(mean over the system's runs); random: mean ± std over seeds (n).", "",
             "| system | mode | " + " | ".join(columns) + " | CPU |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " | --- |"]
    for name, per_target in refs.items():
        row = [f"{per_target[t].wer:.2f}" if t in per_target else "" for t in sets]
        row += [f"{_pooled([per_target[s] for s in sets]).wer:.2f}"] if len(sets) > 1 else []
        row += [f"{per_target[t].wer:.2f}" if t in per_target else "" for t in others]
        lines.append(f"| {name} | {'stage 7' if name != UNADAPTED else '-'} | " + " | ".join(row) + " | |")
    for (label, mode), targets in sorted(cells.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        row = [_fmt([c.wer for c in targets[t].values()]) if t in targets else "" for t in sets]
        if len(sets) > 1 and all(s in targets for s in sets):
            seeds = sorted(set.intersection(*(set(targets[s]) for s in sets)))
            row.append(_fmt([_pooled([targets[s][k] for s in sets]).wer for k in seeds]) if seeds else "")
        elif len(sets) > 1:
            row.append("")
        row += [_fmt([c.wer for c in targets[t].values()]) if t in targets else "" for t in others]
        cpu = [c.cpu for seeds in targets.values() for c in seeds.values() if c.cpu is not None]
        lines.append(f"| tta {label} | {mode} | " + " | ".join(row) + f" | {np.mean(cpu):.3f} |")
    lines += ["", *comparisons(cells, refs, sets, others)]
    return "\n".join(lines) + "\n"


def comparisons(cells: dict[tuple[str, str], dict[str, dict[int, Cell]]], refs: dict[str, dict[str, Cell]],
                sets: list[str], others: list[str]) -> list[str]:
    """Paired bootstrap (10000 samples, seed 0, 95%) of selective vs all-parameter TTA and of
    every TTA system vs the unadapted model (a system run with several seeds: its lowest seed), per
    mode, on the pooled sets and on each stream."""
    lines = ["| comparison (A -> B) | mode | on | WER A | WER B | B - A | 95% CI | p(B better) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    groups = ([("pooled sets", sets)] if sets else []) + [(t, [t]) for t in others if t.startswith("stream")]
    labels = sorted({label for label, _ in cells})
    selective = [label for label in labels if label.startswith("selective")]
    others = [label for label in labels if label != "all" and not label.startswith("selective")]
    for mode in ("episodic", "continual"):
        for on, targets in groups:
            def cell(label: str) -> Cell | None:
                per_target = refs.get(label) if label == UNADAPTED else \
                    {t: seeds[min(seeds)] for t, seeds in cells.get((label, mode), {}).items()}
                if not per_target or not all(t in per_target for t in targets):
                    return None
                return _pooled([per_target[t] for t in targets])
            pairs = [(UNADAPTED, "all")] + [(a, s) for s in selective for a in ("all", UNADAPTED)] + \
                [(UNADAPTED, label) for label in others]
            for a_label, b_label in pairs:
                a, b = cell(a_label), cell(b_label)
                if a is None or b is None:
                    continue
                r = paired_bootstrap(a.errors, b.errors, a.refs)
                lines.append(f"| {a_label} -> {b_label} | {mode} | {on} | {r.wer_a:.2f} | {r.wer_b:.2f} | "
                             f"{r.difference:+.2f} | [{r.ci_low:+.2f}, {r.ci_high:+.2f}] | {r.p_b_better:.3f} |")
    return lines
