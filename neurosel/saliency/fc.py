"""Look up the FC stack that an ``FcSpec`` describes inside any ``nn.Module``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from neurosel.errors import NeuroselError

if TYPE_CHECKING:
    from neurosel.model.spec import FcSpec


def get_linear(model: nn.Module, name: str) -> nn.Linear:
    """The ``nn.Linear`` at dotted ``name``; ``NeuroselError`` if absent or of another type."""
    try:
        module = model.get_submodule(name)
    except AttributeError as e:
        raise NeuroselError(f"FC spec names '{name}', which the model does not have") from e
    if not isinstance(module, nn.Linear):
        raise NeuroselError(f"FC spec names '{name}', a {type(module).__name__}, not nn.Linear")
    return module


def fc_widths(model: nn.Module, spec: FcSpec) -> list[int]:
    """Number of neurons of each FC layer, input side first."""
    check_spec(model, spec)
    return [get_linear(model, name).out_features for name in spec.linears]


def check_spec(model: nn.Module, spec: FcSpec) -> None:
    """Raise ``NeuroselError`` unless every layer has a linear, an activation module and a
    consumer linear whose input width equals the layer's width."""
    n = len(spec.linears)
    if n == 0 or len(spec.activations) != n or len(spec.consumers) != n:
        raise NeuroselError(f"FC spec: {n} linears, {len(spec.activations)} activations and "
                            f"{len(spec.consumers)} consumers; expected equal non-zero counts")
    for layer, (lin, act, cons) in enumerate(zip(spec.linears, spec.activations, spec.consumers)):
        width = get_linear(model, lin).out_features
        try:
            model.get_submodule(act)
        except AttributeError as e:
            raise NeuroselError(f"FC spec names activation '{act}', which the model does not have") from e
        if get_linear(model, cons).in_features != width:
            raise NeuroselError(f"FC layer {layer}: consumer '{cons}' takes "
                                f"{get_linear(model, cons).in_features} inputs, layer has {width}")


def count_parameters(model: nn.Module) -> int:
    """Total number of parameter entries of ``model``."""
    return sum(p.numel() for p in model.parameters())
