"""Stage 3: ``python -m neurosel.bin.train [status] [--config conf/train.yaml] [--overlay conf/tiny.yaml]
[--set key=value] [--seed N] [--num-procs N] [--quiet] <fbank-dir> <lang-dir> <exp-dir>``.

Trains the CNN CTC model on ``<fbank-dir>/cuts_train.jsonl.gz`` (validating on ``cuts_dev``) with
targets from ``<lang-dir>/bpe.model`` and CMVN from ``<fbank-dir>/cmvn.npz``. Resumes from the
newest ``<exp-dir>/checkpoint-*.pt`` when there is one; writes ``<exp-dir>/model.pt`` at the end.

Several processes (see ``neurosel.train.distributed``): ``--num-procs N`` (or ``num_procs`` in the
config) spawns N local processes; started by ``torchrun --nproc-per-node N -m neurosel.bin.train``
or by ``srun --ntasks N python -m neurosel.bin.train``, the launcher's processes train together
(and ``num_procs`` is ignored). The number of processes is not part of the stage's fingerprint:
a run is done, or resumes, whatever number of processes it was started with.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lhotse import load_manifest_lazy

from neurosel import config as C
from neurosel.cli import config_args, run_main, show_progress
from neurosel.errors import NeuroselError
from neurosel.lang.bpe import load_bpe, unknown_characters
from neurosel.recipe import layout
from neurosel.stage import clear, fingerprint, mark_done, single_status, split_action, status
from neurosel.train import TrainConfig, train
from neurosel.train.checkpoint import list_checkpoints
from neurosel.train.distributed import SINGLE, ProcessGroup, join, launch_from_env, leave, spawn

log = logging.getLogger("neurosel.train")


def stage_config(cfg: TrainConfig) -> dict:
    """The config the stage marker hashes: everything but ``num_procs`` (how many processes share
    each batch does not change the model the stage makes), and ``init`` only when it names a model
    (so that runs from before it existed stay up to date)."""
    return {key: value for key, value in C.to_dict(cfg).items()
            if key != "num_procs" and not (key == "init" and not value["model"])}


def check_transcripts(manifests: list[Path], bpe_model: Path) -> None:
    """``NeuroselError`` naming the manifest, the cut and the characters when a transcript has
    characters that ``bpe_model`` can only spell as ``<unk>``."""
    sp = load_bpe(bpe_model)
    for manifest in manifests:
        for cut in load_manifest_lazy(manifest):
            for sup in cut.supervisions:
                chars = unknown_characters(sp, sup.text or "")
                if chars:
                    raise NeuroselError(
                        f"{manifest}: cut '{cut.id}': {''.join(chars)!r} cannot be spelled with {bpe_model} "
                        "(it would train <unk>); train the BPE model (stage 2) on text that has these characters")


def train_process(group: ProcessGroup, cfg: TrainConfig, inputs: list[Path], lang_dir: Path, exp_dir: Path,
                  quiet: bool) -> None:
    """One spawned training process (module level, so that it pickles)."""
    train(cfg, inputs[0], inputs[1], lang_dir, inputs[2], exp_dir, quiet=quiet, group=group)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--seed", type=int, help="random seed (overrides the config's seed)")
    parser.add_argument("--num-procs", type=int, help="training processes on this machine (overrides num_procs)")
    parser.add_argument("--force", action="store_true", help="train again from scratch even if up to date")
    parser.add_argument("fbank_dir", type=Path, help="stage 1 output: cuts_{train,dev}.jsonl.gz, cmvn.npz")
    parser.add_argument("lang_dir", type=Path, help="stage 2 output: bpe.model")
    parser.add_argument("exp_dir", type=Path, help="output: checkpoints, model.pt, logs")
    action, argv = split_action(argv)
    args = parser.parse_args(argv)
    overrides = (args.overrides + ([f"seed={args.seed}"] if args.seed is not None else [])
                 + ([f"num_procs={args.num_procs}"] if args.num_procs is not None else []))
    cfg = C.resolve(TrainConfig, args.config, args.overlay, "train", overrides)
    inputs = [layout.cuts_path(args.fbank_dir, layout.TRAIN), layout.cuts_path(args.fbank_dir, layout.DEV),
              layout.cmvn_path(args.fbank_dir), layout.bpe_model(args.lang_dir), *cfg.init.files()]
    for path in inputs:
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (run the earlier stages first)")
    if action == "status":
        return single_status("stage 3 (train)", args.exp_dir, stage_config(cfg), inputs, args.force)
    launch = launch_from_env()
    group = join(launch) if launch is not None else SINGLE
    try:
        if launch is not None and launch.world_size != cfg.num_procs:
            log.info("started by %s as %d process(es): num_procs=%d does not apply", launch.launcher,
                     launch.world_size, cfg.num_procs)
        return run_stage(args, cfg, inputs, group, spawn_procs=launch is None and cfg.num_procs > 1)
    finally:
        leave(group)


def run_stage(args: argparse.Namespace, cfg: TrainConfig, inputs: list[Path], group: ProcessGroup,
              spawn_procs: bool) -> int:
    """Skip, clean up, train (here, or in ``cfg.num_procs`` spawned processes) and mark stage 3
    done; called by every process of a launcher-started job, rank 0 alone changes files."""
    digest = fingerprint(stage_config(cfg), inputs)
    state = status(args.exp_dir, digest)
    group.barrier()  # every process has read the marker before rank 0 changes anything
    if state == "done" and not args.force:
        log.info("stage 3 (train): up to date in %s, skipping (use --force to redo)", args.exp_dir)
        return 0
    check_transcripts(inputs[:2], layout.bpe_model(args.lang_dir))  # before anything of a finished run goes
    if group.is_main:
        if state == "stale" or args.force:
            # a finished model of another config: its checkpoints cannot be resumed, start afresh.
            # Its model.pt (and best.pt) stay until the new run replaces them, so a failed or killed
            # new run loses nothing; until then there is no marker, and run.sh stops at stage 3.
            log.info("stage 3 (train): %s; removing the old checkpoints and training from scratch (the old "
                     "model.pt stays until the new one replaces it)",
                     "--force given" if args.force else "config or inputs changed since the last run")
            for old in list_checkpoints(args.exp_dir):
                old.unlink()
        clear(args.exp_dir)  # a killed run (no marker) resumes from its newest checkpoint
    group.barrier()
    quiet = not show_progress(args)
    if spawn_procs:
        spawn(train_process, cfg.num_procs, (cfg, inputs, args.lang_dir, args.exp_dir, quiet))
    else:
        train(cfg, inputs[0], inputs[1], args.lang_dir, inputs[2], args.exp_dir, quiet=quiet, group=group)
    if group.is_main:
        mark_done(args.exp_dir, digest, stage="train")
    return 0


if __name__ == "__main__":
    run_main(main)
