"""The CTC optimisation loop, independent of where batches and targets come from: stage 3 feeds it
transcripts, the adaptation stage pseudo-labels and a restricted set of parameters.

Loss convention: the sum of per-utterance CTC losses (optionally weighted per utterance) divided
by the number of target tokens in the batch, i.e. nats per token.
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

import torch
from torch import nn

from neurosel.train.data import Batch

log = logging.getLogger(__name__)


def ctc_loss_sum(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed (weighted) CTC loss of a batch and its number of target tokens.

    ``model(feats (B,T,F), feat_lens (B,)) -> (log_probs (B,T',V), out_lens (B,))``; blank is 0;
    utterances too long for their output length contribute 0 (``zero_infinity``).
    """
    log_probs, out_lens = model(batch.feats, batch.feat_lens)
    losses = nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, out_lens, batch.target_lens,
        blank=0, reduction="none", zero_infinity=True,
    )
    if batch.weights is not None:
        losses = losses * batch.weights
    return losses.sum(), int(batch.target_lens.sum())


def train_step(model: nn.Module, batch: Batch, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, grad_clip: float = 5.0) -> float:
    """One update on ``batch``: loss per token, backward, clip the gradient norm of ``params`` to
    ``grad_clip`` (0 = no clipping), optimizer and scheduler step. Returns the loss per token.

    A batch whose gradient is not finite is skipped (no parameter update; the scheduler still
    steps so that the schedule stays a function of the step count).
    """
    optimizer.zero_grad(set_to_none=True)
    loss_sum, num_tokens = ctc_loss_sum(model, batch)
    loss = loss_sum / max(num_tokens, 1)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if torch.isfinite(norm):
        optimizer.step()
    else:
        log.warning("non-finite gradient on batch starting with %s; update skipped", batch.cut_ids[0])
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach())


def run_steps(model: nn.Module, batches: Iterable[Batch], params: list[nn.Parameter],
              optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
              grad_clip: float = 5.0, on_step: Callable[[Batch, float], bool] | None = None) -> list[float]:
    """Train ``model`` (in train mode) on ``batches`` until they run out or ``on_step(batch, loss)``
    returns True. Only the parameters the optimizer holds move; ``params`` are the ones clipped.
    Returns the per-step losses (nats per token)."""
    model.train()
    losses = []
    for batch in batches:
        losses.append(train_step(model, batch, params, optimizer, scheduler, grad_clip))
        if on_step is not None and on_step(batch, losses[-1]):
            break
    return losses


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean CTC loss per target token over ``batches``, in eval mode (restores the previous mode)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        loss_sum, num_tokens = ctc_loss_sum(model, batch)
        total += float(loss_sum)
        tokens += num_tokens
    model.train(was_training)
    return total / max(tokens, 1)
