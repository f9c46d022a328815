"""Find a model's FC layers by running it once on a sample input, and check a hand-written
``FcSpec`` the same way.

One forward pass (eval mode, no gradients, PyTorch's fused inference paths off) is recorded at
the level of torch functions (``TorchFunctionMode``: every ``F.relu``, ``torch.sigmoid``,
``x.relu()``, ``F.linear`` call with its tensor inputs and output) and of modules (forward hooks on
every submodule). An ``nn.Linear`` L is an FC layer when, in that pass:

- L runs once, and its output is used by exactly one call: an element-wise activation
  (``neurosel.fc.ACTIVATIONS``), as a module of the model or as a function;
- the activation's output, after any dropout, is used by exactly one call: the ``F.linear`` of
  another ``nn.Linear`` C (the consumer) that runs once and takes it as its input.

Anything else between them (a normalisation, a residual sum, a reshape that mixes neurons, a
second reader of the activations) makes removing one neuron more than deleting a row of L and
a column of C, so L is left out, with the reason (``FcTrace.reasons``). Linears that a fused
kernel reads without calling them (``nn.MultiheadAttention``'s ``out_proj``) never run and are not
candidates.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from neurosel.errors import NeuroselError
from neurosel.fc.spec import ACTIVATIONS, FUNCTIONAL_PREFIX, FcSpec, activation_kind, check_spec, default_threshold
from neurosel.fc.taps import fastpaths_off

_DROPOUTS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
             "feature_dropout"}


@dataclasses.dataclass
class _Call:
    index: int
    name: str  # the torch function's name, in-place underscore dropped ("relu" for relu_)
    inputs: list[Tensor]
    output: Any


@dataclasses.dataclass
class _ModuleCall:
    name: str
    module: nn.Module
    input: Any
    output: Any
    first: int  # index of its first recorded function call
    last: int = -1  # one past its last


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[_Call] = []

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "").rstrip("_")
        self.calls.append(_Call(len(self.calls), name,
                                [t for t in tree_leaves((args, kwargs)) if isinstance(t, Tensor)], out))
        return out


@dataclasses.dataclass(frozen=True)
class FcLayer:
    """One FC layer found in a forward pass: names as in ``FcSpec``, and the activation's kind."""

    linear: str
    activation: str
    consumer: str
    kind: str


@dataclasses.dataclass
class FcTrace:
    """What one recorded forward pass says about every ``nn.Linear`` that ran: the FC layers
    (``layers``, in the order their linears ran) and why each other linear is not one
    (``reasons``, by linear name)."""

    layers: list[FcLayer]
    reasons: dict[str, str]

    def layer_of(self, linear: str) -> FcLayer | None:
        """The FC layer whose linear is ``linear``, if it is one."""
        return next((layer for layer in self.layers if layer.linear == linear), None)


def trace_fc(model: nn.Module, *args: Any, **kwargs: Any) -> FcTrace:
    """Run ``model(*args, **kwargs)`` once (eval mode, no gradients, fused paths off; the model's
    mode is restored) and find its FC layers; see the module docs for the rule."""
    names = {id(m): n for n, m in model.named_modules() if n}
    recorder = _Recorder()
    module_calls: list[_ModuleCall] = []
    open_calls: dict[int, list[_ModuleCall]] = {}

    def pre_hook(module: nn.Module, inputs: Any) -> None:
        call = _ModuleCall(names[id(module)], module, inputs[0] if inputs else None, None, len(recorder.calls))
        module_calls.append(call)
        open_calls.setdefault(id(module), []).append(call)

    def post_hook(module: nn.Module, inputs: Any, output: Any) -> None:
        call = open_calls[id(module)].pop()
        call.output, call.last = output, len(recorder.calls)

    handles = []
    for module in model.modules():
        if id(module) in names:
            handles += [module.register_forward_pre_hook(pre_hook), module.register_forward_hook(post_hook)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), fastpaths_off(), recorder:
            model(*args, **kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return _analyse(recorder.calls, module_calls)


def _analyse(calls: list[_Call], module_calls: list[_ModuleCall]) -> FcTrace:
    runs: dict[str, list[_ModuleCall]] = {}
    for call in module_calls:
        runs.setdefault(call.name, []).append(call)

    def uses(tensor: Tensor, after: int) -> list[_Call]:
        """Calls after index ``after`` that read ``tensor`` and return a tensor (shape queries do not)."""
        return [c for c in calls[after + 1:]
                if any(t is tensor for t in c.inputs) and any(isinstance(o, Tensor) for o in tree_leaves(c.output))]

    layers, reasons = [], {}
    for name, linear_runs in runs.items():
        if not isinstance(linear_runs[0].module, nn.Linear):
            continue
        if len(linear_runs) != 1:
            reasons[name] = f"it runs {len(linear_runs)} times in one forward"
            continue
        run = linear_runs[0]
        out = run.output
        readers = uses(out, run.last - 1)
        if len(readers) != 1 or readers[0].name not in ACTIVATIONS or readers[0].inputs[0] is not out:
            what = ", ".join(sorted({c.name for c in readers})) or "nothing"
            reasons[name] = f"its output goes to {what}, not to one element-wise activation"
            continue
        act = readers[0]
        acts = act.output
        readers = uses(acts, act.index)
        while readers and readers[0].name in _DROPOUTS and readers[0].inputs[0] is acts:
            dropout = readers[0]
            if dropout.output is not acts and len(readers) > 1:
                break  # something else reads the activations before dropout
            acts = dropout.output  # the same tensor in eval mode
            readers = uses(acts, dropout.index)
        consumers = [c for c in module_calls
                     if isinstance(c.module, nn.Linear) and c.input is acts and c.first <= readers[0].index < c.last] \
            if len(readers) == 1 else []
        if len(consumers) != 1 or len(runs[consumers[0].name]) != 1:
            what = ", ".join(sorted({c.name for c in readers})) or "nothing"
            reasons[name] = f"its activations go to {what}, not to the input of one nn.Linear that runs once"
            continue
        layers.append(FcLayer(name, _activation_name(act, module_calls, out), consumers[0].name, act.name))
    return FcTrace(layers, reasons)


def _activation_name(act: _Call, module_calls: list[_ModuleCall], linear_output: Tensor) -> str:
    """The innermost module whose call is exactly this activation, else ``F.<kind>``."""
    wrapping = [c for c in module_calls if c.first <= act.index < c.last and c.input is linear_output
                and not isinstance(c.module, nn.Linear) and not any(True for _ in c.module.children())]
    return wrapping[-1].name if wrapping else FUNCTIONAL_PREFIX + act.name


def find_fc_layers(model: nn.Module, *args: Any, on_threshold: float | None = None, **kwargs: Any) -> FcSpec:
    """The ``FcSpec`` of every FC layer of ``model`` found by running ``model(*args, **kwargs)``
    once (a sample input: a few frames are enough). ``on_threshold`` defaults to the activations'
    value at 0 (0 for ReLU/GELU, 0.5 for sigmoid) and must be given when the layers' activations
    differ in it. Raises ``NeuroselError`` naming each linear and why it is not an FC layer when
    none is found."""
    trace = trace_fc(model, *args, **kwargs)
    if not trace.layers:
        why = "; ".join(f"{name}: {reason}" for name, reason in trace.reasons.items()) or "no nn.Linear ran"
        raise NeuroselError(f"no FC layer (Linear -> activation -> Linear) found in {type(model).__name__} ({why})")
    if on_threshold is None:
        thresholds = {layer.kind: default_threshold(layer.kind) for layer in trace.layers}
        if len(set(thresholds.values())) > 1:
            raise NeuroselError(f"the FC layers use activations whose 'on' thresholds differ ({thresholds}); "
                                "pass on_threshold")
        on_threshold = next(iter(thresholds.values()))
    spec = FcSpec([layer.linear for layer in trace.layers], [layer.activation for layer in trace.layers],
                  [layer.consumer for layer in trace.layers], on_threshold)
    check_spec(model, spec)
    return spec


def verify_spec(model: nn.Module, spec: FcSpec, *args: Any, **kwargs: Any) -> None:
    """``check_spec``, then run ``model(*args, **kwargs)`` once and raise ``NeuroselError`` unless
    each layer of ``spec`` is an FC layer of that pass with the named activation and consumer."""
    check_spec(model, spec)
    trace = trace_fc(model, *args, **kwargs)
    for i, (linear, activation, consumer) in enumerate(zip(spec.linears, spec.activations, spec.consumers)):
        found = trace.layer_of(linear)
        if found is None:
            raise NeuroselError(f"FC layer {i}: '{linear}' is not an FC layer on this input: "
                                f"{trace.reasons.get(linear, 'it never ran')}")
        if found.consumer != consumer:
            raise NeuroselError(f"FC layer {i}: the activations of '{linear}' go to '{found.consumer}', "
                                f"not to consumer '{consumer}'")
        if activation.startswith(FUNCTIONAL_PREFIX):
            same = found.kind == activation_kind(model, activation)
        else:
            same = found.activation == activation
        if not same:
            raise NeuroselError(f"FC layer {i}: the output of '{linear}' goes through '{found.activation}', "
                                f"not through activation '{activation}'")
