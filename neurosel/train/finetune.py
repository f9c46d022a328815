"""Fine-tuning a trained (possibly pruned) model for a fixed number of steps on a fixed batch plan:
the retraining of issue 16 part 1 and its control.

A pruned system and the unpruned control (``baseline_ft``) must differ only in the removal, so
every system is fine-tuned with the same ``batch_plan`` (the cut ids of each step, from Lhotse's
seeded duration-bucketed sampler, epoch after epoch until ``steps`` batches), the same optimiser
(Adam on every parameter, constant learning rate, gradient clipping) and the same learning rate,
chosen once on dev by ``dev_loss`` (CTC loss per token, no decoding, no test data).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
from lhotse import CutSet
from torch import nn

from neurosel.data.batches import CtcDataset, make_sampler
from neurosel.errors import NeuroselError
from neurosel.train.augment import FeatureWarpConfig
from neurosel.train.loop import ctc_loss_sum, train_step


@dataclass
class FinetuneConfig:
    """``conf/retrain.yaml``: ``steps`` updates on batches of ``max_duration`` seconds of
    in-domain ``train``, once per retraining seed of ``seeds`` (seed k: the data order of
    ``batch_plan(.., k, ..)`` and torch seed k); the learning rate is the one of ``lr_grid`` with
    the lowest dev loss after fine-tuning the unpruned baseline with the first seed.
    ``feature_warp``: the training batches' perturbation (stage 3's is in ``conf/train.yaml``);
    its draws follow the torch seed, reset to the seed before each system, so every system of a
    seed sees the same perturbed batches."""

    steps: int = 256
    max_duration: float = 50.0
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    lr_grid: list[float] = field(default_factory=lambda: [1.0e-4, 3.0e-4, 1.0e-3])
    grad_clip: float = 5.0
    systems: list[str] = field(default_factory=lambda: ["prune_hyper_hypo", "prune_random"])
    feature_warp: FeatureWarpConfig = field(default_factory=FeatureWarpConfig)
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_duration <= 0:
            raise ValueError("steps must be >= 1 and max_duration > 0")
        if not self.lr_grid or any(lr <= 0 for lr in self.lr_grid):
            raise ValueError("lr_grid needs at least one positive learning rate")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError("seeds needs at least one seed, distinct and >= 0")


def batch_plan(cuts: CutSet, max_duration: float, seed: int, steps: int) -> list[list[str]]:
    """The cut ids of each of ``steps`` batches: the seeded sampler's epochs 0, 1, ... in turn."""
    plan: list[list[str]] = []
    sampler = make_sampler(cuts, max_duration, shuffle=True, seed=seed)
    epoch = 0
    while len(plan) < steps:
        sampler.set_epoch(epoch)
        before = len(plan)
        for batch in sampler:
            plan.append([c.id for c in batch])
            if len(plan) == steps:
                break
        if len(plan) == before:
            raise NeuroselError("fine-tuning: the training cuts give no batch")
        epoch += 1
    return plan


def plan_digest(plan: list[list[str]]) -> str:
    """SHA-256 of a batch plan: equal digests, equal steps and data order."""
    return hashlib.sha256(json.dumps(plan).encode()).hexdigest()


def finetune(model: nn.Module, cuts: CutSet, dataset: CtcDataset, plan: list[list[str]], lr: float,
             grad_clip: float = 5.0, device: torch.device = torch.device("cpu")) -> list[float]:
    """Update every parameter of ``model`` (on ``device``) once per batch of ``plan`` (Adam,
    constant ``lr``); returns the loss per token of each step."""
    by_id = {c.id: c for c in cuts}
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    model.train()
    losses = []
    for ids in plan:
        batch = dataset[CutSet.from_cuts(by_id[i] for i in ids)].to(device)
        losses.append(train_step(model, batch, params, optimizer, grad_clip=grad_clip))
    model.eval()
    return losses


@torch.no_grad()
def dev_loss(model: nn.Module, cuts: CutSet, dataset: CtcDataset, max_duration: float,
             device: torch.device = torch.device("cpu")) -> float:
    """CTC loss per token of ``model`` (on ``device``) on ``cuts`` (eval mode, every cut once)."""
    model.eval()
    total, tokens = 0.0, 0
    for batch_cuts in make_sampler(cuts, max_duration, shuffle=False):
        loss_sum, n = ctc_loss_sum(model, dataset[batch_cuts].to(device))
        total, tokens = total + float(loss_sum), tokens + n
    if tokens == 0:
        raise NeuroselError("fine-tuning: the dev cuts have no target tokens")
    return total / tokens
