"""Prune, then retrain (issue 16 part 1; not in the default run):
``python -m neurosel.bin.retrain [lr|status|systems] [--config conf/retrain.yaml] [--job J --num-jobs N]
<baseline.pt> <prune-dir> <fbank> <lang> <retrain-dir>``

Every system of the config is fine-tuned on in-domain ``train`` once per retraining seed k of
``seeds`` with seed k's batch plan, optimiser and learning rate (``neurosel.train.finetune``) into
``<retrain-dir>/<system>_retrain.s<k>/{model.pt,retrain.json}`` (a ``condprune_*`` system: each
condition's model into ``.../adapted_<c>/``, as stage 6 laid them out). A system stage 6 built with
several random seeds (``prune_random.s<r>``) pairs them with the retraining seeds in order (the
i-th retraining seed fine-tunes the i-th random selection, cycling), so its retrained models vary in
both the neurons and the data order; ``retrain.json`` names the pruned model it came from.
The control ``baseline_ft.s<k>`` is the unpruned baseline fine-tuned alike. The learning rate is the
one of ``lr_grid`` whose fine-tuned baseline (first seed) has the lowest dev CTC loss
(``<retrain-dir>/lr/lr.json``; the action ``lr`` runs only that search).
``status`` exits 0 when everything is up to date, 3 when some is to do, 1 on an error (a missing
input, a system the prune dir lacks); ``systems`` prints the folders it makes, one a line, with
``--sets a,b`` as ``<folder>:<sets it is decoded on>`` (``steps/retrain.sh`` decodes them: a model
of condition c on ``ood_<c>`` and ``test`` only). ``--job J --num-jobs N`` (J in 1..N) fine-tunes
every N-th system, for N jobs side by side after the ``lr`` action.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.cli import config_args, device_args, run_main
from neurosel.data.batches import CtcDataset, load_bpe, load_cmvn
from neurosel.decode.run import load_cuts
from neurosel.device import resolve_device
from neurosel.errors import NeuroselError
from neurosel.io import write_json
from neurosel.model import load_model, save_model
from neurosel.recipe import layout
from neurosel.stage import UP_TO_DATE, fingerprint, require, run_once, status, status_code, split_action
from neurosel.train.augment import TrainingAugment
from neurosel.train.finetune import FinetuneConfig, batch_plan, dev_loss, finetune, plan_digest

log = logging.getLogger("neurosel.retrain")


def seed_key(sid: str) -> int:
    """Sort key of a system id by its seed (``.s10`` after ``.s2``)."""
    return layout.parse_system_id(sid)[1] or 0


def systems_of(cfg: FinetuneConfig, baseline: Path, prune_dir: Path) -> dict[str, tuple[Path, int]]:
    """``{folder: (model.pt to fine-tune, retraining seed)}``: ``baseline_ft.s<k>`` for every seed,
    then for each of the config's systems ``<system>_retrain.s<k>`` (the i-th seed on the i-th of the
    system's stage 6 seeds, cycling), and for a ``condprune_*`` system (one model per OOD condition c)
    one ``<id>/adapted_<c>`` per condition."""
    out = {layout.system_id(layout.BASELINE_FT, k): (baseline, k) for k in cfg.seeds}
    for name in cfg.systems:
        ids = sorted((p.name for p in prune_dir.glob(f"{name}.s*") if layout.parse_system_id(p.name)[0] == name),
                     key=seed_key) or [name]
        for i, k in enumerate(cfg.seeds):
            sid = ids[i % len(ids)]
            folder = layout.system_id(layout.retrained(name), k)
            models = {folder: prune_dir / sid / "model.pt"}
            if layout.is_condition_pruned(name):
                models = {f"{folder}/{p.parent.name}": p
                          for p in sorted((prune_dir / sid).glob(f"{layout.adapted_name('*')}/model.pt"))}
            if not models or not all(m.is_file() for m in models.values()):
                raise NeuroselError(f"{prune_dir / sid}: no pruned model.pt (retrain config names '{name}', which "
                                    "stage 6 did not build)")
            out.update({f: (m, k) for f, m in models.items()})
    return out


def decode_sets(folder: str, sets: list[str]) -> list[str]:
    """The sets a retrained model is decoded on: all of ``sets``; for a model of condition c
    (``.../adapted_<c>``) ``ood_<c>`` and ``test``, as stage 6 decoded it before retraining."""
    condition = layout.adapted_condition(Path(folder).name)
    return list(sets) if condition is None else layout.condition_sets(condition, sets)


def unit_settings(cfg: FinetuneConfig) -> dict:
    """What changes how one model is fine-tuned (its marker holds this, its seed and the rate): not
    the list of seeds or systems, so that adding one leaves the others up to date."""
    return {k: v for k, v in C.to_dict(cfg).items() if k not in ("seeds", "systems", "num_threads")}


def main(argv: list[str] | None = None) -> int:
    action, argv = split_action(argv)
    if argv and argv[0] in ("systems", "lr"):
        action, argv = argv[0], argv[1:]
    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.splitlines()[0])
    config_args(parser)
    device_args(parser)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--sets", default="", help="action systems: also the sets each is decoded on, "
                        "<folder>:<set>,<set> per line")
    parser.add_argument("--job", type=int, default=1, help="this job's number, 1..--num-jobs")
    parser.add_argument("--num-jobs", type=int, default=1, help="jobs side by side (after the lr action)")
    parser.add_argument("baseline", type=Path)
    parser.add_argument("prune_dir", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("retrain_dir", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.job <= args.num_jobs:
        raise NeuroselError(f"--job {args.job} is not in 1..{args.num_jobs} (--num-jobs)")
    cfg = C.resolve(FinetuneConfig, args.config, args.overlay, "retrain", args.overrides)
    data = [layout.cuts_path(args.fbank, "train"), layout.cuts_path(args.fbank, "dev"),
            layout.cmvn_path(args.fbank), layout.bpe_model(args.lang)]
    require([args.baseline, *data])
    systems = systems_of(cfg, args.baseline, args.prune_dir)
    lr_dir = layout.retrain_lr_dir(args.retrain_dir)
    lr_inputs = [args.baseline, *data]
    lr_config = {"retrain": unit_settings(cfg), "seed": cfg.seeds[0], "what": "lr"}

    def unit_config(seed: int) -> dict:
        return {"retrain": unit_settings(cfg), "seed": seed, "lr": chosen_lr(args.retrain_dir)}

    if action == "systems":
        sets = args.sets.split(",") if args.sets else []
        print("\n".join(f"{f}:{','.join(decode_sets(f, sets))}" if sets else f for f in systems))
        return UP_TO_DATE
    lr_done = status(lr_dir, fingerprint(lr_config, lr_inputs)) == "done" and not args.force
    if action == "status":
        todo = [] if lr_done else ["lr"]
        if not todo:
            todo = [f for f, (m, k) in systems.items()
                    if status(args.retrain_dir / f, fingerprint(unit_config(k), [m, *data])) != "done"]
        return status_code("retrain", args.retrain_dir, todo, args.force)
    if action == "run" and args.num_jobs > 1 and not lr_done:
        raise NeuroselError(f"{lr_dir}: the learning rate is not chosen yet (run the lr action before "
                            f"--num-jobs {args.num_jobs})")

    device = resolve_device(args.device)
    torch.set_num_threads(cfg.num_threads)
    train_cuts = load_cuts(args.fbank, "train")
    dev_cuts = load_cuts(args.fbank, "dev")
    sp, cmvn = load_bpe(args.lang), load_cmvn(layout.cmvn_path(args.fbank))
    dataset = CtcDataset(sp, cmvn)  # dev: never perturbed
    train_set = CtcDataset(sp, cmvn, TrainingAugment(feature_warp=cfg.feature_warp))
    plans: dict[int, list[list[str]]] = {}

    def plan_of(seed: int) -> list[list[str]]:
        if seed not in plans:
            plans[seed] = batch_plan(train_cuts, cfg.max_duration, seed, cfg.steps)
            log.info("batch plan of seed %d: %d steps, %d cut visits, sha256 %s", seed, len(plans[seed]),
                     sum(map(len, plans[seed])), plan_digest(plans[seed]))
        return plans[seed]

    def one(model_path: Path, lr: float, seed: int) -> tuple[torch.nn.Module, list[float], float]:
        torch.manual_seed(seed)
        model, _ = load_model(model_path)
        model.to(device)
        losses = finetune(model, train_cuts, train_set, plan_of(seed), lr, cfg.grad_clip, device)
        loss = dev_loss(model, dev_cuts, dataset, cfg.max_duration, device)
        return model.cpu(), losses, loss

    def choose() -> None:
        seed = cfg.seeds[0]
        before = dev_loss(load_model(args.baseline)[0].to(device), dev_cuts, dataset, cfg.max_duration, device)
        grid, best = {}, None
        for lr in cfg.lr_grid:
            model, losses, loss = one(args.baseline, lr, seed)
            grid[str(lr)] = loss
            log.info("lr %g: dev loss %.4f (before fine-tuning %.4f)", lr, loss, before)
            if best is None or loss < best[0]:
                best = (loss, lr, model, losses)
        loss, lr, model, losses = best
        save_model(model, lr_dir / "model.pt")
        write_json(lr_dir / "retrain.json", record(args.baseline, lr, losses, loss, plan_of(seed), seed, cfg))
        write_json(lr_dir / LR_JSON, {"grid_dev_loss": grid, "chosen": lr, "dev_loss_before": before,
                                      "seed": seed, "plan_sha256": plan_digest(plan_of(seed))})

    run_once("retrain lr on dev", lr_dir, lr_config, lr_inputs, choose, args.force)
    if action == "lr":
        return UP_TO_DATE
    lr = chosen_lr(args.retrain_dir)
    mine = list(systems.items())[args.job - 1::args.num_jobs]
    for folder, (model_path, seed) in mine:
        def work(folder: str = folder, model_path: Path = model_path, seed: int = seed) -> None:
            if model_path == args.baseline and seed == cfg.seeds[0]:
                # the search's best run is this very fine-tuning (same model, seed, plan and rate)
                model, info = load_model(lr_dir / "model.pt")[0], json.loads((lr_dir / "retrain.json").read_text())
                save_model(model, args.retrain_dir / folder / "model.pt")
                write_json(args.retrain_dir / folder / "retrain.json", info)
                return
            model, losses, loss = one(model_path, lr, seed)
            save_model(model, args.retrain_dir / folder / "model.pt")
            write_json(args.retrain_dir / folder / "retrain.json",
                       record(model_path, lr, losses, loss, plan_of(seed), seed, cfg))
            log.info("%s: dev loss %.4f after %d steps", folder, loss, len(losses))
        run_once(f"retrain {folder}", args.retrain_dir / folder, unit_config(seed), [model_path, *data], work,
                 args.force)
    return UP_TO_DATE


LR_JSON = "lr.json"


def chosen_lr(retrain_dir: Path) -> float | None:
    """The learning rate chosen on dev (``lr.json``), None before the search ran."""
    path = layout.retrain_lr_dir(retrain_dir) / LR_JSON
    return float(json.loads(path.read_text())["chosen"]) if path.is_file() else None


def record(model_path: Path, lr: float, losses: list[float], loss: float, plan: list[list[str]], seed: int,
           cfg: FinetuneConfig) -> dict:
    """``retrain.json``: where the model came from and how it was fine-tuned."""
    return {"from": str(model_path), "lr": lr, "steps": len(losses), "plan_sha256": plan_digest(plan),
            "seed": seed, "max_duration": cfg.max_duration, "train_loss_first": losses[0],
            "train_loss_last": losses[-1], "dev_loss": loss}


if __name__ == "__main__":
    run_main(main)
