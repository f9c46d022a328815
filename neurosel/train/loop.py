"""The CTC optimisation loop, independent of where batches and targets come from: stage 3 feeds it
transcripts, the adaptation stage pseudo-labels and a restricted set of parameters.

Loss convention: the sum of per-utterance CTC losses (optionally weighted per utterance) divided
by the number of target tokens in the batch, i.e. nats per token. With several training processes
(``group``, see ``distributed``) each holds a share of the batch, and both sums are taken over all
shares, so the loss and the gradient are those of the whole batch.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

import torch
from torch import nn

from neurosel.data.batches import Batch

if TYPE_CHECKING:
    from neurosel.train.distributed import ProcessGroup

log = logging.getLogger(__name__)


def ctc_loss_sum(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed (weighted) CTC loss of a batch and its number of target tokens.

    ``model(feats (B,T,F), feat_lens (B,)) -> (log_probs (B,T',V), out_lens (B,))``; blank is 0;
    utterances too long for their output length contribute 0 (``zero_infinity``). A batch of no
    utterances gives a loss of 0 that still depends on every parameter (so that its process takes
    part in a multi-process backward pass).
    """
    log_probs, out_lens = model(batch.feats, batch.feat_lens)
    if log_probs.size(0) == 0:
        return log_probs.sum(), 0
    losses = nn.functional.ctc_loss(
        log_probs.transpose(0, 1), batch.targets, out_lens, batch.target_lens,
        blank=0, reduction="none", zero_infinity=True,
    )
    if batch.weights is not None:
        losses = losses * batch.weights
    return losses.sum(), int(batch.target_lens.sum())


def train_step(model: nn.Module, batch: Batch, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, grad_clip: float = 5.0,
               group: ProcessGroup | None = None) -> float:
    """One update on ``batch``: loss per token, backward, clip the gradient norm of ``params`` to
    ``grad_clip`` (0 = no clipping), optimizer and scheduler step. Returns the loss per token.

    A batch whose gradient is not finite is skipped (no parameter update; the scheduler still
    steps so that the schedule stays a function of the step count).

    With a multi-process ``group``, ``batch`` is this process's share and ``model`` averages the
    gradients over the processes (DistributedDataParallel): the loss is divided by the tokens of
    all shares and multiplied by the number of processes, so the average is the gradient of the
    whole batch's loss per token, which is returned.
    """
    optimizer.zero_grad(set_to_none=True)
    loss_sum, num_tokens = ctc_loss_sum(model, batch)
    if group is None or group.world_size == 1:
        loss = loss_sum / max(num_tokens, 1)
        reported = None
    else:
        total_loss, total_tokens = group.sum([float(loss_sum.detach()), num_tokens])
        loss = loss_sum * (group.world_size / max(total_tokens, 1))
        reported = total_loss / max(total_tokens, 1)
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if torch.isfinite(norm):
        optimizer.step()
    else:
        first = batch.cut_ids[0] if batch.cut_ids else "(an empty share)"
        log.warning("non-finite gradient on batch starting with %s; update skipped", first)
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach()) if reported is None else reported


@torch.inference_mode()
def evaluate(model: nn.Module, batches: Iterable[Batch], group: ProcessGroup | None = None) -> float:
    """Mean CTC loss per target token over ``batches``, in eval mode (restores the previous mode).
    With a multi-process ``group`` each process passes its shares and gets the mean over all."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches:
        if batch.feats.size(0) == 0:
            continue
        loss_sum, num_tokens = ctc_loss_sum(model, batch)
        total += float(loss_sum)
        tokens += num_tokens
    model.train(was_training)
    if group is not None:
        total, tokens = group.sum([total, tokens])
    return total / max(tokens, 1)
