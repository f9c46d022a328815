"""Mask mode: the same removal as ``remove_neurons`` expressed without changing any shape.

Forward hooks on the activation modules multiply the removed neurons' outputs by 0, and the
optional mean folding is added to the consumers' biases in place, so the masked model computes
what the physically pruned one computes. ``NeuronMask.remove()`` restores the model exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor, nn

from neurosel.prune.remove import fold_delta, kept_indices
from neurosel.fc import fc_widths, get_linear

if TYPE_CHECKING:
    from neurosel.fc import FcSpec


class NeuronMask:
    """Active masking hooks and folded biases on a model; ``remove()`` undoes both."""

    def __init__(self, model: nn.Module, spec: FcSpec, remove: dict[int, Tensor],
                 fold_mean: dict[int, Tensor] | None = None):
        widths = fc_widths(model, spec)
        kept = kept_indices(widths, remove)
        self.masks: dict[int, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._saved_bias: list[tuple[nn.Linear, Tensor | None]] = []
        for layer, keep in kept.items():
            if keep.numel() == widths[layer]:
                continue
            mask = torch.zeros(widths[layer])
            mask[keep] = 1.0
            self.masks[layer] = mask
            module = model.get_submodule(spec.activations[layer])
            self._handles.append(module.register_forward_hook(_multiply_by(mask)))
            if fold_mean and layer in fold_mean:
                removed = torch.nonzero(mask == 0).flatten()
                self._fold(get_linear(model, spec.consumers[layer]), removed, fold_mean[layer])

    def _fold(self, consumer: nn.Linear, removed: Tensor, mean_act: Tensor) -> None:
        delta = fold_delta(consumer.weight, removed, mean_act)
        self._saved_bias.append((consumer, None if consumer.bias is None else consumer.bias.detach().clone()))
        with torch.no_grad():
            if consumer.bias is None:
                consumer.bias = nn.Parameter(delta.clone())
            else:
                consumer.bias += delta

    def remove(self) -> None:
        """Drop the hooks and give the consumers back their original biases."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        with torch.no_grad():
            for consumer, bias in reversed(self._saved_bias):
                if bias is None:
                    consumer.bias = None
                else:
                    consumer.bias.copy_(bias)
        self._saved_bias.clear()


def _multiply_by(mask: Tensor) -> Callable[..., Tensor]:
    def hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        return output * mask.to(device=output.device, dtype=output.dtype)

    return hook


def mask_neurons(model: nn.Module, spec: FcSpec, remove: dict[int, Tensor],
                 fold_mean: dict[int, Tensor] | None = None) -> NeuronMask:
    """Mask the neurons ``remove[layer]`` of ``model`` in place (arguments as for
    ``remove_neurons``); returns the handle whose ``remove()`` undoes it."""
    return NeuronMask(model, spec, remove, fold_mean)
