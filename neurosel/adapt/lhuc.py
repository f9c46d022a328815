"""LHUC adaptation (Swietojanski and Renals, "Learning hidden unit contributions", SLT 2014).

Each FC neuron j gets one learned amplitude 2*sigmoid(r_j) multiplying its activation, with r
initialised to 0 (amplitude 1, so the model starts unchanged) and every base weight frozen.
Scaling neuron j's activation is scaling column j of its consumer's weight, W_c diag(s), so
``add_lhuc`` puts the amplitudes on the consumer's weight as a parametrisation
(``LhucScale``) rather than wrapping the activation: the scales then apply wherever the weight is
read, with functional activations, an activation module shared by several layers, and PyTorch's
fused inference kernels (``nn.TransformerEncoderLayer``'s fast path, which never calls the
activation module) alike. ``fold_lhuc`` writes W_c diag(s) into the plain weight, which leaves a
model with the original state_dict keys and the same outputs, so decoding and pruning code never
need to know about LHUC.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, check_spec, get_linear
from neurosel.fc.reparam import parameter_order, require_plain, unparametrize


class LhucScale(nn.Module):
    """Parametrisation of a consumer's weight (out, width) -> weight * 2*sigmoid(r)[None, :]."""

    def __init__(self, like: torch.Tensor, host_order: tuple[str, ...]) -> None:
        super().__init__()
        self.host_order = host_order  # the consumer's parameter names, restored by fold_lhuc
        self.r = nn.Parameter(torch.zeros(like.shape[1], dtype=like.dtype, device=like.device))

    def amplitudes(self) -> torch.Tensor:
        """(width,) amplitudes 2*sigmoid(r), in (0, 2)."""
        return 2.0 * torch.sigmoid(self.r)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """(out, width) -> the weight with column j scaled by amplitude j."""
        return weight * self.amplitudes()[None, :]


def _scales(model: nn.Module, spec: FcSpec) -> list[LhucScale | None]:
    out: list[LhucScale | None] = []
    for name in spec.consumers:
        consumer = get_linear(model, name)
        found = None
        if parametrize.is_parametrized(consumer, "weight"):
            found = next((p for p in consumer.parametrizations["weight"] if isinstance(p, LhucScale)), None)
        out.append(found)
    return out


def add_lhuc(model: nn.Module, spec: FcSpec) -> list[nn.Parameter]:
    """Freeze ``model`` and give every FC neuron an LHUC amplitude, in place.

    Returns the LHUC parameters (one ``(width,)`` tensor per FC layer, input side first) for a
    new optimizer. Raises ``NeuroselError`` if the model already has LHUC scales or a consumer's
    weight carries another parametrisation (a pending selection delta, a neuron mask).
    """
    check_spec(model, spec)
    if lhuc_parameters(model):
        raise NeuroselError("the model already has LHUC scales; fold_lhuc it first")
    for name in spec.consumers:
        require_plain(get_linear(model, name), "weight", name, "add LHUC scales")
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for name in spec.consumers:
        consumer = get_linear(model, name)
        scale = LhucScale(consumer.weight, parameter_order(consumer))
        parametrize.register_parametrization(consumer, "weight", scale)
        params.append(scale.r)
    return params


def lhuc_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LHUC ``r`` parameters of ``model``, in module order (empty if it has none)."""
    return [m.r for m in model.modules() if isinstance(m, LhucScale)]


def fold_lhuc(model: nn.Module, spec: FcSpec) -> None:
    """Write the learned amplitudes into each consumer's weight and remove the scales, in place.
    The model's outputs are unchanged (to rounding), its state_dict keys are those from before
    ``add_lhuc``, and every parameter has ``requires_grad=True`` again."""
    check_spec(model, spec)
    for layer, (name, scale) in enumerate(zip(spec.consumers, _scales(model, spec))):
        if scale is None:
            raise NeuroselError(f"FC layer {layer}: consumer '{name}' has no LHUC scales to fold")
    for name in spec.consumers:
        consumer = get_linear(model, name)
        unparametrize(consumer, ["weight"], keep_value=True)
    for p in model.parameters():
        p.requires_grad_(True)
