"""Fold the FC layers' BatchNorm (eval statistics) into a neighbouring Linear, so that every
analysed neuron is a plain ``act(W x + b)``: a norm before the activation goes into the Linear
before it, a norm after the activation into the Linear that consumes it."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm_into_linear(linear: nn.Linear, norm: nn.BatchNorm1d) -> None:
    """In place: ``linear`` becomes ``norm(linear(x))`` as evaluated in eval mode.

    With s = gamma / sqrt(running_var + eps): W' = diag(s) W, b' = s (b - running_mean) + beta.
    """
    scale, shift = _affine(norm)
    bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(scale)
    linear.weight.copy_((linear.weight.double() * scale[:, None]).to(linear.weight.dtype))
    new_bias = (bias * scale + shift).to(linear.weight.dtype)
    if linear.bias is None:
        linear.bias = nn.Parameter(new_bias)
    else:
        linear.bias.copy_(new_bias)


def _affine(norm: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in float64 with ``norm(x) == scale * x + shift`` in eval mode."""
    if norm.running_mean is None or norm.running_var is None:
        raise ValueError("cannot fold a BatchNorm1d without running statistics")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.affine:
        scale = scale * norm.weight.double()
        shift = shift * norm.weight.double() + norm.bias.double()
    return scale, shift


@torch.no_grad()
def fold_batchnorm_into_consumer(norm: nn.BatchNorm1d, linear: nn.Linear) -> None:
    """In place: ``linear`` becomes ``linear(norm(x))`` as evaluated in eval mode.

    With norm(x) = s x + t: W' = W diag(s), b' = b + W t.
    """
    scale, shift = _affine(norm)
    weight = linear.weight.double()
    bias = linear.bias.double() if linear.bias is not None else torch.zeros(weight.size(0), dtype=torch.float64)
    new_bias = (bias + weight @ shift).to(linear.weight.dtype)
    linear.weight.copy_((weight * scale[None, :]).to(linear.weight.dtype))
    if linear.bias is None:
        linear.bias = nn.Parameter(new_bias)
    else:
        linear.bias.copy_(new_bias)


def fold_norms(model: nn.Module) -> nn.Module:
    """Fold every ``model.fc_norm[i]`` BatchNorm1d into ``model.fc[i]`` (norm before the
    activation) or into the next Linear, ``model.fc[i + 1]`` or ``model.output`` (``fc_norm:
    batchnorm_post``), and replace it with ``nn.Identity``, in place; returns ``model``.
    Eval-mode outputs are unchanged."""
    post = model.cfg.fc_norm == "batchnorm_post"
    consumers = list(model.fc[1:]) + [model.output]
    for i, norm in enumerate(model.fc_norm):
        if isinstance(norm, nn.BatchNorm1d):
            if post:
                fold_batchnorm_into_consumer(norm, consumers[i])
            else:
                fold_batchnorm_into_linear(model.fc[i], norm)
            model.fc_norm[i] = nn.Identity()
    return model
