"""The training loss curve as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neurosel.io import atomic_path


def plot_losses(train_losses: list[float], valid: list[list[float]], path: str | Path) -> None:
    """Per-step training loss (raw and a moving average) and validation loss ([step, epoch, loss]
    rows) against the step, in nats per token, written to ``path`` atomically."""
    # imported here: every job that loads features imports neurosel.train, and matplotlib took
    # 0.3-0.4 s of each one's start-up; a Figure needs no pyplot and no global backend
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
    steps = np.arange(1, len(train_losses) + 1)
    ax.plot(steps, train_losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="train (per step)")
    window = max(1, len(train_losses) // 50)
    if len(train_losses) >= window > 1:
        smooth = np.convolve(train_losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", label=f"train ({window}-step mean)")
    if valid:
        rows = np.asarray(valid, dtype=float)
        ax.plot(rows[:, 0], rows[:, 2], "o-", color="tab:orange", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("CTC loss (nats per token)")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
