"""Mask mode: the same removal as ``remove_neurons`` expressed without changing any shape.

Removing neuron j of a layer is zeroing column j of its consumer's weight (its activation then
reaches nothing), plus, with mean folding, adding W_c[:, j] * mean_act_j to the consumer's bias.
``NeuronMask`` does both: the columns through a parametrisation of the consumer's weight (so the
mask holds during training too, and in fused kernels that read the weight without calling the
module), the bias in place. The masked model computes what the physically pruned one computes;
``NeuronMask.remove()`` restores the model exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from neurosel.fc import FcSpec, fc_widths, get_linear
from neurosel.fc.reparam import parameter_order, require_plain, unparametrize
from neurosel.prune.remove import fold_delta, kept_indices


class ColumnMask(nn.Module):
    """Parametrisation of a consumer's weight (out, width) -> weight * keep[None, :]."""

    def __init__(self, keep: Tensor, host_order: tuple[str, ...]) -> None:
        super().__init__()
        self.host_order = host_order  # the consumer's parameter names, restored by remove()
        self.register_buffer("keep", keep)

    def forward(self, weight: Tensor) -> Tensor:
        """Zero the removed neurons' columns."""
        return weight * self.keep[None, :]


class NeuronMask:
    """Active column masks and folded biases on a model; ``remove()`` undoes both."""

    def __init__(self, model: nn.Module, spec: FcSpec, remove: dict[int, Tensor],
                 fold_mean: dict[int, Tensor] | None = None):
        widths = fc_widths(model, spec)
        kept = kept_indices(widths, remove)
        changed = [layer for layer, keep in kept.items() if keep.numel() != widths[layer]]
        for layer in changed:
            require_plain(get_linear(model, spec.consumers[layer]), "weight", spec.consumers[layer],
                          "mask neurons")
        self.masks: dict[int, Tensor] = {}
        self._masked: list[nn.Linear] = []
        self._saved_bias: list[tuple[nn.Linear, Tensor | None]] = []
        for layer in changed:
            consumer = get_linear(model, spec.consumers[layer])
            mask = torch.zeros(widths[layer], dtype=consumer.weight.dtype, device=consumer.weight.device)
            mask[kept[layer].to(mask.device)] = 1.0
            self.masks[layer] = mask
            parametrize.register_parametrization(consumer, "weight", ColumnMask(mask, parameter_order(consumer)))
            self._masked.append(consumer)
            if fold_mean and layer in fold_mean:
                removed = torch.nonzero(mask == 0).flatten()
                self._fold(consumer, removed, fold_mean[layer])

    def _fold(self, consumer: nn.Linear, removed: Tensor, mean_act: Tensor) -> None:
        delta = fold_delta(consumer.parametrizations.weight.original, removed, mean_act)
        self._saved_bias.append((consumer, None if consumer.bias is None else consumer.bias.detach().clone()))
        with torch.no_grad():
            if consumer.bias is None:
                consumer.bias = nn.Parameter(delta.clone())
            else:
                consumer.bias += delta

    def remove(self) -> None:
        """Drop the column masks and give the consumers back their original biases."""
        for consumer in reversed(self._masked):
            unparametrize(consumer, ["weight"], keep_value=False)
        self._masked.clear()
        with torch.no_grad():
            for consumer, bias in reversed(self._saved_bias):
                if bias is None:
                    consumer.bias = None
                else:
                    consumer.bias.copy_(bias)
        self._saved_bias.clear()


def mask_neurons(model: nn.Module, spec: FcSpec, remove: dict[int, Tensor],
                 fold_mean: dict[int, Tensor] | None = None) -> NeuronMask:
    """Mask the neurons ``remove[layer]`` of ``model`` in place (arguments as for
    ``remove_neurons``); returns the handle whose ``remove()`` undoes it."""
    return NeuronMask(model, spec, remove, fold_mean)
