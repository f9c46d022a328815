"""Test-time adaptation (TTA) of any model with per-frame class scores, one utterance at a time.

The objective is SUTA's (Lin et al., "Listen, Adapt, Better WER: Source-free Single-utterance
Test-time Adaptation for ASR", Interspeech 2022): with p = softmax(z / T) the frame posteriors at
temperature T,

    L = em_coef * mean over frames of H(p_t)         (entropy minimisation; by default over the
                                                       frames whose arg-max is not blank)
      + (1 - em_coef) * MCC(p)                        (minimum class confusion)

    MCC(p) = (sum_{i != j} C_ij / s_j) / V,  C = P^T P (V x V, P the frames' posteriors),
    s_j = sum_i C_ij,

which is SUTA's code divided by the number of classes V (SUTA's ``class_num`` is its
vocabulary size, 32). Defaults are SUTA's LibriSpeech ones: 10 steps, em_coef 0.3, T 2.5, AdamW.

Which parameters move is the caller's choice, made with the rest of ``neurosel.adapt``: all of
them, a layer subset (``blind_selection``), LHUC scales (``add_lhuc``) or single FC neurons
(``apply_selection`` with ``Selection(neurons=...)``, where every other entry stays bit-identical);
``TtaAdapter`` takes the resulting trainable tensors. Modes:

- episodic: adapt on the utterance, emit its scores, restore the trainable tensors bit for bit
  and start the next utterance from the source model with a fresh optimizer;
- continual: no reset, optionally with DSUTA's slow/fast pair (Lin et al., 2024): a slow state
  updated with one step on a buffer of the last ``buffer_size`` utterances each time the buffer
  fills, and a fast state adapted per utterance starting from the slow one; and a drift reset
  that returns the slow state to the source model when an utterance's first-step loss is more than
  ``drift_sigmas`` standard deviations from the mean of the previous ones (either way: a shift
  can make a model more confident as well as less).

The model runs in eval mode throughout (no dropout noise); running statistics of normalisation
layers (if any) do not adapt. Padded frames never enter the objective.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError

# forward(model, batch) -> (frame scores (B, T, V) as logits or log-probs, frame mask (B, T) bool)
Forward = Callable[[nn.Module, Any], tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class TtaConfig:
    """Steps, optimiser and objective of test-time adaptation, and the continual mode's options."""

    steps: int = 10
    lr: float = 1e-4
    optimizer: Literal["adamw", "sgd"] = "adamw"
    em_coef: float = 0.3
    temperature: float = 2.5
    non_blank: bool = True  # entropy over frames whose arg-max is not blank
    blank: int = 0
    mode: Literal["episodic", "continual"] = "episodic"
    slow_fast: bool = False  # continual: DSUTA's slow/fast pair
    buffer_size: int = 8  # continual slow/fast: utterances per slow update
    drift_sigmas: float = 0.0  # continual: reset to the source when the loss drifts (0: never)
    drift_warmup: int = 10  # utterances seen before a drift reset can happen

    def __post_init__(self) -> None:
        if self.steps < 0 or not self.lr > 0 or not 0.0 <= self.em_coef <= 1.0 or not self.temperature > 0:
            raise NeuroselError(f"TTA config: need steps >= 0, lr > 0, em_coef in [0, 1], temperature > 0 "
                                f"(got {self})")
        if self.buffer_size < 1 or self.drift_sigmas < 0 or self.drift_warmup < 2:
            raise NeuroselError(f"TTA config: need buffer_size >= 1, drift_sigmas >= 0, drift_warmup >= 2 "
                                f"(got {self})")


def frame_entropy(scores: Tensor, temperature: float = 1.0) -> Tensor:
    """(..., V) logits or log-probs -> (...) entropy in nats of softmax(scores / temperature)."""
    logp = (scores / temperature).log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def mcc(scores: Tensor, temperature: float = 1.0) -> Tensor:
    """Minimum class confusion of (N, V) frames (see the module docs); 0 when no two classes
    share a frame, (V - 1) / V for uniform posteriors."""
    p = (scores / temperature).softmax(-1)
    confusion = p.T @ p
    confusion = confusion / confusion.sum(1)
    return (confusion.sum() - confusion.trace()) / scores.shape[-1]


def suta_objective(scores: Tensor, frame_mask: Tensor, config: TtaConfig) -> Tensor:
    """SUTA's loss of a batch: (B, T, V) frame scores, (B, T) bool mask of real frames -> scalar.
    Entropy frames are the real ones (and non-blank ones with ``config.non_blank``; all real ones
    if every frame is blank); MCC is taken per utterance and averaged."""
    if scores.dim() != 3 or tuple(frame_mask.shape) != tuple(scores.shape[:2]):
        raise NeuroselError(f"TTA: scores {tuple(scores.shape)} and frame mask {tuple(frame_mask.shape)} "
                            "do not match (B, T, V) and (B, T)")
    if not frame_mask.any():
        raise NeuroselError("TTA: the batch has no real frame")
    loss = scores.new_zeros(())
    if config.em_coef > 0:
        frames = frame_mask
        if config.non_blank:
            speech = frame_mask & (scores.argmax(-1) != config.blank)
            frames = speech if speech.any() else frame_mask
        loss = loss + config.em_coef * frame_entropy(scores[frames], config.temperature).mean()
    if config.em_coef < 1:
        per_utt = [mcc(scores[b][frame_mask[b]], config.temperature)
                   for b in range(scores.shape[0]) if frame_mask[b].any()]
        loss = loss + (1 - config.em_coef) * torch.stack(per_utt).mean()
    return loss


class _Snapshot:
    """Copies of a list of tensors, written back bit for bit by ``restore``."""

    def __init__(self, tensors: list[Tensor]) -> None:
        self.tensors = tensors
        self.saved = [t.detach().clone() for t in tensors]

    def restore(self) -> None:
        with torch.no_grad():
            for t, s in zip(self.tensors, self.saved):
                t.copy_(s)

    def take(self) -> None:
        with torch.no_grad():
            for t, s in zip(self.tensors, self.saved):
                s.copy_(t)


@dataclass
class TtaStep:
    """What adapting one batch did: the objective before each step (``losses[0]`` is the
    unadapted one) and whether a drift reset happened first."""

    losses: list[float]
    reset: bool = False


class TtaAdapter:
    """Adapts ``trainable`` (tensors of ``model`` with ``requires_grad``, e.g. from
    ``apply_selection`` or ``add_lhuc``) on each batch before scoring it; see the module docs.

    ``adapt(batch)`` returns the frame scores of the adapted model (no gradient) and records a
    ``TtaStep`` in ``history``. ``reset()`` returns to the source parameters.
    """

    def __init__(self, model: nn.Module, trainable: Iterable[Tensor], forward: Forward,
                 config: TtaConfig = TtaConfig()) -> None:
        self.model = model
        self.trainable = list(trainable)
        if not self.trainable or not all(t.requires_grad for t in self.trainable):
            raise NeuroselError("TTA: nothing to adapt (give the tensors that apply_selection, add_lhuc "
                                "or requires_grad_ made trainable)")
        self.forward = forward
        self.config = config
        self.source = _Snapshot(self.trainable)
        self.slow = _Snapshot(self.trainable)  # continual slow/fast: the slow state
        self.buffer: list[Any] = []
        self.history: list[TtaStep] = []
        self._first_losses: list[float] = []
        self._optimizer = self._new_optimizer()

    def state_dict(self) -> dict[str, Any]:
        """Everything ``load_state_dict`` needs to go on exactly where this adapter is (the
        trainable tensors, the slow state, the optimizer, the drift statistics and the buffered
        batches, which must then be tensors or containers of them)."""
        return {"trainable": [t.detach().clone() for t in self.trainable],
                "slow": [s.clone() for s in self.slow.saved],
                "optimizer": self._optimizer.state_dict(),
                "first_losses": list(self._first_losses),
                "buffer": list(self.buffer)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from what ``state_dict`` returned (on an adapter built the same way)."""
        if [t.shape for t in state["trainable"]] != [t.shape for t in self.trainable]:
            raise NeuroselError("TTA state: the trainable tensors do not match this adapter's")
        with torch.no_grad():
            for t, v in zip(self.trainable, state["trainable"]):
                t.copy_(v)
            for s, v in zip(self.slow.saved, state["slow"]):
                s.copy_(v)
        self._optimizer = self._new_optimizer()
        self._optimizer.load_state_dict(state["optimizer"])
        self._first_losses = list(state["first_losses"])
        self.buffer = list(state["buffer"])

    def _new_optimizer(self) -> torch.optim.Optimizer:
        if self.config.optimizer == "sgd":
            return torch.optim.SGD(self.trainable, lr=self.config.lr)
        return torch.optim.AdamW(self.trainable, lr=self.config.lr, weight_decay=0.0)

    def reset(self) -> None:
        """Back to the source parameters, an empty buffer and a fresh optimizer."""
        self.source.restore()
        self.slow.take()
        self.buffer.clear()
        self._first_losses.clear()
        self._optimizer = self._new_optimizer()

    def _steps(self, batch: Any, steps: int) -> list[float]:
        losses = []
        for _ in range(steps):
            scores, mask = self.forward(self.model, batch)
            loss = suta_objective(scores, mask, self.config)
            if not torch.isfinite(loss):
                raise NeuroselError(f"TTA: the objective is not finite at lr {self.config.lr:g} (diverged; lower "
                                    "the learning rate)")
            losses.append(float(loss.detach()))
            self._optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self._optimizer.step()
        return losses

    def _drifted(self, first_loss: float) -> bool:
        seen = self._first_losses
        if not self.config.drift_sigmas or len(seen) < self.config.drift_warmup:
            return False
        mean = sum(seen) / len(seen)
        std = math.sqrt(sum((x - mean) ** 2 for x in seen) / (len(seen) - 1))
        return abs(first_loss - mean) > self.config.drift_sigmas * max(std, 1e-12)

    def adapt(self, batch: Any) -> Tensor:
        """Adapt on ``batch`` as the mode says and return its (B, T, V) scores after adaptation."""
        cfg = self.config
        was_training = self.model.training
        self.model.eval()
        try:
            reset = False
            if cfg.mode == "continual" and cfg.drift_sigmas:
                with torch.no_grad():
                    scores, mask = self.forward(self.model, batch)
                    first = float(suta_objective(scores, mask, cfg))
                if self._drifted(first):
                    self.reset()
                    reset = True
                self._first_losses.append(first)
            with torch.enable_grad():
                losses = self._steps(batch, cfg.steps)
            with torch.no_grad():
                scores, mask = self.forward(self.model, batch)
                if not torch.isfinite(scores[mask]).all():
                    raise NeuroselError(f"TTA: the adapted model's scores are not finite after {cfg.steps} steps at "
                                        f"lr {cfg.lr:g} (diverged; lower the learning rate)")
                losses.append(float(suta_objective(scores, mask, cfg)))
            self.history.append(TtaStep(losses, reset))
            if cfg.mode == "episodic":
                self.source.restore()
                self._optimizer = self._new_optimizer()
            elif cfg.slow_fast:
                self._update_slow(batch)
            return scores.detach()
        finally:
            self.model.train(was_training)

    def _update_slow(self, batch: Any) -> None:
        """Fast state done: back to the slow state (fresh optimizer for the next fast state); when
        the buffer is full, one step of the slow state on the buffered utterances (each its own
        batch, gradients averaged)."""
        self.slow.restore()
        self.buffer.append(batch)
        if len(self.buffer) >= self.config.buffer_size:
            optimizer = self._new_optimizer()
            optimizer.zero_grad(set_to_none=True)
            with torch.enable_grad():
                for item in self.buffer:
                    scores, mask = self.forward(self.model, item)
                    (suta_objective(scores, mask, self.config) / len(self.buffer)).backward()
            optimizer.step()
            self.slow.take()
            self.buffer.clear()
        self._optimizer = self._new_optimizer()


def interleave(sets: dict[str, list[str]], segment: int, seed: int) -> list[tuple[str, str]]:
    """A stream of (set name, item id) that switches set every ``segment`` items, in an order drawn
    from ``seed``: each set's items keep their order and are cut into segments, and the
    segments of all sets are shuffled with the constraint that two neighbours come from different
    sets where that is possible (a set-change every ``segment`` items, as in DSUTA's multi-domain
    sequences). The same arguments always give the same stream."""
    if segment < 1:
        raise NeuroselError(f"stream segment must be >= 1, got {segment}")
    rng = random.Random(seed)
    pending = {name: [ids[i:i + segment] for i in range(0, len(ids), segment)]
               for name, ids in sorted(sets.items()) if ids}
    stream: list[tuple[str, str]] = []
    last = None
    while pending:
        choices = [n for n in pending if n != last] or list(pending)
        weights = [len(pending[n]) for n in choices]
        name = rng.choices(choices, weights)[0]
        stream += [(name, item) for item in pending[name].pop(0)]
        if not pending[name]:
            del pending[name]
        last = name
    return stream
