"""Parametrisations that the science core puts on FC weights (selection deltas, LHUC scales,
neuron masks) and their removal, in one place.

All three act on plain tensors of ``nn.Linear`` modules through ``torch.nn.utils.parametrize``, so
the model computes with the changed weight wherever the weight is read: in ``nn.Linear.forward``
and equally in fused kernels that read ``module.weight`` directly without calling the module
(``nn.TransformerEncoderLayer``'s inference fast path), which forward hooks and wrapper modules
would miss. They do not stack: each refuses a tensor that already carries one, so that removing
one never takes another with it.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils import parametrize

from neurosel.errors import NeuroselError


def require_plain(module: nn.Module, tensor_name: str, where: str, doing: str) -> None:
    """Raise ``NeuroselError`` if ``module.<tensor_name>`` carries a parametrisation (a pending
    selection delta, LHUC scales or a neuron mask); ``where`` names the module, ``doing`` the
    operation refused."""
    if parametrize.is_parametrized(module, tensor_name):
        kinds = ", ".join(sorted({type(p).__name__ for p in module.parametrizations[tensor_name]}))
        raise NeuroselError(f"cannot {doing}: '{where}.{tensor_name}' carries {kinds}; merge_selection, "
                            "fold_lhuc or unmask the model first")


def parameter_order(module: nn.Module) -> tuple[str, ...]:
    """Names of ``module``'s own parameters in registration order, as before any of our
    parametrisations (each records it as ``host_order`` when it is registered)."""
    if parametrize.is_parametrized(module):
        for plist in module.parametrizations.values():
            for p in plist:
                if hasattr(p, "host_order"):
                    return p.host_order
    return tuple(name for name, _ in module.named_parameters(recurse=False))


def unparametrize(module: nn.Module, tensor_names: list[str], keep_value: bool) -> None:
    """Remove the parametrisations of ``module``'s ``tensor_names``: each becomes a plain
    parameter again, holding the parametrised value (``keep_value``) or the original, and the
    module's parameters get back their order from before (removal re-registers a tensor last),
    so that state_dict keys keep their order."""
    order = parameter_order(module)
    for tensor_name in tensor_names:
        parametrize.remove_parametrizations(module, tensor_name, leave_parametrized=keep_value)
    params = {name: getattr(module, name) for name in order}
    for name, param in params.items():
        delattr(module, name)
        module.register_parameter(name, param)
