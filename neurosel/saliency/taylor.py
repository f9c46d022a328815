"""Gradient statistics of FC activations for the Taylor pruning criteria.

Removing neuron j sets a_j(t) to 0, a change of -a_j(t) at every frame t. To second order the
loss changes by  sum_t [ -a_j(t) g_j(t) + 1/2 a_j(t)^2 h_j(t) ]  (cross-frame and cross-neuron
terms of the Hessian dropped), with g = dE/da and h = d2E/da2 (Sharma, Wolfe & Raj,
arXiv:1701.04465). One pass over labelled batches accumulates, per neuron and over the non-padded
frames, sum a*g and sum a^2*h in float64; ``neurosel.saliency.criteria`` turns them into the
``taylor1`` (|mean a g|, Molchanov et al. 2017) and ``taylor2`` scores.

Diagonal second derivative, the estimator: Hutchinson's diag(H) = E_z[z * (H z)] with Rademacher
probes z drawn over every FC activation of the batch at once, and the Hessian-vector product
taken by a central difference of gradients, H z ~ (g(a + eps z) - g(a - eps z)) / (2 eps), with
the perturbation added by the same hooks that capture the activations (at each consumer's
input, ``neurosel.fc.taps``). Why this one:
the exact Hessian-vector product needs double backward, which PyTorch's CTC loss does not
implement ("derivative for aten::_ctc_loss_backward is not implemented"); the difference quotient
needs only first derivatives, so it works for any loss closure. Each probe costs two extra
forward+backward passes. The estimate of h_j(t) is unbiased up to O(eps^2) but noisy per frame
(the noise is the off-diagonal Hessian); the score only needs its mean over all frames of the
reference set, where that noise averages out, so one probe per batch is the default. A
Gauss-Newton or empirical-Fisher diagonal (g^2) would be cheaper but is not the second
derivative of the loss, and the empirical Fisher is known to be a poor proxy for it.

The loss closure should return the loss summed (not averaged) over the batch's utterances, so
that every frame weighs the same whatever the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.io import torch_load, torch_save
from neurosel.fc import FcSpec, fc_widths
from neurosel.fc.taps import ActivationTaps
from neurosel.saliency.stats import masked_rows



@dataclass(frozen=True)
class TaylorConfig:
    """``hessian_probes`` Hutchinson probes per batch (0: no second-order term),
    ``fd_step`` the finite-difference step eps on the activations, ``seed`` for the probes."""

    hessian_probes: int = 1
    fd_step: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hessian_probes < 0 or not self.fd_step > 0:
            raise ValueError(f"need hessian_probes >= 0 and fd_step > 0, got {self}")


@dataclass
class TaylorStats:
    """Per layer: ``count`` frames, ``sum_ag`` (D_l,) = sum_t a g and ``sum_a2h`` (D_l,) =
    sum_t a^2 h (float64). ``has_hessian`` is False when collected with no probes."""

    count: int
    sum_ag: list[Tensor]
    sum_a2h: list[Tensor]
    has_hessian: bool

    def to_dict(self) -> dict[str, Any]:
        """A tensors-only dict (loads with ``weights_only=True``)."""
        return {"count": torch.tensor(self.count), "sum_ag": self.sum_ag,
                "sum_a2h": self.sum_a2h, "has_hessian": torch.tensor(self.has_hessian)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "Taylor statistics") -> TaylorStats:
        """Inverse of ``to_dict``."""
        try:
            out = cls(int(data["count"]), list(data["sum_ag"]), list(data["sum_a2h"]),
                      bool(data["has_hessian"]))
        except (KeyError, TypeError, ValueError) as e:
            raise NeuroselError(f"{where}: not a Taylor statistics file ({e!r})") from e
        if [t.shape for t in out.sum_ag] != [t.shape for t in out.sum_a2h]:
            raise NeuroselError(f"{where}: sum_ag and sum_a2h shapes differ")
        return out


def save_taylor(stats: TaylorStats, path: str | Path) -> None:
    """Write ``stats`` atomically."""
    torch_save(stats.to_dict(), path)


def load_taylor(path: str | Path) -> TaylorStats:
    """Read what ``save_taylor`` wrote."""
    data = torch_load(path)
    if not isinstance(data, dict):
        raise NeuroselError(f"{path}: not a Taylor statistics file")
    return TaylorStats.from_dict(data, str(path))


class _ActivationTap:
    """Captures each FC layer's activation tensor at its consumer's input (``ActivationTaps``) and
    optionally replaces it by itself + ``shift * probe`` (the probe drawn on first use, then
    reused)."""

    def __init__(self, model: nn.Module, spec: FcSpec, generator: torch.Generator):
        self.names = list(spec.activations)
        self.consumers = list(spec.consumers)
        self.outputs: list[Tensor | None] = [None] * len(self.names)
        self.probes: list[Tensor | None] = [None] * len(self.names)
        self.shift = 0.0
        self.generator = generator
        self.taps = ActivationTaps(model, spec, self._capture)

    def _capture(self, layer: int, output: Tensor) -> Tensor:
        if not output.requires_grad:
            output = output.detach().requires_grad_(True)
        if self.shift:
            if self.probes[layer] is None:
                signs = torch.randint(0, 2, output.shape, generator=self.generator)
                self.probes[layer] = (2 * signs - 1).to(output.device, output.dtype)  # drawn on the CPU
            output = output + self.shift * self.probes[layer]
        self.outputs[layer] = output
        return output

    def gradients(self, loss: Tensor) -> list[Tensor]:
        """dE/da for every captured activation (zeros where the loss does not depend on it)."""
        if any(o is None for o in self.outputs):
            missing = self.consumers[[o is None for o in self.outputs].index(True)]
            raise NeuroselError(f"the loss closure never ran consumer '{missing}'")
        outputs = [o for o in self.outputs if o is not None]
        grads = torch.autograd.grad(loss, outputs, allow_unused=True)
        return [torch.zeros_like(o) if g is None else g for o, g in zip(outputs, grads)]


def collect_taylor(
    model: nn.Module,
    spec: FcSpec,
    batches: Iterable[tuple[Any, Tensor | None]],
    loss_fn: Callable[[nn.Module, Any], Tensor],
    config: TaylorConfig = TaylorConfig(),
) -> TaylorStats:
    """Accumulate ``TaylorStats`` over ``batches`` of (batch, frame mask or None).

    ``loss_fn(model, batch)`` runs the forward pass and returns the scalar loss; the frame mask
    (bool, the activations' leading dims) excludes padded frames. The model runs in eval mode
    (restored afterwards); parameter ``.grad`` fields are not touched.
    """
    widths = fc_widths(model, spec)
    count = 0
    sum_ag = [torch.zeros(d, dtype=torch.float64) for d in widths]
    sum_a2h = [torch.zeros(d, dtype=torch.float64) for d in widths]
    generator = torch.Generator().manual_seed(config.seed)
    tap = _ActivationTap(model, spec, generator)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad(), tap.taps:
            for number, (batch, mask) in enumerate(batches):
                count += _add_batch(tap, model, batch, mask, loss_fn, config, widths, sum_ag, sum_a2h)
                if not all(torch.isfinite(s).all() for s in sum_ag + sum_a2h):
                    raise NeuroselError(f"batch {number}: non-finite activation, gradient or loss")
    finally:
        model.train(was_training)
    return TaylorStats(count, sum_ag, sum_a2h, config.hessian_probes > 0)


def _add_batch(tap: _ActivationTap, model: nn.Module, batch: Any, mask: Tensor | None,
               loss_fn: Callable[[nn.Module, Any], Tensor], config: TaylorConfig,
               widths: list[int], sum_ag: list[Tensor], sum_a2h: list[Tensor]) -> int:
    """Add one batch's sums in place; return its number of frames."""
    tap.shift, tap.outputs = 0.0, [None] * len(widths)
    grads = tap.gradients(loss_fn(model, batch))
    acts = [o.detach() for o in tap.outputs if o is not None]

    def rows(x: Tensor, layer: int) -> Tensor:
        where = f"layer {layer} ({tap.names[layer]})"
        return masked_rows(x, mask, where, widths[layer]).to(torch.float64)

    a = [rows(x, layer) for layer, x in enumerate(acts)]
    for layer, g in enumerate(grads):
        sum_ag[layer] += (a[layer] * rows(g, layer)).sum(0).cpu()  # sums on the CPU, model anywhere
    if config.hessian_probes:
        hess = [torch.zeros_like(x) for x in a]
        for _ in range(config.hessian_probes):
            tap.probes = [None] * len(widths)
            tap.shift = config.fd_step
            g_plus = tap.gradients(loss_fn(model, batch))
            tap.shift = -config.fd_step
            g_minus = tap.gradients(loss_fn(model, batch))
            for layer, probe in enumerate(tap.probes):
                assert probe is not None
                hvp = (g_plus[layer] - g_minus[layer]) / (2 * config.fd_step)
                hess[layer] += rows(probe * hvp, layer)
        for layer in range(len(widths)):
            sum_a2h[layer] += (a[layer] ** 2 * hess[layer]).sum(0).cpu() / config.hessian_probes
    tap.shift = 0.0
    return a[0].shape[0]
