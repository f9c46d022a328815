"""LHUC adaptation (Swietojanski and Renals, "Learning hidden unit contributions", SLT 2014).

Each FC neuron j gets one learned amplitude 2*sigmoid(r_j) multiplying its activation, with r
initialised to 0 (amplitude 1, so the model starts unchanged) and every base weight frozen.
``add_lhuc`` wraps the activation module of each FC layer (named by the ``FcSpec``) in an
``LhucActivation``; ``fold_lhuc`` multiplies the learned amplitudes into the consumer's input
columns (W_next[:, j] *= s_j) and puts the original activation modules back, which leaves a plain
model with the same outputs, so decoding and pruning code never need to know about LHUC.
Neurons are the last dimension of the activation output, as for ``nn.Linear``.
"""

from __future__ import annotations

import torch
from torch import nn

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec
from neurosel.fc import check_spec, get_linear


class LhucActivation(nn.Module):
    """``activation`` followed by a per-neuron amplitude: (..., width) -> (..., width) * 2*sigmoid(r)."""

    def __init__(self, activation: nn.Module, width: int, like: torch.Tensor) -> None:
        super().__init__()
        self.activation = activation
        self.r = nn.Parameter(torch.zeros(width, dtype=like.dtype, device=like.device))

    def amplitudes(self) -> torch.Tensor:
        """(width,) amplitudes 2*sigmoid(r), in (0, 2)."""
        return 2.0 * torch.sigmoid(self.r)

    def forward(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """The wrapped activation's output (..., width), scaled per neuron."""
        out = self.activation(*args, **kwargs)
        if out.size(-1) != self.r.numel():
            raise NeuroselError(f"LHUC: activation output has {out.size(-1)} neurons in its last "
                                f"dimension, the FC layer has {self.r.numel()}")
        return out * self.amplitudes()


def add_lhuc(model: nn.Module, spec: FcSpec) -> list[nn.Parameter]:
    """Freeze ``model`` and wrap every FC activation in an ``LhucActivation``, in place.

    Returns the LHUC parameters (one ``(width,)`` tensor per FC layer) for a new optimizer.
    Raises ``NeuroselError`` if the model already has LHUC or the spec names an activation twice.
    """
    check_spec(model, spec)
    if lhuc_parameters(model):
        raise NeuroselError("the model already has LHUC scales; fold_lhuc it first")
    if len(set(spec.activations)) != len(spec.activations):
        raise NeuroselError(f"FC spec names an activation module twice ({spec.activations}); "
                            "LHUC needs one per FC layer")
    for p in model.parameters():
        p.requires_grad_(False)
    for linear_name, act_name in zip(spec.linears, spec.activations):
        linear = get_linear(model, linear_name)
        parent, child = split_name(model, act_name)
        setattr(parent, child, LhucActivation(getattr(parent, child), linear.out_features, linear.weight))
    return lhuc_parameters(model)


def lhuc_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LHUC ``r`` parameters of ``model``, in module order (empty if it has none)."""
    return [m.r for m in model.modules() if isinstance(m, LhucActivation)]


def fold_lhuc(model: nn.Module, spec: FcSpec) -> None:
    """Fold the learned amplitudes into each consumer's input columns and unwrap the activations,
    in place. The model's outputs are unchanged (to rounding), its state_dict keys are those from
    before ``add_lhuc``, and every parameter has ``requires_grad=True`` again."""
    check_spec(model, spec)
    for layer, (act_name, consumer_name) in enumerate(zip(spec.activations, spec.consumers)):
        parent, child = split_name(model, act_name)
        wrapper = getattr(parent, child)
        if not isinstance(wrapper, LhucActivation):
            raise NeuroselError(f"FC layer {layer}: activation '{act_name}' has no LHUC scales to fold")
        consumer = get_linear(model, consumer_name)
        with torch.no_grad():
            consumer.weight.mul_(wrapper.amplitudes()[None, :])
        setattr(parent, child, wrapper.activation)
    for p in model.parameters():
        p.requires_grad_(True)


def split_name(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """Dotted module ``name`` -> (its parent module, its attribute name in the parent)."""
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        getattr(parent, child)
    except AttributeError as e:
        raise NeuroselError(f"FC spec names activation '{name}', which the model does not have") from e
    return parent, child
