"""Which parameters move during adaptation: whole modules, whole FC layers, or single FC neurons.

Works on any PyTorch model whose FC stack an ``FcSpec`` describes. A ``Selection`` is applied
with ``apply_selection``, which freezes every parameter (``requires_grad=False``) and returns
the parameters a NEW optimizer must get:

- whole modules (dotted-name prefixes, FC layer indices): those modules' own parameters;
- single neurons of FC layer i: a zero-initialised delta on the selected rows of
  ``linears[i].weight`` (``(k, in)``) and entries of its bias (``(k,)``), and with ``outgoing``
  on the selected columns of ``consumers[i].weight`` (``(out, k)``), added to the frozen tensors
  through ``torch.nn.utils.parametrize``. Optimizer state, momentum and weight decay then only
  ever touch the deltas, so every other entry stays bit-identical under Adam, AdamW or SGD.

``merge_selection`` folds the deltas into plain weights and removes the parametrisations, which
leaves a plain model with the original state_dict keys, every parameter trainable again.
Running statistics (BatchNorm buffers) are not parameters: call ``train_mode`` instead of
``model.train()`` during adaptation so that frozen normalisation layers keep theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize

from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec
from neurosel.fc import check_spec, get_linear
from neurosel.fc.reparam import parameter_order, require_plain, unparametrize

BLIND_SELECTIONS = ("all", "fc", "conv", "last")


@dataclass
class Selection:
    """Which parameters move.

    ``prefixes``: dotted module-name prefixes whose parameters move entirely (``"fc"`` or
    ``"fc."`` matches ``fc.0.weight`` but ``"fc.3"`` not ``fc.30.weight``; ``""`` matches every
    parameter); ``exclude``: prefixes taken back out of ``prefixes``; ``layers``: FC layer indices
    (0-based from the input side) whose ``nn.Linear`` moves entirely; ``neurons``: per FC layer
    index, a 1-D LongTensor of neuron indices whose incoming row and bias entry move (and their
    outgoing column in the consumer when ``outgoing``).
    """

    prefixes: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()
    neurons: dict[int, torch.Tensor] = field(default_factory=dict)
    outgoing: bool = False


@dataclass
class SelectionSize:
    """How much of a model a selection moves (distinct parameter entries)."""

    moving: int
    total: int
    tensors: dict[str, int]  # original parameter name -> entries that move (only those > 0)

    @property
    def fraction(self) -> float:
        """Share of the model's parameter entries that move."""
        return self.moving / self.total if self.total else 0.0


class IndexDelta(nn.Module):
    """Parametrisation ``W -> W + delta`` on the slices ``index`` of ``W`` along ``dim`` (rows for
    0, columns for 1); ``delta`` has ``W``'s shape with ``len(index)`` along ``dim`` and starts at 0."""

    def __init__(self, index: torch.Tensor, dim: int, like: torch.Tensor, host_order: tuple[str, ...]) -> None:
        super().__init__()
        self.dim = dim
        self.host_order = host_order  # the host module's parameter names, restored by merge
        self.register_buffer("index", index.to(like.device))
        shape = list(like.shape)
        shape[dim] = len(index)
        self.delta = nn.Parameter(torch.zeros(shape, dtype=like.dtype, device=like.device))

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        """Tensor -> same shape with the delta added on the selected slices."""
        return original.index_add(self.dim, self.index, self.delta)

    def mask(self, shape: torch.Size) -> torch.Tensor:
        """Bool tensor of ``shape``, True on the entries this delta moves."""
        return torch.zeros(shape, dtype=torch.bool).index_fill_(self.dim, self.index.cpu(), True)


def blind_selection(name: str, spec: FcSpec, conv_prefixes: tuple[str, ...] | None = None) -> Selection:
    """The blind baseline ``name``: ``all`` (every parameter), ``fc`` (the FC linears, not the
    output layer), ``conv`` (``conv_prefixes`` if given, else every parameter outside the FC
    linears and the output layer), ``last`` (last FC linear + output layer)."""
    output = spec.consumers[-1]
    if name == "all":
        return Selection(prefixes=("",))
    if name == "fc":
        return Selection(prefixes=tuple(spec.linears))
    if name == "conv":
        if conv_prefixes is not None:
            return Selection(prefixes=tuple(conv_prefixes))
        return Selection(prefixes=("",), exclude=tuple(spec.linears) + (output,))
    if name == "last":
        return Selection(prefixes=(spec.linears[-1], output))
    raise NeuroselError(f"unknown blind selection '{name}'; expected one of {', '.join(BLIND_SELECTIONS)}")


def under_prefix(name: str, prefix: str) -> bool:
    """True if dotted ``name`` is ``prefix`` itself or lies under it (``""`` covers everything)."""
    stem = prefix.rstrip(".")
    return stem == "" or name == stem or name.startswith(stem + ".")


def apply_selection(model: nn.Module, spec: FcSpec, selection: Selection) -> list[nn.Parameter]:
    """Freeze ``model`` except ``selection``; returns the trainable parameters (for a new optimizer).

    Neuron selections add zero-initialised deltas (the model's outputs do not change). Raises
    ``NeuroselError`` for a prefix that matches no parameter, an FC layer or neuron index out of
    range, repeated neuron indices, a tensor selected both whole and by neuron, a selection that
    moves nothing (e.g. no hyper/hypo neuron found), or a model that already carries a selection;
    the model is left untouched then.
    """
    check_spec(model, spec)
    if any(isinstance(m, IndexDelta) for m in model.modules()):
        raise NeuroselError("the model already carries a neuron selection; merge_selection it first")
    n_layers = len(spec.linears)
    for layer in list(selection.layers) + list(selection.neurons):
        if not 0 <= layer < n_layers:
            raise NeuroselError(f"selection names FC layer {layer}; the model has layers 0..{n_layers - 1}")
    whole = whole_parameters(model, spec, selection)
    planned: list[tuple[nn.Linear, str, int, torch.Tensor]] = []  # module, tensor, dim, neurons
    for layer, index in sorted(selection.neurons.items()):
        index = checked_neurons(index, layer, get_linear(model, spec.linears[layer]).out_features)
        targets = [(spec.linears[layer], "weight", 0), (spec.linears[layer], "bias", 0)]
        if selection.outgoing:
            targets.append((spec.consumers[layer], "weight", 1))
        for module_name, tensor_name, dim in targets:
            module = get_linear(model, module_name)
            if index.numel() == 0 or getattr(module, tensor_name) is None:
                continue
            if f"{module_name}.{tensor_name}" in whole:
                raise NeuroselError(f"'{module_name}.{tensor_name}' is selected both whole and by neuron "
                                    f"(FC layer {layer})")
            require_plain(module, tensor_name, module_name, "select neurons")
            planned.append((module, tensor_name, dim, index))
    if not whole and not planned:
        raise NeuroselError("the selection moves no parameter (no prefix, layer or neuron selected)")

    for p in model.parameters():
        p.requires_grad_(False)
    trainable = [model.get_parameter(name).requires_grad_(True) for name in whole]
    for module, tensor_name, dim, index in planned:
        delta = IndexDelta(index, dim, getattr(module, tensor_name), parameter_order(module))
        parametrize.register_parametrization(module, tensor_name, delta)
        trainable.append(delta.delta)
    return trainable


def whole_parameters(model: nn.Module, spec: FcSpec, selection: Selection) -> list[str]:
    """Names of the parameters that ``selection`` moves entirely, in model order."""
    prefixes = list(selection.prefixes) + [spec.linears[layer] for layer in selection.layers]
    names = [name for name, _ in model.named_parameters()]
    for prefix in prefixes + list(selection.exclude):
        if not any(under_prefix(name, prefix) for name in names):
            raise NeuroselError(f"selection prefix '{prefix}' matches no parameter of the model")
    return [name for name in names
            if any(under_prefix(name, p) for p in prefixes)
            and not any(under_prefix(name, p) for p in selection.exclude)]


def checked_neurons(index: torch.Tensor, layer: int, width: int) -> torch.Tensor:
    """Validate a neuron index tensor of FC layer ``layer`` (``width`` neurons); returns it sorted."""
    index = torch.as_tensor(index)
    if index.dim() != 1 or index.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise NeuroselError(f"FC layer {layer}: neuron selection must be a 1-D integer tensor, "
                            f"got shape {tuple(index.shape)} {index.dtype}")
    index = index.long().sort().values
    if index.numel() and (index[0] < 0 or index[-1] >= width):
        raise NeuroselError(f"FC layer {layer}: neuron index out of range 0..{width - 1}")
    if index.unique().numel() != index.numel():
        raise NeuroselError(f"FC layer {layer}: neuron selection repeats an index")
    return index


def merge_selection(model: nn.Module) -> None:
    """Fold every selection delta into its tensor and remove the parametrisations, in place.

    Afterwards the model is plain (state_dict keys as before ``apply_selection``) and every
    parameter has ``requires_grad=True``, as in a freshly built model.
    """
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        ours = [tensor_name for tensor_name, plist in module.parametrizations.items()
                if any(isinstance(p, IndexDelta) for p in plist)]
        if ours:
            unparametrize(module, ours, keep_value=True)
    for p in model.parameters():
        p.requires_grad_(True)


def selection_size(model: nn.Module) -> SelectionSize:
    """Count the distinct parameter entries that move in a model after ``apply_selection``
    (trainable parameters entirely, neuron deltas by the entries they touch, overlaps once)."""
    deltas = {name: m for name, m in model.named_modules() if isinstance(m, IndexDelta)}
    delta_ids = {id(m.delta) for m in deltas.values()}
    tensors: dict[str, int] = {}
    total = 0
    for name, p in model.named_parameters():
        if id(p) in delta_ids:
            continue
        total += p.numel()
        if p.requires_grad:
            tensors[plain_name(name)] = p.numel()
    masks: dict[str, torch.Tensor] = {}
    for name, delta in deltas.items():
        shape = model.get_submodule(name.rsplit(".", 1)[0]).original.shape  # its ParametrizationList
        tensor = plain_name(name)
        masks[tensor] = masks.get(tensor, torch.zeros(shape, dtype=torch.bool)) | delta.mask(shape)
    tensors.update({tensor: int(mask.sum()) for tensor, mask in masks.items()})
    return SelectionSize(moving=sum(tensors.values()), total=total, tensors=tensors)


def plain_name(name: str) -> str:
    """The tensor a parametrisation name stands for: ``fc.0.parametrizations.weight.original`` (or
    ``...weight.0``) -> ``fc.0.weight``; other names unchanged."""
    parts = name.split(".")
    if "parametrizations" not in parts:
        return name
    at = len(parts) - 1 - parts[::-1].index("parametrizations")
    return ".".join(parts[:at] + [parts[at + 1]])


def train_mode(model: nn.Module) -> nn.Module:
    """``model.train()``, except that modules with running statistics (e.g. BatchNorm) that own no
    trainable parameter stay in eval mode, so a frozen module's buffers stay bit-identical too.
    Returns ``model``."""
    model.train()
    for module in model.modules():
        has_stats = any(b.is_floating_point() for b in module.buffers(recurse=False))
        if has_stats and not any(p.requires_grad for p in module.parameters(recurse=False)):
            module.eval()
    return model
