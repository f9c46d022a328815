"""What the model-agnostic analysis code (saliency, prune, adapt) needs to know about a model's FC
stack, as dotted module names, so that it never imports the model class itself."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FcSpec:
    """The analysable fully connected layers of a model, input side first.

    ``linears[i]`` is the ``nn.Linear`` of FC layer i (its output rows are the layer's neurons);
    ``activations[i]`` the activation module whose forward output is the neurons' activations
    (a forward hook there sees a ``(frames, width)`` tensor of valid frames only);
    ``consumers[i]`` the ``nn.Linear`` whose input columns are layer i's neurons (the next FC layer,
    or the output layer for the last one); ``on_threshold`` the activation above which a neuron is
    "on" (0.5 for sigmoid, 0.0 for ReLU).
    """

    linears: list[str]
    activations: list[str]
    consumers: list[str]
    on_threshold: float
