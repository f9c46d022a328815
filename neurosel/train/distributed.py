"""Data-parallel training over several processes with ``torch.distributed`` (gloo on CPU, NCCL when
CUDA is available), started in one of three ways:

- locally: ``num_procs: N`` in the train config (or ``--num-procs N``) makes the entry point
  ``spawn`` N processes on this machine, which meet through a TCP store it opens on 127.0.0.1;
- by ``torchrun`` (or any ``env://`` launcher): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``;
- by Slurm's ``srun`` with several tasks: ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``,
  ``SLURM_LOCALID``; the first host of the step is the master and the port comes from the job and
  step ids (``MASTER_ADDR``/``MASTER_PORT`` override both).

How the processes share one step: every process draws the same global batch from the same seeded
sampler and computes on its share of the batch's cuts (``ProcessGroup.shard``). The loss is
normalised by the batch's total number of target tokens (summed over processes), the gradients are
all-reduced by DistributedDataParallel, and BatchNorm statistics are computed over the whole batch
(``GlobalBatchNorm1d``). The model computes each utterance independently of its batch mates apart
from BatchNorm, so a step gives the single-process gradient up to float summation order: the loss
curve, the schedule, the number of steps and the checkpoints are those of one process, and a run
may resume with another number of processes. ``max_duration`` stays the global batch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.multiprocessing.spawn import ProcessException
from lhotse import CutSet
from torch import nn

from neurosel.errors import NeuroselError
from neurosel.cli import exit_on_sigterm

log = logging.getLogger("neurosel.train")


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a job started by an external launcher."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    launcher: str  # "torchrun" (any env:// launcher) or "srun"


def _int_env(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError) as e:
        raise NeuroselError(f"environment variable {name}={env.get(name)!r}: expected an integer") from e


def first_host(nodelist: str) -> str:
    """The first host of a Slurm node list (``node[03-05],gpu1`` -> ``node03``)."""
    if "[" not in nodelist:
        return nodelist.split(",")[0]
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as e:
        raise NeuroselError(f"cannot expand the Slurm node list {nodelist!r} (scontrol: {e}); "
                            f"set MASTER_ADDR") from e
    return out.stdout.split()[0]


def launch_from_env(env: Mapping[str, str] = os.environ) -> Launch | None:
    """The launch described by ``env``: torchrun's variables first, then those of an ``srun`` step
    of several tasks; ``None`` when neither is there (a plain process, or a Slurm batch script)."""
    if "RANK" in env and "WORLD_SIZE" in env:
        rank, world = _int_env(env, "RANK"), _int_env(env, "WORLD_SIZE")
        if world > 1 and ("MASTER_ADDR" not in env or "MASTER_PORT" not in env):
            raise NeuroselError("RANK and WORLD_SIZE are set but MASTER_ADDR or MASTER_PORT is not")
        return Launch(rank, world, _int_env(env, "LOCAL_RANK") if "LOCAL_RANK" in env else rank,
                      env.get("MASTER_ADDR", "127.0.0.1"), _int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else 0,
                      "torchrun")
    if "SLURM_STEP_NUM_TASKS" in env and _int_env(env, "SLURM_STEP_NUM_TASKS") > 1:
        job, step = _int_env(env, "SLURM_JOB_ID"), _int_env(env, "SLURM_STEP_ID")
        port = _int_env(env, "MASTER_PORT") if "MASTER_PORT" in env else 20000 + (job * 16 + step) % 20000
        addr = env.get("MASTER_ADDR") or first_host(env.get("SLURM_STEP_NODELIST", "localhost"))
        return Launch(_int_env(env, "SLURM_PROCID"), _int_env(env, "SLURM_STEP_NUM_TASKS"),
                      _int_env(env, "SLURM_LOCALID"), addr, port, "srun")
    return None


class _SumOverProcesses(torch.autograd.Function):
    """All-reduce (sum) with a gradient: the gradient of every process's copy of the sum is summed
    back into each process's input."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the whole batch across processes (what
    ``nn.SyncBatchNorm`` does on GPUs only). Same parameters and buffers as BatchNorm1d, so its
    state dict is a BatchNorm1d's. Input (N, C); a process may hold N = 0 rows."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C) -> (N, C); plain BatchNorm1d in eval mode or in a single process."""
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        local = torch.cat([x.sum(0), x.new_full((1,), float(x.size(0)))])
        total = _SumOverProcesses.apply(local)
        count = total[-1]
        frames = float(count.detach())
        if frames < 2:
            raise ValueError(f"BatchNorm over {int(frames)} frame(s) in the whole batch")
        mean = total[:-1] / count
        centred = x - mean
        var = _SumOverProcesses.apply(centred.pow(2).sum(0)) / count  # biased, as BatchNorm normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (frames / (frames - 1)), alpha=factor)
        y = centred * torch.rsqrt(var + self.eps)
        return y * self.weight + self.bias if self.affine else y


def globalize_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d in ``module`` (in place) by a GlobalBatchNorm1d holding the same
    parameter and buffer tensors; returns ``module``."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm1d:
            norm = GlobalBatchNorm1d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            norm.weight, norm.bias = child.weight, child.bias
            norm.running_mean, norm.running_var = child.running_mean, child.running_var
            norm.num_batches_tracked = child.num_batches_tracked
            norm.train(child.training)
            setattr(module, name, norm)
        else:
            globalize_batchnorm(child)
    return module


@dataclass
class ProcessGroup:
    """This process's place among the training processes; every method is a no-op (or the
    identity) for a single process. Collective methods must be called by all processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """True on the process that writes checkpoints, logs and TensorBoard (rank 0)."""
        return self.rank == 0

    def shard(self, cuts: CutSet) -> CutSet:
        """This process's share of a global batch: the cuts ordered by duration (longest first,
        ties by id) and dealt round-robin, so the shares have similar amounts of audio. May be
        empty when the batch has fewer cuts than processes."""
        if self.world_size == 1:
            return cuts
        ordered = sorted(cuts, key=lambda c: (-c.duration, c.id))
        return CutSet.from_cuts(ordered[self.rank::self.world_size])

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the processes (float64)."""
        if self.world_size == 1:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every process (e.g. a wall time all must stop on)."""
        if self.world_size == 1:
            return value
        shared = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.broadcast(shared, src=0)
        return float(shared)

    def gather(self, obj: Any) -> list[Any] | None:
        """Every process's ``obj`` (picklable) as a list by rank on rank 0; None elsewhere."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world_size > 1:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train with: ``model`` itself for one process; otherwise ``model`` with
        global BatchNorm inside DistributedDataParallel (gradients averaged over processes)."""
        if self.world_size == 1:
            return model
        globalize_batchnorm(model)
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        # buffers need no broadcast: global BatchNorm keeps the running statistics equal everywhere
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, forward_sync_buffers=False)


SINGLE = ProcessGroup()


def backend() -> str:
    """``nccl`` when CUDA is available, else ``gloo``."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def join(launch: Launch) -> ProcessGroup:
    """Initialise the default process group for a job started by torchrun or srun."""
    if launch.world_size == 1:
        return ProcessGroup(device=_device(launch.local_rank))
    dist.init_process_group(backend(), init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
                            rank=launch.rank, world_size=launch.world_size)
    log.info("process %d of %d (%s, backend %s, master %s:%d)", launch.rank, launch.world_size, launch.launcher,
             backend(), launch.master_addr, launch.master_port)
    return ProcessGroup(launch.rank, launch.world_size, launch.local_rank, _device(launch.local_rank))


def leave(group: ProcessGroup) -> None:
    """Tear down the default process group of a multi-process ``group``."""
    if group.world_size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def _worker(index: int, fn: Callable[..., Any], args: tuple, port: int, num_procs: int, errors: Any) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    exit_on_sigterm()
    store = dist.TCPStore("127.0.0.1", port, num_procs, is_master=False)
    dist.init_process_group(backend(), store=store, rank=index, world_size=num_procs)
    group = ProcessGroup(index, num_procs, index, _device(index))
    try:
        fn(group, *args)
    except NeuroselError as e:
        errors.put((index, str(e)))
        raise SystemExit(1) from None
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable[..., Any], num_procs: int, args: tuple = ()) -> None:
    """Run ``fn(group, *args)`` in ``num_procs`` new local processes (rank = index) and wait.

    ``fn`` and ``args`` must be picklable (a module-level function). When a process fails, the
    others are stopped and ``NeuroselError`` says which one and why.
    """
    store = dist.TCPStore("127.0.0.1", 0, num_procs + 1, is_master=True, wait_for_workers=False)
    log.info("starting %d training processes (backend %s, store 127.0.0.1:%d)", num_procs, backend(), store.port)
    errors = mp.get_context("spawn").SimpleQueue()
    try:
        mp.start_processes(_worker, args=(fn, args, store.port, num_procs, errors), nprocs=num_procs,
                           start_method="spawn")
    except ProcessException as e:
        reported = {}
        while not errors.empty():
            rank, message = errors.get()
            reported[rank] = message
        if reported:
            rank = min(reported)
            raise NeuroselError(f"training process {rank} of {num_procs}: {reported[rank]}") from None
        raise NeuroselError(f"training process {e.error_index} of {num_procs} failed: "
                            f"{str(e).strip().splitlines()[-1]}") from None


def process_seed(seed: int, rank: int, step: int) -> int:
    """A 32-bit seed for the RNG streams of process ``rank`` > 0 from ``step`` on."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{rank}:{step}".encode()).digest()[:4], "little")
