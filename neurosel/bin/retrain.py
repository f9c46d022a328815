"""Prune, then retrain (issue 16 part 1; not in the default run):
``python -m neurosel.bin.retrain [status] [--config conf/retrain.yaml] <baseline.pt> <prune-dir> <fbank> <lang>
<retrain-dir>``

Every system of the config (a ``prune_random`` entry means each of its seeds in ``<prune-dir>``)
is fine-tuned on in-domain ``train`` with the same batch plan, optimiser and learning rate
(``neurosel.train.finetune``) into ``<retrain-dir>/<system>_retrain[.s<seed>]/{model.pt,retrain.json}``
(a ``condprune_*`` system: each condition's model into ``.../adapted_<c>/``, as stage 6 laid them out).
The control ``baseline_ft`` is the unpruned baseline fine-tuned alike; the learning rate is the one
of ``lr_grid`` whose fine-tuned baseline has the lowest dev CTC loss (``<retrain-dir>/lr.json``;
that run's model is ``baseline_ft``). ``status`` exits 0 when every system is up to date, 3 when
some is to do, 1 on an error (a missing input, a system the prune dir lacks); ``systems`` prints
the folders it makes, one a line, with ``--sets a,b`` as ``<folder>:<sets it is decoded on>``
(``steps/retrain.sh`` decodes them: a model of condition c on ``ood_<c>`` and ``test`` only).
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


def systems_of(cfg: FinetuneConfig, prune_dir: Path) -> dict[str, Path]:
    """``{retrained system's folder: pruned model.pt}`` for the config's systems: a folder is the
    retrained system id, and for a ``condprune_*`` system (one model per OOD condition c) one
    ``<id>/adapted_<c>`` per condition."""
    out = {}
    for name in cfg.systems:
        ids = sorted(p.name for p in prune_dir.glob(f"{name}.s*") if layout.parse_system_id(p.name)[0] == name) \
            or [name]
        for sid in ids:
            system, seed = layout.parse_system_id(sid)
            folder = layout.system_id(layout.retrained(system), seed)
            models = {folder: prune_dir / sid / "model.pt"}
            if layout.is_condition_pruned(system):
                models = {f"{folder}/{p.parent.name}": p
                          for p in sorted((prune_dir / sid).glob(f"{layout.adapted_name('*')}/model.pt"))}
            if not models or not all(m.is_file() for m in models.values()):
                raise NeuroselError(f"{prune_dir / sid}: no pruned model.pt (retrain config names '{name}', which "
                                    "stage 6 did not build)")
            out.update(models)
    return out


def decode_sets(folder: str, sets: list[str]) -> list[str]:
    """The sets a retrained model is decoded on: all of ``sets``; for a model of condition c
    (``.../adapted_<c>``) ``ood_<c>`` and ``test``, as stage 6 decoded it before retraining."""
    condition = layout.adapted_condition(Path(folder).name)
    return list(sets) if condition is None else layout.condition_sets(condition, sets)


def main(argv: list[str] | None = None) -> int:
    action, argv = split_action(argv)
    if argv and argv[0] == "systems":
        action, argv = "systems", argv[1:]
    parser = argparse.ArgumentParser(prog="retrain", description=__doc__.splitlines()[0])
    config_args(parser)
    device_args(parser)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--sets", default="", help="action systems: also the sets each is decoded on, "
                        "<folder>:<set>,<set> per line")
    parser.add_argument("baseline", type=Path)
    parser.add_argument("prune_dir", type=Path)
    parser.add_argument("fbank", type=Path)
    parser.add_argument("lang", type=Path)
    parser.add_argument("retrain_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = C.resolve(FinetuneConfig, args.config, args.overlay, "retrain", args.overrides)
    data = [layout.cuts_path(args.fbank, "train"), layout.cuts_path(args.fbank, "dev"),
            layout.cmvn_path(args.fbank), layout.bpe_model(args.lang)]
    require([args.baseline, *data])
    systems = systems_of(cfg, args.prune_dir)
    lr_dir = args.retrain_dir / layout.BASELINE_FT
    lr_inputs = [args.baseline, *data]
    lr_config = {"retrain": C.to_dict(cfg), "what": "lr"}
    unit_config = lambda: {"retrain": C.to_dict(cfg), "lr": chosen_lr(args.retrain_dir)}  # noqa: E731
    if action == "systems":
        folders = [layout.BASELINE_FT, *systems]
        sets = args.sets.split(",") if args.sets else []
        print("\n".join(f"{f}:{','.join(decode_sets(f, sets))}" if sets else f for f in folders))
        return UP_TO_DATE
    if action == "status":
        todo = [] if status(lr_dir, fingerprint(lr_config, lr_inputs)) == "done" and not args.force \
            else [layout.BASELINE_FT]
        if not todo:
            todo = [s for s, m in systems.items()
                    if status(args.retrain_dir / s, fingerprint(unit_config(), [m, *data])) != "done"]
        return status_code("retrain", args.retrain_dir, todo, args.force)

    device = resolve_device(args.device)
    torch.set_num_threads(cfg.num_threads)
    train_cuts = load_cuts(args.fbank, "train")
    dev_cuts = load_cuts(args.fbank, "dev")
    sp, cmvn = load_bpe(args.lang), load_cmvn(layout.cmvn_path(args.fbank))
    dataset = CtcDataset(sp, cmvn)  # dev: never perturbed
    train_set = CtcDataset(sp, cmvn, TrainingAugment(feature_warp=cfg.feature_warp))
    plan = batch_plan(train_cuts, cfg.max_duration, cfg.seed, cfg.steps)
    log.info("batch plan: %d steps, %d cut visits, sha256 %s", len(plan), sum(map(len, plan)), plan_digest(plan))

    def one(model_path: Path, lr: float) -> tuple[torch.nn.Module, list[float], float]:
        torch.manual_seed(cfg.seed)
        model, _ = load_model(model_path)
        model.to(device)
        losses = finetune(model, train_cuts, train_set, plan, lr, cfg.grad_clip, device)
        loss = dev_loss(model, dev_cuts, dataset, cfg.max_duration, device)
        return model.cpu(), losses, loss

    def choose() -> None:
        before = dev_loss(load_model(args.baseline)[0].to(device), dev_cuts, dataset, cfg.max_duration, device)
        grid, best = {}, None
        for lr in cfg.lr_grid:
            model, losses, loss = one(args.baseline, lr)
            grid[str(lr)] = loss
            log.info("lr %g: dev loss %.4f (before fine-tuning %.4f)", lr, loss, before)
            if best is None or loss < best[0]:
                best = (loss, lr, model, losses)
        loss, lr, model, losses = best
        save_model(model, lr_dir / "model.pt")
        write_json(lr_dir / "retrain.json", record(args.baseline, lr, losses, loss, plan, cfg))
        write_json(args.retrain_dir / "lr.json", {"grid_dev_loss": grid, "chosen": lr, "dev_loss_before": before,
                                                  "plan_sha256": plan_digest(plan)})

    run_once("retrain lr on dev", lr_dir, lr_config, lr_inputs, choose, args.force)
    lr = chosen_lr(args.retrain_dir)
    for sid, model_path in systems.items():
        def work(sid: str = sid, model_path: Path = model_path) -> None:
            model, losses, loss = one(model_path, lr)
            save_model(model, args.retrain_dir / sid / "model.pt")
            write_json(args.retrain_dir / sid / "retrain.json", record(model_path, lr, losses, loss, plan, cfg))
            log.info("%s: dev loss %.4f after %d steps", sid, loss, len(losses))
        run_once(f"retrain {sid}", args.retrain_dir / sid, unit_config(), [model_path, *data], work, args.force)
    return UP_TO_DATE


def chosen_lr(retrain_dir: Path) -> float | None:
    """The learning rate chosen on dev (``lr.json``), None before the search ran."""
    path = retrain_dir / "lr.json"
    return float(json.loads(path.read_text())["chosen"]) if path.is_file() else None


def record(model_path: Path, lr: float, losses: list[float], loss: float, plan: list[list[str]],
           cfg: FinetuneConfig) -> dict:
    """``retrain.json``: where the model came from and how it was fine-tuned."""
    return {"from": str(model_path), "lr": lr, "steps": len(losses), "plan_sha256": plan_digest(plan),
            "seed": cfg.seed, "max_duration": cfg.max_duration, "train_loss_first": losses[0],
            "train_loss_last": losses[-1], "dev_loss": loss}


if __name__ == "__main__":
    run_main(main)
