"""Stage 7, unsupervised adaptation, as units of work that ``steps/adapt.sh`` fans out:

``python -m neurosel.bin.adapt list   [cfg] --seed S <model.pt> <lang> <fbank> <exp-dir>``
    print the units, one per line (``<system-dir> <condition>``); their count is N for JOB=1:N
``python -m neurosel.bin.adapt tune   [cfg] --seed S --unit J <model.pt> <lang> <fbank> <exp-dir>``
    search the learning rates of system J of ``systems`` + ``pooled_systems`` (with
    ``lr_search: system``) into ``<exp-dir>/adapt/lr/<system>/`` unless up to date
``python -m neurosel.bin.adapt unit   [cfg] --seed S --unit J --decode-config Y <model.pt> <lang> <fbank> <exp-dir>``
    unit J of N: adapt (``<exp-dir>/adapt/...``) unless up to date, then decode its sets
    (``<exp-dir>/decode/...``) with the decode config Y unless up to date
``python -m neurosel.bin.adapt pending [cfg] --seed S --what tunes|units [--decode-config Y] ...``
    print the jobs left to run, one line each: the number of a search that is not up to date, or
    the numbers of the units of one (system, seed) that are not (its conditions run in one
    process, which saves a Python and torch start per unit); with ``--units-from FILE`` the
    ``tune``/``unit`` actions run the numbers on FILE's J-th line, so a launcher's
    ``JOB=1:<lines>`` runs only those
``python -m neurosel.bin.adapt status [cfg] --seed S --decode-config Y <model.pt> <lang> <fbank> <exp-dir>``
    exit 0 if every search and unit is done (adapted, decoded) and up to date, 1 otherwise
``python -m neurosel.bin.adapt table  [cfg] --seed S <model.pt> <lang> <fbank> <exp-dir>``
    print WER per system and set, mean +- std over seeds, from the decode dirs

Pseudo-labels are read from ``--pseudo-dir`` (default ``<exp-dir>/decode/baseline``, the
baseline's decode of ``ood_adapt_<c>``), neurons from ``--saliency-dir`` (default
``<exp-dir>/saliency``).
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

from neurosel import config as C
from neurosel.bin import decode as decode_cli
from neurosel.cli import config_args, run_main
from neurosel.errors import NeuroselError
from neurosel.recipe.adapt_systems import AdaptConfig
from neurosel.recipe.adapt_units import (POOLED, StagePaths, Unit, find_conditions, list_units, marker_inputs,
                                         rates_path, run_tune, run_unit, tune_units, unit_config, unit_inputs)
from neurosel.report.collect import read_wer
from neurosel.stage import fingerprint, status

log = logging.getLogger("neurosel.adapt")


def decode_argv(action: str, unit: Unit, paths: StagePaths, conditions: list[str], decode_config: Path,
                extra: list[str] = ()) -> list[str]:
    """Arguments of ``neurosel.bin.decode`` for one unit's model and sets."""
    return [action, "--config", str(decode_config), "--sets", ",".join(unit.test_sets(conditions)), *extra,
            str(unit.model_dir(paths.adapt) / "model.pt"), str(paths.lang), str(paths.fbank),
            str(unit.decode_dir(paths.decode))]


def unit_done(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str], decode_config: Path) -> bool:
    """True if the unit's model and decodes are up to date."""
    digest = fingerprint(unit_config(unit, cfg), marker_inputs(unit, paths, cfg, conditions))
    if status(unit.model_dir(paths.adapt), digest) != "done":
        return False
    return decode_cli.main(decode_argv("status", unit, paths, conditions, decode_config)) == 0


def tune_done(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> bool:
    """True if the learning rates of ``unit.system`` are chosen and up to date."""
    digest = fingerprint(unit_config(unit, cfg), unit_inputs(unit, paths, cfg, conditions))
    return status(rates_path(paths.adapt, unit.system).parent, digest) == "done"


def chosen_indices(args: argparse.Namespace, count: int) -> list[int]:
    """The 0-based indices of the searches or units this job runs: ``--unit J`` itself, or the
    numbers on the J-th line of ``--units-from``."""
    numbers = [args.unit]
    if args.units_from is not None:
        try:
            lines = [[int(n) for n in line.split()] for line in args.units_from.read_text().splitlines()
                     if line.strip()]
        except (OSError, ValueError) as e:
            raise NeuroselError(f"{args.units_from}: not lines of unit numbers ({e})") from None
        if not 1 <= args.unit <= len(lines):
            raise NeuroselError(f"{args.units_from}: has {len(lines)} lines, no line {args.unit}")
        numbers = lines[args.unit - 1]
    for number in numbers:
        if not 1 <= number <= count:
            raise NeuroselError(f"unit {number} is not in 1..{count}")
    return [n - 1 for n in numbers]


def pending_jobs(units: list[Unit], todo: list[bool]) -> list[list[int]]:
    """The 1-based numbers of the units left to run, grouped into one job per (system, seed, pooled
    or not), in unit order."""
    jobs: dict[tuple[str, int, bool], list[int]] = {}
    for i, (unit, left) in enumerate(zip(units, todo)):
        if left:
            jobs.setdefault((unit.system, unit.seed, unit.condition == POOLED), []).append(i + 1)
    return list(jobs.values())


def run_and_decode(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str], decode_config: Path,
                   force: bool) -> None:
    """Adapt one unit, then decode its sets (each step skipped when up to date)."""
    run_unit(unit, paths, cfg, conditions, force=force)
    if decode_cli.main(decode_argv("status", unit, paths, conditions, decode_config)) == 0:
        return
    for action in ("decode", "merge"):
        decode_cli.main(decode_argv(action, unit, paths, conditions, decode_config,
                                    ["--num-jobs", "1"] + (["--job", "1"] if action == "decode" else [])))


def wer_table(units: list[Unit], paths: StagePaths, conditions: list[str]) -> str:
    """WER per system (rows) and set (columns: ``ood_<c>`` of the model adapted to c, then
    ``test.<c>``), mean +- std over seeds, plus the baseline's row."""
    columns = [f"ood_{c}" for c in conditions] + [f"test.{c}" for c in conditions]
    rows: dict[str, dict[str, list[float]]] = {"baseline": {}}
    for col in columns:
        wer_file = paths.decode / "baseline" / col.split(".")[0] / "wer"
        if wer_file.is_file():
            rows["baseline"][col] = [read_wer(wer_file)[0]]
    for unit in units:
        system = unit.name.rsplit(".s", 1)[0]
        sets = [(s, s) for s in unit.test_sets(conditions)] if unit.condition == POOLED else \
            [(f"ood_{unit.condition}", f"ood_{unit.condition}"), ("test", f"test.{unit.condition}")]
        for set_name, col in sets:
            wer_file = unit.decode_dir(paths.decode) / set_name / "wer"
            if wer_file.is_file():
                rows.setdefault(system, {}).setdefault(col, []).append(read_wer(wer_file)[0])
    if any(u.condition == POOLED for u in units):
        columns += ["test"]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adapt", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["list", "tune", "unit", "pending", "status", "table"])
    config_args(parser)
    parser.add_argument("--seed", type=int, default=42, help="first seed; seeds are seed..seed+num_seeds-1")
    parser.add_argument("--unit", type=int, default=0, help="1-based index (actions tune and unit)")
    parser.add_argument("--units-from", type=Path, help="file of jobs: --unit J runs the numbers on its J-th line "
                        "(see pending)")
    parser.add_argument("--what", choices=["tunes", "units"], default="units", help="action pending: of which")
    parser.add_argument("--decode-config", type=Path, help="the tuned decode config of the baseline")
    parser.add_argument("--saliency-dir", type=Path, help="default <exp-dir>/saliency")
    parser.add_argument("--pseudo-dir", type=Path, help="default <exp-dir>/decode/baseline")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("model", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("exp_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = C.resolve(AdaptConfig, args.config, args.overlay, "adapt", args.overrides)
    paths = StagePaths(model=args.model, lang=args.lang, fbank=args.fbank,
                       saliency=args.saliency_dir or args.exp_dir / "saliency",
                       pseudo=args.pseudo_dir or args.exp_dir / "decode" / "baseline",
                       adapt=args.exp_dir / "adapt", decode=args.exp_dir / "decode")
    conditions = find_conditions(args.fbank)
    units = list_units(cfg, conditions, args.seed)
    tunes = tune_units(cfg, args.seed)

    if args.action == "list":
        print("\n".join(f"{u.model_dir(paths.adapt).relative_to(paths.adapt)} {u.condition}" for u in units))
        return 0
    if args.action == "table":
        print(wer_table(units, paths, conditions))
        return 0
    if args.action == "tune":
        for index in chosen_indices(args, len(tunes)):
            log.info("learning-rate search %d of %d: %s", index + 1, len(tunes), tunes[index].system)
            run_tune(tunes[index], paths, cfg, conditions, args.force)
        return 0
    if args.action == "pending" and args.what == "tunes":
        for i, u in enumerate(tunes):  # one line each, nothing at all when none is pending
            if args.force or not tune_done(u, paths, cfg, conditions):
                print(i + 1)
        return 0
    if args.decode_config is None:
        raise NeuroselError(f"action {args.action} needs --decode-config (the baseline's tuned decode.yaml)")
    if args.action == "pending":
        todo = [args.force or not unit_done(u, paths, cfg, conditions, args.decode_config) for u in units]
        for numbers in pending_jobs(units, todo):
            print(" ".join(map(str, numbers)))
        return 0
    if args.action == "status":
        todo_tunes = [u for u in tunes if not tune_done(u, paths, cfg, conditions)]
        todo = [u for u in units if not unit_done(u, paths, cfg, conditions, args.decode_config)]
        if todo or todo_tunes or args.force:
            log.info("%d of %d learning-rate searches and %d of %d adaptation units to run",
                     len(tunes) if args.force else len(todo_tunes), len(tunes),
                     len(units) if args.force else len(todo), len(units))
            return 1
        log.info("every learning-rate search (%d) and adaptation unit (%d) is up to date, skipping",
                 len(tunes), len(units))
        return 0
    for index in chosen_indices(args, len(units)):
        log.info("unit %d of %d: %s on %s", index + 1, len(units), units[index].name, units[index].condition)
        run_and_decode(units[index], paths, cfg, conditions, args.decode_config, args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
