"""Tiny models with an FC stack, and their FcSpec, for the saliency and prune tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from neurosel.fc import FcSpec


class Mlp(nn.Module):
    """(..., n_in) -> FC layers ``widths`` with ``activation`` -> output Linear (..., n_out)."""

    def __init__(self, n_in: int, widths: list[int], n_out: int, activation: str = "sigmoid"):
        super().__init__()
        dims = [n_in, *widths]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
        self.act = nn.ModuleList(act() for _ in widths)
        self.output = nn.Linear(widths[-1], n_out)

    def forward(self, x: Tensor) -> Tensor:
        for fc, act in zip(self.fc, self.act):
            x = act(fc(x))
        return self.output(x)


def mlp_spec(n_layers: int, on_threshold: float = 0.5) -> FcSpec:
    return FcSpec([f"fc.{i}" for i in range(n_layers)], [f"act.{i}" for i in range(n_layers)],
                  [f"fc.{i + 1}" for i in range(n_layers - 1)] + ["output"], on_threshold)


class ConvMlp(nn.Module):
    """(B, T, F) -> Conv1d over time (channels = F) -> ReLU -> ``Mlp`` per frame (B, T, n_out)."""

    def __init__(self, n_feat: int, channels: int, widths: list[int], n_out: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(n_feat, channels, 3, padding=1), nn.ReLU())
        self.head = Mlp(channels, widths, n_out, activation="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.conv(x.transpose(1, 2)).transpose(1, 2))


def conv_mlp_spec(n_layers: int) -> FcSpec:
    spec = mlp_spec(n_layers, on_threshold=0.0)
    return FcSpec(*([f"head.{n}" for n in names] for names in (spec.linears, spec.activations,
                                                               spec.consumers)), 0.0)


def seeded(module: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every parameter from ``seed`` (normal, std 1/sqrt(fan-in) for weights)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            fan_in = p.shape[1] if p.dim() > 1 else 4
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in**0.5))
    return module
