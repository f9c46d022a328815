"""Report figures (matplotlib, Agg; written atomically): WER per system and condition, WER
against the fraction of FC neurons removed, and adaptation loss curves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neurosel.io import atomic_path
from neurosel.recipe import layout

_CURVE = re.compile(r"^curve_(?P<order>.+)_(?P<pct>\d+)$")


def save_figure(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")


def plot_wer_bars(path: Path, summary: dict, systems: list[str], sets: list[str], title: str) -> bool:
    """Grouped bars: one group per test set, one bar per system (mean over seeds, std as error bar)."""
    systems = [s for s in systems if any(t in summary.get(s, {}) for t in sets)]
    if not systems or not sets:
        return False
    fig = Figure(figsize=(max(6, 1.2 * len(sets) * max(1, len(systems)) / 3), 4))
    ax = fig.subplots()
    width = 0.8 / len(systems)
    x = np.arange(len(sets))
    for i, s in enumerate(systems):
        vals = [summary[s].get(t, {}).get("wer", np.nan) for t in sets]
        errs = [summary[s].get(t, {}).get("wer_std", 0.0) for t in sets]
        ax.bar(x + i * width - 0.4 + width / 2, vals, width, yerr=errs, label=s, capsize=2)
    ax.set_xticks(x, sets, rotation=20)
    ax.set_ylabel("WER (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)
    return True


def plot_pruning_curve(path: Path, summary: dict, sets: list[str]) -> bool:
    """Mean WER over ``sets`` against the percentage of FC neurons removed, one line per order."""
    curves: dict[str, list[tuple[int, float, float]]] = {}
    for name, per_set in summary.items():
        m = _CURVE.match(name)
        if m is None or not all(t in per_set for t in sets):
            continue
        curves.setdefault(m.group("order"), []).append(
            (int(m.group("pct")), float(np.mean([per_set[t]["wer"] for t in sets])),
             float(np.mean([per_set[t]["wer_std"] for t in sets]))))
    if not curves:
        return False
    base = float(np.mean([summary["baseline"][t]["wer"] for t in sets])) if "baseline" in summary else None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for order, pts in sorted(curves.items()):
        pts.sort()
        xs = [0] + [p[0] for p in pts] if base is not None else [p[0] for p in pts]
        ys = [base] + [p[1] for p in pts] if base is not None else [p[1] for p in pts]
        ax.plot(xs, ys, marker="o", label=order)
    ax.set_xlabel("FC neurons removed (%)")
    ax.set_ylabel(f"mean WER over {', '.join(sets)} (%)" if len(sets) < 3 else "mean OOD WER (%)")
    ax.legend()
    ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True


def plot_adaptation_losses(path: Path, adapt_root: Path) -> bool:
    """Per-step pseudo-label loss of each adaptation run (``adapt.json``: ``losses``), one panel
    per condition, one line per system (first seed)."""
    runs: dict[str, dict[str, list[float]]] = {}
    for f in sorted(adapt_root.glob(f"*/{layout.adapted_name('*')}/adapt.json")):
        system = layout.parse_system_id(f.parents[1].name)[0]
        doc = json.loads(f.read_text())
        losses = doc.get("losses") or doc.get("loss_curve")
        if isinstance(losses, dict):  # per phase
            losses = [v for phase in losses.values() for v in phase]
        if losses:
            runs.setdefault(f.parent.name, {}).setdefault(system, [float(v) for v in losses])
    if not runs:
        return False
    fig = Figure(figsize=(4 * len(runs), 3.5))
    axes = np.atleast_1d(fig.subplots(1, len(runs)))
    for ax, (cond, systems) in zip(axes, sorted(runs.items())):
        for s, losses in sorted(systems.items()):
            ax.plot(losses, label=s, lw=1)
        ax.set_title(cond)
        ax.set_xlabel("step")
        ax.set_ylabel("pseudo-label CTC loss")
    axes[0].legend(fontsize=6)
    save_figure(fig, path)
    return True
