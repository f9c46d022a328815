"""PNG figures of neuron statistics and criteria comparisons (matplotlib, Agg canvas, written
atomically). Figures are built with ``matplotlib.figure.Figure`` rather than pyplot, so no
global backend or figure state is touched."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from neurosel.io import atomic_path
from neurosel.saliency.classify import CLASSES, ClassifyConfig, class_counts
from neurosel.saliency.compare import SelectionOverlap

CLASS_COLOURS = {"hyper": "tab:red", "hypo": "tab:blue", "normal": "tab:gray"}


def _save(fig: Figure, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _layer_axes(n_layers: int, title: str) -> tuple[Figure, list[Axes]]:
    cols = min(n_layers, 4)
    rows = math.ceil(n_layers / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    fig.suptitle(title)
    axes = fig.subplots(rows, cols, squeeze=False).flatten().tolist()
    for ax in axes[n_layers:]:
        ax.set_visible(False)
    return fig, axes[:n_layers]


def plot_on_rate_histograms(path: str | Path, on_rate: list[Tensor], classes: list[np.ndarray],
                            config: ClassifyConfig, bins: int = 40) -> None:
    """One on-rate histogram per FC layer with the hyper/hypo cuts drawn: the configured
    thresholds in threshold mode, otherwise the boundary on-rates of the chosen neurons."""
    fig, axes = _layer_axes(len(on_rate), "on-rate per FC layer")
    for layer, (ax, p, labels) in enumerate(zip(axes, on_rate, classes)):
        values = p.numpy()
        ax.hist(values, bins=bins, range=(0.0, 1.0), color="tab:gray")
        if config.mode == "threshold":
            cuts = {"hypo": config.hypo_on_rate, "hyper": config.hyper_on_rate}
        else:
            cuts = {}
            if (labels == "hypo").any():
                cuts["hypo"] = float(values[labels == "hypo"].max())
            if (labels == "hyper").any():
                cuts["hyper"] = float(values[labels == "hyper"].min())
        for name, x in cuts.items():
            ax.axvline(x, color=CLASS_COLOURS[name], linestyle="--", label=f"{name} cut")
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("on-rate")
        ax.set_ylabel("neurons")
        if cuts:
            ax.legend(fontsize="small")
    _save(fig, path)


def plot_mean_vs_entropy(path: str | Path, mean_act: list[Tensor], entropy: list[Tensor],
                         classes: list[np.ndarray]) -> None:
    """Per FC layer a scatter of mean activation against on/off entropy, coloured by class."""
    fig, axes = _layer_axes(len(mean_act), "mean activation vs on/off entropy")
    for layer, (ax, m, h, labels) in enumerate(zip(axes, mean_act, entropy, classes)):
        for name in CLASSES:
            chosen = labels == name
            if chosen.any():
                ax.scatter(m.numpy()[chosen], h.numpy()[chosen], s=6, color=CLASS_COLOURS[name],
                           label=name)
        ax.set_title(f"layer {layer}")
        ax.set_xlabel("mean activation")
        ax.set_ylabel("entropy (bits)")
        ax.legend(fontsize="small")
    _save(fig, path)


def plot_criteria_overlap(path: str | Path, rows: list[SelectionOverlap]) -> None:
    """Stacked bars: the hyper / hypo / normal share of each criterion's selection."""
    fig = Figure(figsize=(max(4.0, 0.8 * len(rows) + 2.0), 3.5), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows))
    bottom = np.zeros(len(rows))
    for name in CLASSES:
        share = np.array([getattr(r, f"share_{name}") or 0.0 for r in rows])
        ax.bar(x, share, bottom=bottom, color=CLASS_COLOURS[name], label=name)
        bottom += share
    ax.set_xticks(x, [r.criterion for r in rows], rotation=45, ha="right")
    ax.set_ylabel("share of selection")
    ax.set_ylim(0.0, 1.0)
    ax.set_title("what each criterion selects at the hyper+hypo budget")
    ax.legend(fontsize="small")
    _save(fig, path)


def plot_class_counts(path: str | Path, classes: list[np.ndarray]) -> None:
    """Per FC layer the number of hyper and hypo neurons (grouped bars)."""
    counts = class_counts(classes)
    fig = Figure(figsize=(max(4.0, 0.9 * len(counts) + 2.0), 3.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(counts))
    for offset, name in ((-0.2, "hyper"), (0.2, "hypo")):
        ax.bar(x + offset, [c[name] for c in counts], width=0.4, color=CLASS_COLOURS[name], label=name)
    ax.set_xticks(x, [f"layer {i}" for i in x])
    ax.set_ylabel("neurons")
    ax.set_title("hyper / hypo neurons per FC layer")
    ax.legend(fontsize="small")
    _save(fig, path)
