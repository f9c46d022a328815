"""Stage 7's plan: which learning-rate searches and adaptation units are left to run, how they are
grouped into launcher jobs, running one job's units with their decodes, and the stage's WER table.

The plan of the jobs left is written to ``layout.pending_jobs_path`` before the jobs start and each
job reads its line from there: a job that finishes early must not change which units a later job
of the same launch runs (recomputing the pending list in each job would shift the numbering).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from neurosel.decode import stage as decode_stage
from neurosel.decode.run import DecodeStageConfig
from neurosel.errors import NeuroselError
from neurosel.io import write_text
from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import AdaptConfig
from neurosel.recipe.adapt_units import StagePaths, Unit, marker_inputs, run_unit, unit_config, unit_inputs
from neurosel.report.collect import read_wer
from neurosel.stage import fingerprint, status


def unit_model(unit: Unit, paths: StagePaths) -> Path:
    """The adapted ``model.pt`` of ``unit``."""
    return unit.model_dir(paths.adapt) / "model.pt"


def unit_done(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str],
              decode_cfg: DecodeStageConfig) -> bool:
    """True if the unit's model and decodes are up to date."""
    digest = fingerprint(unit_config(unit, cfg), marker_inputs(unit, paths, cfg, conditions))
    if status(unit.model_dir(paths.adapt), digest) != "done":
        return False
    return not decode_stage.stale_sets(decode_cfg, unit_model(unit, paths), paths.lang, paths.fbank,
                                       unit.decode_dir(paths.decode), unit.test_sets(conditions))


def tune_done(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> bool:
    """True if the learning rates of ``unit.system`` are chosen and up to date."""
    digest = fingerprint(unit_config(unit, cfg), unit_inputs(unit, paths, cfg, conditions))
    return status(layout.rates_path(paths.adapt, unit.system).parent, digest) == "done"


def pending_jobs(units: list[Unit], todo: list[bool]) -> list[list[int]]:
    """The 1-based numbers of the units left to run, grouped into one job per (system, seed, pooled
    or not), in unit order: a job runs its conditions one after the other, which saves a Python and
    torch start per unit."""
    jobs: dict[tuple[str, int, bool], list[int]] = {}
    for i, (unit, left) in enumerate(zip(units, todo)):
        if left:
            jobs.setdefault((unit.system, unit.seed, unit.condition == layout.POOLED), []).append(i + 1)
    return list(jobs.values())


def write_plan(path: Path, jobs: list[list[int]]) -> int:
    """Write ``jobs`` (one line of unit numbers each) to ``path``; returns their number."""
    write_text(path, "".join(" ".join(map(str, job)) + "\n" for job in jobs))
    return len(jobs)


def planned_indices(path: Path, job: int, count: int) -> list[int]:
    """The 0-based indices of the units (of ``count``) that job ``job`` of the plan at ``path`` runs."""
    try:
        lines = [[int(n) for n in line.split()] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise NeuroselError(f"{path}: not lines of unit numbers ({e})") from None
    if not 1 <= job <= len(lines):
        raise NeuroselError(f"{path}: has {len(lines)} lines, no line {job}")
    for number in lines[job - 1]:
        if not 1 <= number <= count:
            raise NeuroselError(f"unit {number} is not in 1..{count}")
    return [n - 1 for n in lines[job - 1]]


def run_and_decode(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str],
                   decode_cfg: DecodeStageConfig, force: bool) -> None:
    """Adapt one unit, then decode its sets (each step skipped when up to date)."""
    run_unit(unit, paths, cfg, conditions, force=force)
    decode_stage.decode_here(decode_cfg, unit_model(unit, paths), paths.lang, paths.fbank,
                             unit.decode_dir(paths.decode), unit.test_sets(conditions), device=paths.device)


def wer_table(units: list[Unit], paths: StagePaths, conditions: list[str]) -> str:
    """WER per system (rows) and set (columns: ``ood_<c>`` of the model adapted to c, then
    ``test.<c>``), mean +- std over seeds, plus the baseline's row."""
    pairs = [(layout.ood_set(c), layout.ood_set(c)) for c in conditions]
    pairs += [(layout.TEST, layout.adapted_test_set(layout.TEST, c)) for c in conditions]
    columns = [col for _, col in pairs]
    rows: dict[str, dict[str, list[float]]] = {layout.BASELINE: {}}
    for set_name, col in pairs:
        wer_file = paths.decode / layout.BASELINE / set_name / "wer"
        if wer_file.is_file():
            rows[layout.BASELINE][col] = [read_wer(wer_file)[0]]
    for unit in units:
        system = layout.parse_system_id(unit.name)[0]
        pooled = unit.condition == layout.POOLED
        for set_name in unit.test_sets(conditions):
            col = set_name if pooled else layout.adapted_test_set(set_name, unit.condition)
            wer_file = unit.decode_dir(paths.decode) / set_name / "wer"
            if wer_file.is_file():
                rows.setdefault(system, {}).setdefault(col, []).append(read_wer(wer_file)[0])
    if any(u.condition == layout.POOLED for u in units):
        columns += [layout.TEST]
    width = max(len(s) for s in rows) + 2
    lines = ["system".ljust(width) + "".join(c.rjust(22) for c in columns)]
    for system, cells in rows.items():
        text = []
        for col in columns:
            values = cells.get(col, [])
            cell = "-" if not values else f"{statistics.mean(values):.2f}" + (
                f" +- {statistics.stdev(values):.2f} (n={len(values)})" if len(values) > 1 else "")
            text.append(cell.rjust(22))
        lines.append(system.ljust(width) + "".join(text))
    return "\n".join(lines)
