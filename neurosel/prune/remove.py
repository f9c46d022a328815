"""Structured removal of FC neurons: a physically smaller model.

Removing neuron j of FC layer l deletes row j of W_l and b_l[j] and column j of the consumer's
weight (the next FC layer or the output layer). Optionally the neuron's mean output is folded
into the consumer's bias, b_c += W_c[:, j] * mean_act_j (mean replacement), which makes removing
a constant (stuck-on) neuron exact. Changed ``nn.Linear`` modules are replaced in their parent
under the same dotted name, so the ``FcSpec`` stays valid. A normalisation layer between an FC
linear and its activation must be folded into the linear first (``neurosel.model.fold``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, fc_widths, get_linear
from neurosel.fc.reparam import require_plain



def kept_indices(widths: list[int], remove: dict[int, Tensor]) -> dict[int, Tensor]:
    """Per layer the sorted original indices that survive ``remove`` (LongTensor each); raises
    ``NeuroselError`` on an unknown layer, an index out of range or repeated, or an emptied layer."""
    for layer in remove:
        if not 0 <= layer < len(widths):
            raise NeuroselError(f"cannot remove neurons of FC layer {layer}: the model has {len(widths)}")
    kept = {}
    for layer, width in enumerate(widths):
        drop = torch.as_tensor(remove.get(layer, []), dtype=torch.int64).flatten().cpu()
        if drop.numel() and (drop.min() < 0 or drop.max() >= width):
            raise NeuroselError(f"FC layer {layer}: neuron index out of range 0..{width - 1}")
        if drop.unique().numel() != drop.numel():
            raise NeuroselError(f"FC layer {layer}: a neuron is listed twice for removal")
        keep = torch.ones(width, dtype=torch.bool)
        keep[drop] = False
        if not keep.any():
            raise NeuroselError(f"FC layer {layer}: removing all {width} neurons would empty the layer")
        kept[layer] = torch.nonzero(keep).flatten()
    return kept


def fold_delta(consumer_weight: Tensor, removed: Tensor, mean_act: Tensor) -> Tensor:
    """(out,) bias change W_c[:, removed] @ mean_act[removed] of the consumer, computed in float64
    and returned in the weight's dtype; ``mean_act`` is the layer's full (D,) mean vector."""
    if mean_act.shape != (consumer_weight.shape[1],):
        raise NeuroselError(f"fold_mean has shape {tuple(mean_act.shape)}, expected "
                            f"({consumer_weight.shape[1]},)")
    device = consumer_weight.device
    removed = removed.to(device)
    w = consumer_weight.detach().to(torch.float64)[:, removed]
    return (w @ mean_act.detach().to(device, torch.float64)[removed]).to(consumer_weight.dtype)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Replace the submodule at dotted ``name`` with ``module``."""
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, attr, module)


def _sliced_linear(old: nn.Linear, rows: Tensor, cols: Tensor, bias_delta: Tensor | None) -> nn.Linear:
    has_bias = old.bias is not None or bias_delta is not None
    new = nn.Linear(cols.numel(), rows.numel(), bias=has_bias,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(old.weight[rows][:, cols])
        new.weight.requires_grad_(old.weight.requires_grad)
        if has_bias:
            bias = old.bias.detach().clone() if old.bias is not None else torch.zeros_like(bias_delta)
            if bias_delta is not None:
                bias += bias_delta
            new.bias.copy_(bias[rows])
            new.bias.requires_grad_(old.bias.requires_grad if old.bias is not None else True)
    return new


def remove_neurons(model: nn.Module, spec: FcSpec, remove: dict[int, Tensor],
                   fold_mean: dict[int, Tensor] | None = None) -> tuple[nn.Module, FcSpec, dict[int, Tensor]]:
    """Delete the neurons ``remove[layer]`` (LongTensor of indices) in place.

    ``fold_mean[layer]`` (D_l,), when given, is the layer's mean activation; the removed
    neurons' means are folded into the consumer's bias. Returns ``(model, spec, kept)``: the
    same (modified) model, the same spec (names are kept), and per layer the original indices of
    the kept neurons. Raises ``NeuroselError`` (model untouched) if a linear to be sliced carries
    a pending selection delta, LHUC scales or a neuron mask: slicing would drop them silently.
    """
    widths = fc_widths(model, spec)
    kept = kept_indices(widths, remove)
    for layer, keep in kept.items():
        if keep.numel() != widths[layer]:
            for name in (spec.linears[layer], spec.consumers[layer]):
                for tensor_name in ("weight", "bias"):
                    require_plain(get_linear(model, name), tensor_name, name, "remove neurons")
    fold_mean = fold_mean or {}
    rows: dict[str, Tensor] = {}
    cols: dict[str, Tensor] = {}
    deltas: dict[str, Tensor] = {}
    for layer, keep in kept.items():
        if keep.numel() == widths[layer]:
            continue
        lin, consumer = spec.linears[layer], spec.consumers[layer]
        rows[lin] = keep
        cols[consumer] = keep
        removed = torch.nonzero(~torch.isin(torch.arange(widths[layer]), keep)).flatten()
        if layer in fold_mean:
            weight = get_linear(model, consumer).weight
            deltas[consumer] = fold_delta(weight, removed, fold_mean[layer])
    for name in sorted(set(rows) | set(cols)):
        old = get_linear(model, name)
        device = old.weight.device
        r = rows.get(name, torch.arange(old.out_features)).to(device)
        c = cols.get(name, torch.arange(old.in_features)).to(device)
        set_module(model, name, _sliced_linear(old, r, c, deltas.get(name)))
    return model, spec, kept
