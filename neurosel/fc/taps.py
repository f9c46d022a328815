"""Where the science core reads (and, for the Taylor probes, perturbs) FC activations: the input of
each layer's consumer, through forward pre-hooks, with PyTorch's fused inference paths off.

Why the consumer's input: it is exactly the layer's activations (the spec's data flow, checked by
``verify_spec``), whatever the activation is: a module of the layer's own, a module shared with
other layers (whose hook would see every layer's frames), or a function (``F.relu``), which has no
module to hook. Why the fused paths off: ``nn.TransformerEncoder`` and its layers run a fused
kernel in inference mode that never calls the linears (no hook fires) and packs padded batches
into nested tensors; ``torch.backends.mha.set_fastpath_enabled(False)`` for the pass makes them run
their modules one by one on dense tensors, with the same results.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from neurosel.errors import NeuroselError
from neurosel.fc.spec import FcSpec, get_linear

# hook(layer, activations) -> None, or a tensor that replaces the consumer's input
TapHook = Callable[[int, Tensor], "Tensor | None"]


@contextlib.contextmanager
def fastpaths_off() -> Iterator[None]:
    """PyTorch's fused MHA/TransformerEncoder inference paths off for the block, then as before."""
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


class ActivationTaps:
    """Forward pre-hooks on every consumer of ``spec`` that call ``hook(layer, activations)``,
    and a record of how often each layer was seen in each forward of ``model``.

    A context manager (hooks and ``fastpaths_off`` only inside ``with``). Raises
    ``NeuroselError`` when a consumer runs twice in one forward of the model (its input is then
    not one layer's activations) or, from ``check_seen``, when some layers ran and others never
    did (a branch or a fused kernel skipped them: their statistics would be silently empty).
    """

    def __init__(self, model: nn.Module, spec: FcSpec, hook: TapHook):
        self.model = model
        self.spec = spec
        self.hook = hook
        self.seen = [0] * len(spec.consumers)
        self._in_forward = [0] * len(spec.consumers)
        self._inside_forward = False  # within a call of the model itself (not of a submodule)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> ActivationTaps:
        self._stack.enter_context(fastpaths_off())
        self._handles.append(self.model.register_forward_pre_hook(self._forward_starts))
        self._handles.append(self.model.register_forward_hook(self._forward_ends))
        for layer, name in enumerate(self.spec.consumers):
            self._handles.append(get_linear(self.model, name).register_forward_pre_hook(self._tap(layer)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self._stack.close()

    def _forward_starts(self, module: nn.Module, args: Any) -> None:
        self._in_forward = [0] * len(self.spec.consumers)
        self._inside_forward = True

    def _forward_ends(self, module: nn.Module, args: Any, output: Any) -> None:
        self._inside_forward = False

    def _tap(self, layer: int) -> Callable[..., Any]:
        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> Any:
            self._in_forward[layer] += 1
            if self._inside_forward and self._in_forward[layer] > 1:
                raise NeuroselError(f"FC layer {layer}: consumer '{self.spec.consumers[layer]}' ran twice in "
                                    "one forward of the model; its input is not one layer's activations")
            replaced = self.hook(layer, args[0])
            self.seen[layer] += 1
            return None if replaced is None else (replaced, *args[1:])

        return pre_hook

    def check_seen(self) -> None:
        """``NeuroselError`` if some layers were seen and others never."""
        if any(self.seen) and not all(self.seen):
            layer = self.seen.index(0)
            raise NeuroselError(f"FC layer {layer}: consumer '{self.spec.consumers[layer]}' never ran while "
                                "other layers did; a branch or a fused kernel skipped it")
