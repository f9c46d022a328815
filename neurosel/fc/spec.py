"""The description of a model's fully connected (FC) neurons, and its structural validation.

An FC layer, for this library, is ``consumer(act(linear(x)))``: an ``nn.Linear`` whose output
rows are the layer's neurons, an element-wise activation applied to that output, and the
``nn.Linear`` (the next FC layer or an output layer) whose input columns are those activations,
with nothing in between but dropout. Removing neuron j then deletes row j of ``linear`` and
column j of ``consumer``, and the activations are exactly the consumer's inputs: that is where
the statistics, Taylor and masking code read or change them, never at the activation itself, so
an activation module shared by several layers, a functional activation (``F.relu``) and a fused
kernel that never calls the activation module all give the right numbers.

``find_fc_layers`` (``neurosel.fc.discover``) finds the layers on a sample input; ``FcSpec`` can
also be written by hand and is checked by ``check_spec`` (structure) and ``verify_spec`` (the data
flow on a sample input).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neurosel.errors import NeuroselError

# Element-wise activations a layer may apply, by the name that ``F.<name>`` spells.
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish", "hardswish",
               "hardtanh", "tanh", "softsign", "prelu", "rrelu", "softplus", "sigmoid", "hardsigmoid")
FUNCTIONAL_PREFIX = "F."


@dataclass(frozen=True)
class FcSpec:
    """The analysable FC layers of a model, by dotted module names, input side first.

    ``linears[i]``: the ``nn.Linear`` of FC layer i (its output rows are the layer's neurons);
    ``activations[i]``: what is applied to its output, the dotted name of an activation module or
    ``"F.<name>"`` for a functional one (``"F.relu"``, ``"F.gelu"``; see ``ACTIVATIONS``);
    ``consumers[i]``: the ``nn.Linear`` whose input columns are layer i's activations;
    ``on_threshold``: the activation above which a neuron is "on" (0.5 for sigmoid, 0 for ReLU).
    """

    linears: list[str]
    activations: list[str]
    consumers: list[str]
    on_threshold: float

    def __len__(self) -> int:
        return len(self.linears)


def activation_kind(model: nn.Module, name: str) -> str:
    """The ``ACTIVATIONS`` key of a spec's activation entry: ``"F.gelu"`` -> ``"gelu"``, a module
    name -> its class (``nn.GELU`` -> ``"gelu"``); ``NeuroselError`` for anything else (a missing
    module, an ``nn.Linear`` or another module that is not an element-wise activation)."""
    if name.startswith(FUNCTIONAL_PREFIX):
        kind = name[len(FUNCTIONAL_PREFIX):]
        if kind not in ACTIVATIONS:
            raise NeuroselError(f"FC spec names activation '{name}'; known functional activations: "
                                f"{', '.join(FUNCTIONAL_PREFIX + k for k in ACTIVATIONS)}")
        return kind
    module = _submodule(model, name, "activation")
    kind = _module_kind(module)
    if kind is None:
        raise NeuroselError(f"FC spec names '{name}', a {type(module).__name__}, as an activation; an "
                            "activation is an element-wise module such as nn.ReLU, or 'F.<name>' for a "
                            "functional one")
    return kind


def default_threshold(kind: str) -> float:
    """The default ``on_threshold`` of activation ``kind``: its value at 0, so that a neuron is "on"
    when its pre-activation is positive (0 for ReLU, GELU, tanh; 0.5 for sigmoid)."""
    if kind in ("prelu", "rrelu"):
        return 0.0
    return float(getattr(F, kind)(torch.zeros(())))


def _module_kind(module: nn.Module) -> str | None:
    """``nn.ReLU`` -> ``"relu"``, ``nn.LeakyReLU`` -> ``"leaky_relu"``; None if not an activation."""
    names = {"ReLU": "relu", "ReLU6": "relu6", "LeakyReLU": "leaky_relu", "ELU": "elu", "SELU": "selu",
             "CELU": "celu", "GELU": "gelu", "SiLU": "silu", "Mish": "mish", "Hardswish": "hardswish",
             "Hardtanh": "hardtanh", "Tanh": "tanh", "Softsign": "softsign", "PReLU": "prelu",
             "RReLU": "rrelu", "Softplus": "softplus", "Sigmoid": "sigmoid", "Hardsigmoid": "hardsigmoid"}
    for cls in type(module).__mro__:
        if cls.__module__.startswith("torch.nn") and cls.__name__ in names:
            return names[cls.__name__]
    return None


def _submodule(model: nn.Module, name: str, role: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as e:
        raise NeuroselError(f"FC spec names {role} '{name}', which the model does not have") from e


def get_linear(model: nn.Module, name: str) -> nn.Linear:
    """The ``nn.Linear`` at dotted ``name``; ``NeuroselError`` if absent or of another type."""
    module = _submodule(model, name, "linear")
    if not isinstance(module, nn.Linear):
        raise NeuroselError(f"FC spec names '{name}', a {type(module).__name__}, not nn.Linear")
    return module


def fc_widths(model: nn.Module, spec: FcSpec) -> list[int]:
    """Number of neurons of each FC layer, input side first."""
    check_spec(model, spec)
    return [get_linear(model, name).out_features for name in spec.linears]


def check_spec(model: nn.Module, spec: FcSpec) -> None:
    """Raise ``NeuroselError`` unless ``spec`` describes FC layers of ``model`` unambiguously:
    equal non-zero counts; every linear and consumer an ``nn.Linear``, each activation an
    element-wise activation (module or ``F.<name>``), none of them an ``nn.Linear``; no linear or
    consumer listed twice, also not under two names of one module; each consumer taking as many
    inputs as its layer has neurons; no activation module with per-neuron parameters (a
    ``PReLU(num_parameters=width)`` cannot be sliced with its neurons).

    One activation module may serve several layers: nothing hooks it (see the module docs).
    ``verify_spec`` checks the data flow as well, on a sample input.
    """
    n = len(spec.linears)
    if n == 0 or len(spec.activations) != n or len(spec.consumers) != n:
        raise NeuroselError(f"FC spec: {n} linears, {len(spec.activations)} activations and "
                            f"{len(spec.consumers)} consumers; expected equal non-zero counts")
    for role, names in (("linear", spec.linears), ("consumer", spec.consumers)):
        seen: dict[int, str] = {}
        for name in names:
            module = get_linear(model, name)
            if id(module) in seen:
                same = "twice" if seen[id(module)] == name else f"as '{seen[id(module)]}' and '{name}' (one module)"
                raise NeuroselError(f"FC spec lists {role} '{name}' {same}; each FC layer needs its own")
            seen[id(module)] = name
    for layer, (lin, act, cons) in enumerate(zip(spec.linears, spec.activations, spec.consumers)):
        width = get_linear(model, lin).out_features
        activation_kind(model, act)
        if not act.startswith(FUNCTIONAL_PREFIX):
            per_neuron = [p for p in model.get_submodule(act).parameters() if p.numel() > 1]
            if per_neuron:
                raise NeuroselError(f"FC layer {layer}: activation '{act}' has per-neuron parameters "
                                    f"({per_neuron[0].numel()}), which removal and selection do not slice")
        if get_linear(model, cons).in_features != width:
            raise NeuroselError(f"FC layer {layer}: consumer '{cons}' takes "
                                f"{get_linear(model, cons).in_features} inputs, layer has {width}")


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter entries of ``model``."""
    return sum(p.numel() for p in model.parameters())
