"""Stage 3: train the CNN CTC acoustic model from Lhotse cuts, resumably.

``train(cfg, cuts_train, cuts_dev, lang_dir, cmvn_path, exp_dir)`` reads like icefall's train.py:
data, model, optimizer + schedule, resume from the newest checkpoint (``start_run``), one loop
(``train_one_epoch``), validation per epoch, checkpoints every ``checkpoint_every`` steps and at each
epoch end, and at the end the final model (last, best or an average of the last checkpoints) with
its FC norms folded into ``model.pt``.

Training stops at the first of ``num_epochs``, ``max_steps`` and ``max_minutes`` (training wall
time summed over resumed runs); whichever stops it, the state is checkpointed, so running the same
command again continues a killed run exactly (same batches, RNG streams and optimizer state) and
finishes a completed one at once. Raising ``max_steps``/``num_epochs`` continues a finished run
(with ``lr_schedule: cosine`` the rest of the schedule then stretches to the new length). Other
config changes are refused on resume: they would make the run a mix of two experiments.

Several processes (``num_procs``, or a job started by torchrun or srun; see ``distributed``) share
each batch and compute the single-process step, so they follow the single-process loss curve and
write the same checkpoints (rank 0 writes every file); a run may resume with another ``num_procs``.

Writes in ``exp_dir``: ``checkpoint-<step>.pt``, ``best.pt`` (lowest validation loss, unfolded),
``model.pt``, ``config.yaml``, ``log/train.log``, ``tensorboard/``, ``loss.png``. ``model.pt`` records
``step`` and ``stopped_by`` (``max_steps``, ``num_epochs`` or ``max_minutes``: a model cut short by
wall time says so).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import torch
from lhotse import CutSet, load_manifest_lazy
from lhotse.dataset import DynamicBucketingSampler
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from neurosel.config import save
from neurosel.data.batches import Batch, CtcDataset, load_bpe, load_cmvn, make_sampler
from neurosel.errors import NeuroselError
from neurosel.io import torch_load
from neurosel.model import ModelConfig, build_model, fold_norms, save_model
from neurosel.train.augment import FeatureWarpConfig, SpecAugmentConfig, TrainingAugment
from neurosel.train.checkpoint import (average_model_states, list_checkpoints, load_checkpoint, restore_rng_state,
                                       rng_state, save_checkpoint, seed_rngs)
from neurosel.train.distributed import SINGLE, ProcessGroup, backend, process_seed
from neurosel.train.init import InitConfig, load_start, start_from, use_as_is
from neurosel.train.loop import evaluate, train_step
from neurosel.train.plot import plot_losses

log = logging.getLogger("neurosel.train")

# Keys that may differ between a checkpoint and the current config when resuming: they change when
# or how training stops or is recorded, not what one step computes.
# num_procs is one of them: the processes share each batch and compute the single-process step.
RESUMABLE_CHANGES = frozenset({"num_epochs", "max_steps", "max_minutes", "num_threads", "num_procs",
                               "checkpoint_every", "keep_last", "final_model", "average_last", "log_every"})


@dataclass
class TrainConfig:
    """Stage 3 configuration (``conf/train.yaml``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    spec_augment: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    feature_warp: FeatureWarpConfig = field(default_factory=FeatureWarpConfig)
    init: InitConfig = field(default_factory=InitConfig)  # start from a model trained elsewhere
    seed: int = 0
    num_threads: int = 2  # torch threads of each training process
    num_procs: int = 1  # training processes sharing each batch (torch.distributed; see train/distributed.py)
    max_duration: float = 120.0  # seconds of audio per batch
    num_buckets: int = 10
    num_epochs: int = 10  # 0 = no epoch limit
    max_steps: int = 0  # 0 = no step limit
    max_minutes: float = 0.0  # 0 = no time limit
    optimizer: Literal["adam", "adamw"] = "adamw"
    lr: float = 2e-3  # peak learning rate
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    # noam: linear warm-up then lr * sqrt(warmup / step); cosine: linear warm-up then cosine decay to
    # lr * final_lr_ratio at max_steps (or num_epochs x the batches of epoch 0).
    lr_schedule: Literal["noam", "cosine"] = "cosine"
    final_lr_ratio: float = 0.02
    grad_clip: float = 5.0
    checkpoint_every: int = 200  # steps
    keep_last: int = 3
    final_model: Literal["last", "best", "average"] = "average"
    average_last: int = 3  # checkpoints averaged when final_model is "average"
    log_every: int = 25  # steps

    def __post_init__(self) -> None:
        if self.num_epochs <= 0 and self.max_steps <= 0 and self.max_minutes <= 0:
            raise ValueError("set at least one of num_epochs, max_steps, max_minutes")
        if self.lr_schedule == "cosine" and self.num_epochs <= 0 and self.max_steps <= 0:
            raise ValueError("lr_schedule cosine needs num_epochs or max_steps for its length")
        if self.keep_last < 1 or self.checkpoint_every < 1 or self.log_every < 1 or self.num_procs < 1:
            raise ValueError("keep_last, checkpoint_every, log_every and num_procs must be >= 1")
        if self.final_model == "average" and not 1 <= self.average_last <= self.keep_last:
            raise ValueError(f"average_last must be in [1, keep_last={self.keep_last}]")
        if self.max_duration <= 0 or self.lr <= 0 or self.warmup_steps < 0:
            raise ValueError("max_duration and lr must be positive and warmup_steps >= 0")


@dataclass
class Progress:
    """Where training is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    elapsed_s: float = 0.0
    train_losses: list[float] = field(default_factory=list)  # per step, nats per token
    valid: list[list[float]] = field(default_factory=list)  # [step, epoch, loss] per validation
    best_valid_loss: float = math.inf
    frames: int = 0  # input frames trained on


def lr_factor(cfg: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Step -> multiplier of the peak learning rate (a function of the step count only)."""
    warmup = max(cfg.warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.lr_schedule == "noam":
            return math.sqrt(warmup / (step + 1))
        done = min((step - warmup) / max(total_steps - warmup, 1), 1.0)
        return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * done))

    return factor


def schedule_length(cfg: TrainConfig, cuts_train: CutSet) -> int:
    """Steps the cosine schedule spans: ``max_steps``, else ``num_epochs`` x batches in epoch 0."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    sampler = make_sampler(cuts_train, cfg.max_duration, shuffle=True, seed=cfg.seed, num_buckets=cfg.num_buckets)
    return cfg.num_epochs * sum(1 for _ in sampler)


def finished(cfg: TrainConfig, progress: Progress) -> bool:
    """True once a stopping criterion is met."""
    return stopped_by(cfg, progress) is not None


def stopped_by(cfg: TrainConfig, progress: Progress) -> str | None:
    """The criterion that stops training at ``progress`` (``max_steps``, ``num_epochs`` or
    ``max_minutes``), or None. The two that do not depend on the machine come first: a run that
    reaches its step or epoch limit as its time runs out ends where an unhurried run would."""
    if cfg.max_steps > 0 and progress.step >= cfg.max_steps:
        return "max_steps"
    if cfg.num_epochs > 0 and progress.epoch >= cfg.num_epochs:
        return "num_epochs"
    if cfg.max_minutes > 0 and progress.elapsed_s >= 60 * cfg.max_minutes:
        return "max_minutes"
    return None


def check_resumable(path: Path, saved: dict, current: dict) -> None:
    """``NeuroselError`` if the checkpoint was trained with a config that differs in a key that
    changes what a step computes."""
    for key in sorted(set(saved) | set(current)):
        if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key):
            raise NeuroselError(
                f"{path}: trained with {key}={saved.get(key)!r} but the config now says {current.get(key)!r}; "
                f"restore the config, or remove the checkpoints (or use a new exp dir) to start over"
            )


def as_cuts(cuts: CutSet | str | Path, split: str) -> CutSet:
    """A non-empty CutSet, or a path to one (read lazily)."""
    cut_set = cuts if isinstance(cuts, CutSet) else load_manifest_lazy(cuts)
    if next(iter(cut_set), None) is None:
        where = f"{split} cuts" if isinstance(cuts, CutSet) else str(cuts)
        raise NeuroselError(f"{where}: the {split} cut set is empty")
    return cut_set


def train(cfg: TrainConfig, cuts_train: CutSet | str | Path, cuts_dev: CutSet | str | Path,
          lang_dir: str | Path, cmvn_path: str | Path, exp_dir: str | Path, quiet: bool = False,
          group: ProcessGroup = SINGLE) -> Path:
    """Train (or resume, or finish) stage 3 in ``exp_dir``; returns the path of ``model.pt``.

    ``cuts_*``: cuts with fbank features and one transcribed supervision each; ``lang_dir``: holds
    ``bpe.model`` (piece 0 = ``<blk>``); ``cmvn_path``: ``cmvn.npz`` with ``mean``/``std``.
    ``group``: this process's place in a multi-process run (every process calls ``train`` with the
    same arguments; only rank 0 writes files); see ``neurosel.train.distributed``.
    """
    exp_dir = Path(exp_dir)
    logger = logging.getLogger("neurosel")
    if not group.is_main:
        logger.setLevel(logging.WARNING)  # rank 0 reports for all
        return _train(cfg, as_cuts(cuts_train, "train"), as_cuts(cuts_dev, "dev"), Path(lang_dir), Path(cmvn_path),
                      exp_dir, True, group)
    (exp_dir / "log").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(exp_dir / "log" / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return _train(cfg, as_cuts(cuts_train, "train"), as_cuts(cuts_dev, "dev"), Path(lang_dir), Path(cmvn_path),
                      exp_dir, quiet, group)
    finally:
        logger.removeHandler(handler)
        handler.close()


def restore_process_rng(state: dict, group: ProcessGroup, seed: int, step: int) -> None:
    """Resume this process's RNG streams from a checkpoint: its own saved states when the
    checkpoint has one per process of a run of this size, else rank 0's (``rng``) on rank 0 and
    fresh streams derived from (seed, rank, step) on the others."""
    per_process = state.get("rng_per_process")
    if per_process is not None and len(per_process) == group.world_size:
        restore_rng_state(per_process[group.rank])
    elif group.is_main:
        restore_rng_state(state["rng"])
    else:
        seed_rngs(process_seed(seed, group.rank, step))


@dataclass
class Run:
    """What the training loop works on, built once by ``start_run``: the model (``trained`` is the
    same module, or DistributedDataParallel around it), optimizer, schedule, data, where training
    is, and where it reports."""

    cfg: TrainConfig
    exp_dir: Path
    group: ProcessGroup
    model: nn.Module
    trained: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: DynamicBucketingSampler
    dataset: CtcDataset
    dev_sampler: DynamicBucketingSampler
    dev_dataset: CtcDataset
    progress: Progress
    writer: SummaryWriter | None
    bar: tqdm
    started: float = field(default_factory=time.monotonic)  # this process's start, for elapsed_s
    elapsed_before: float = 0.0  # training time of the runs this one resumes
    window: dict = field(default_factory=dict)  # the steps since the last log line

    def elapsed(self) -> float:
        """Training wall time summed over resumed runs, in seconds."""
        return self.elapsed_before + time.monotonic() - self.started


def start_run(cfg: TrainConfig, cuts_train: CutSet, cuts_dev: CutSet, lang_dir: Path, cmvn_path: Path,
              exp_dir: Path, quiet: bool, group: ProcessGroup) -> Run:
    """Data, model, optimizer and schedule; resumed from the newest checkpoint in ``exp_dir`` if
    there is one (``check_resumable``), else from the seed."""
    torch.set_num_threads(cfg.num_threads)
    sp = load_bpe(lang_dir)
    if cfg.model.vocab_size not in (0, sp.get_piece_size()):
        raise NeuroselError(f"{lang_dir}/bpe.model has {sp.get_piece_size()} pieces but model.vocab_size is "
                            f"{cfg.model.vocab_size} (set it to 0 to take it from the lang dir)")
    cfg = replace(cfg, model=replace(cfg.model, vocab_size=sp.get_piece_size()))
    cmvn = load_cmvn(cmvn_path)
    start = start_from(cfg.init, lang_dir, Path(cmvn_path)) if cfg.init.model else None
    if start is not None:
        cfg = replace(cfg, model=start.model_cfg)

    seed_rngs(cfg.seed)  # the same initial weights in every process
    model = build_model(cfg.model)
    checkpoints = list_checkpoints(exp_dir)
    if start is not None and not checkpoints:
        load_start(model, start)
    model = model.to(group.device)
    params = list(model.parameters())
    opt_class = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_class(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    total_steps = schedule_length(cfg, cuts_train) if cfg.lr_schedule == "cosine" else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, total_steps))
    sampler = make_sampler(cuts_train, cfg.max_duration, shuffle=True, seed=cfg.seed, num_buckets=cfg.num_buckets)
    dev_sampler = make_sampler(cuts_dev, cfg.max_duration, shuffle=False, num_buckets=cfg.num_buckets)
    progress = Progress()

    if checkpoints:
        state = load_checkpoint(checkpoints[-1])
        check_resumable(checkpoints[-1], state["train_config"], asdict(cfg))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(copy.deepcopy(state["sampler"]))
        progress = Progress(**state["progress"])
        restore_process_rng(state, group, cfg.seed, progress.step)
        log.info("resuming from %s (step %d, epoch %d)", checkpoints[-1], progress.step, progress.epoch)
    else:
        sampler.set_epoch(0)
        if not group.is_main:  # rank 0 continues the single-process streams, the others get their own
            seed_rngs(process_seed(cfg.seed, group.rank, 0))
        log.info("training %s: %d parameters, %s", exp_dir, sum(p.numel() for p in params), cfg.model)
    if group.is_main:  # only once the run is known to start or resume: a refused config changes nothing
        save(cfg, exp_dir / "config.yaml")
    if group.world_size > 1:
        log.info("%d training processes share each batch of %.0f s (backend %s, %d threads each)",
                 group.world_size, cfg.max_duration, backend(), cfg.num_threads)
    writer = None
    if group.is_main:
        writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=progress.step if checkpoints else None)
    bar = tqdm(total=cfg.max_steps or None, initial=progress.step, desc="train", unit="step",
               disable=True if quiet else None)
    return Run(cfg, exp_dir, group, model, group.wrap(model), params, optimizer, scheduler,
               sampler, CtcDataset(sp, cmvn, TrainingAugment(cfg.spec_augment, cfg.feature_warp)), dev_sampler,
               CtcDataset(sp, cmvn),
               progress, writer, bar, elapsed_before=progress.elapsed_s,
               window={"t": time.monotonic(), "frames": 0, "losses": []})


def _train(cfg: TrainConfig, cuts_train: CutSet, cuts_dev: CutSet, lang_dir: Path, cmvn_path: Path,
           exp_dir: Path, quiet: bool, group: ProcessGroup) -> Path:
    """The training loop: epochs of ``train_one_epoch``, each followed by validation and a
    checkpoint, until a stopping criterion; then ``model.pt``. With ``init.mode: as_is``, no
    training: the initial model, checked against this recipe, is ``model.pt``."""
    if cfg.init.model and cfg.init.mode == "as_is":
        return use_as_is(cfg, lang_dir, cmvn_path, exp_dir, group)
    run = start_run(cfg, cuts_train, cuts_dev, lang_dir, cmvn_path, exp_dir, quiet, group)
    cfg, progress = run.cfg, run.progress
    try:
        while not finished(cfg, progress):
            train_one_epoch(run)
            if finished(cfg, progress):
                break
            validate(run)
            progress.epoch += 1
            run.sampler.set_epoch(progress.epoch)
            save_state(run)
        if not progress.valid or progress.valid[-1][0] != progress.step:
            validate(run)
            save_state(run)
    finally:
        run.bar.close()
        if run.writer is not None:
            run.writer.close()
    path = finalize(cfg, exp_dir, progress) if group.is_main else exp_dir / "model.pt"
    group.barrier()  # every process returns once model.pt is written
    return path


def train_one_epoch(run: Run) -> None:
    """Train on the rest of the current epoch's batches (this process's share of each), or until a
    stopping criterion is met: one ``train_step`` per batch, then the step's bookkeeping, a log
    line every ``log_every`` steps and a checkpoint every ``checkpoint_every``."""
    cfg, progress, group = run.cfg, run.progress, run.group
    run.trained.train()
    for cuts in run.sampler:
        batch_frames = sum(cut.num_frames for cut in cuts)
        batch = run.dataset[group.shard(cuts)].to(group.device)
        loss = train_step(run.trained, batch, run.params, run.optimizer, run.scheduler, cfg.grad_clip, group)
        progress.step += 1
        progress.train_losses.append(loss)
        progress.frames += batch_frames
        run.window["frames"] += batch_frames
        run.window["losses"].append(loss)
        run.bar.update(1)
        run.bar.set_postfix(epoch=progress.epoch, loss=f"{loss:.3f}")
        if progress.step % cfg.log_every == 0:
            log_window(run)
        progress.elapsed_s = group.from_main(run.elapsed())  # every process stops at the same step
        if progress.step % cfg.checkpoint_every == 0:
            save_state(run)
        if finished(cfg, progress):
            return


def log_window(run: Run) -> None:
    """Log (and write to TensorBoard) the mean loss, learning rate and speed since the last call."""
    window, progress = run.window, run.progress
    seconds = time.monotonic() - window["t"]
    lr = run.scheduler.get_last_lr()[0]
    mean_loss = sum(window["losses"]) / len(window["losses"])
    log.info("epoch %d step %d: loss %.4f lr %.2e, %.2f steps/s, %.0f frames/s", progress.epoch,
             progress.step, mean_loss, lr, len(window["losses"]) / seconds, window["frames"] / seconds)
    if run.writer is not None:
        run.writer.add_scalar("train/loss", mean_loss, progress.step)
        run.writer.add_scalar("train/lr", lr, progress.step)
        run.writer.add_scalar("train/frames_per_s", window["frames"] / seconds, progress.step)
    window.update(t=time.monotonic(), frames=0, losses=[])


def validate(run: Run) -> None:
    """The validation loss per token on dev; ``best.pt`` when it is the lowest so far."""
    progress = run.progress
    batches = (run.dev_dataset[run.group.shard(cuts)].to(run.group.device) for cuts in run.dev_sampler)
    loss = evaluate(run.model, batches, run.group)
    progress.valid.append([progress.step, progress.epoch, loss])
    if run.writer is not None:
        run.writer.add_scalar("valid/loss", loss, progress.step)
    log.info("epoch %d step %d: validation loss %.4f per token", progress.epoch, progress.step, loss)
    if loss < progress.best_valid_loss:
        progress.best_valid_loss = loss
        if run.group.is_main:
            save_model(run.model, run.exp_dir / "best.pt", step=progress.step, valid_loss=loss)


def save_state(run: Run) -> None:
    """A resumable checkpoint: model, optimizer, schedule, sampler, every process's RNG streams and
    the progress (rank 0 writes it)."""
    progress, group = run.progress, run.group
    progress.elapsed_s = group.from_main(run.elapsed())
    rngs = group.gather(rng_state())
    if not group.is_main:
        return
    state = {
        "model": run.model.state_dict(), "config": asdict(run.cfg.model), "train_config": asdict(run.cfg),
        "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
        "sampler": run.sampler.state_dict(), "rng": rngs[0], "progress": asdict(progress),
    }
    if group.world_size > 1:
        state["rng_per_process"] = rngs
    save_checkpoint(run.exp_dir, progress.step, state, run.cfg.keep_last)


def finalize(cfg: TrainConfig, exp_dir: Path, progress: Progress) -> Path:
    """Write ``model.pt`` (the configured final weights, FC norms folded) and ``loss.png``."""
    checkpoints = list_checkpoints(exp_dir)
    if cfg.final_model == "best":
        sources = [exp_dir / "best.pt"]
        weights = torch_load(sources[0])["model"]
    elif cfg.final_model == "average":
        sources = checkpoints[-cfg.average_last:]
        weights = average_model_states(sources)
    else:
        sources = checkpoints[-1:]
        weights = torch_load(sources[0])["model"]
    model = build_model(cfg.model)
    model.load_state_dict(weights)
    fold_norms(model.eval())
    path = exp_dir / "model.pt"
    reason = stopped_by(cfg, progress)
    save_model(model, path, train_config=asdict(cfg), step=progress.step, sources=[p.name for p in sources],
               stopped_by=reason)
    plot_losses(progress.train_losses, progress.valid, exp_dir / "loss.png")
    log.info("wrote %s from %s; %d steps, %d epochs, %.1f min, %.0f frames/s, best validation loss %.4f; "
             "stopped by %s", path, ", ".join(p.name for p in sources), progress.step, progress.epoch,
             progress.elapsed_s / 60, progress.frames / max(progress.elapsed_s, 1e-9), progress.best_valid_loss,
             reason)
    if reason == "max_minutes":
        log.warning("training was cut short by max_minutes=%g after %d steps (%d epochs); another run of this "
                    "config on a machine with another load stops at another step", cfg.max_minutes,
                    progress.step, progress.epoch)
    return path
