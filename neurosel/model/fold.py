"""Fold the FC layers' BatchNorm (eval statistics) into the preceding Linear, so that every
analysed neuron is a plain ``act(W x + b)``."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm_into_linear(linear: nn.Linear, norm: nn.BatchNorm1d) -> None:
    """In place: ``linear`` becomes ``norm(linear(x))`` as evaluated in eval mode.

    With s = gamma / sqrt(running_var + eps): W' = diag(s) W, b' = s (b - running_mean) + beta.
    """
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm1d without running statistics")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale = scale * norm.weight.double()
        shift = shift * norm.weight.double() + norm.bias.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(scale)
    linear.weight.copy_((linear.weight.double() * scale[:, None]).to(linear.weight.dtype))
    new_bias = (bias * scale + shift).to(linear.weight.dtype)
    if linear.bias is None:
        linear.bias = nn.Parameter(new_bias)
    else:
        linear.bias.copy_(new_bias)


def fold_norms(model: nn.Module) -> nn.Module:
    """Fold every ``model.fc_norm[i]`` BatchNorm1d into ``model.fc[i]`` and replace it with
    ``nn.Identity``, in place; returns ``model``. Eval-mode outputs are unchanged."""
    for i, norm in enumerate(model.fc_norm):
        if isinstance(norm, nn.BatchNorm1d):
            fold_batchnorm_into_linear(model.fc[i], norm)
            model.fc_norm[i] = nn.Identity()
    return model
