"""Stage 8's section on WER predicted without transcripts (issue 18), from what the shift command
wrote into ``exp/shift/evaluation.json`` (``neurosel.recipe.shift``): per set its measured WER and
the chosen predictor's held-out prediction (fitted without the set's condition) with its interval;
per candidate predictor (each signal alone, confidence ``max_posterior`` and ``frame_entropy``
among them, a pair, all combined) the held-out Pearson r, MAE and interval coverage beside the
constant predictor, and the utterance-level Spearman correlation; and a plot of predicted against
true WER. Nothing is computed here that the file does not hold, except r and MAE over subsets of its
held-out predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from neurosel.io import atomic_path
from neurosel.recipe import layout
from neurosel.shift import mean_absolute_error, pearson

PLOT = "shift_predicted_wer.png"
PREDICTED = "predicted_wer"  # neurosel.recipe.shift.PREDICTED: the chosen predictor per utterance
GOAL_R, GOAL_MAE, GOAL_RHO = 0.9, 3.0, 0.5  # issue 18's goals


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _recipe_rows(held_out: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The held-out predictions of the recipe's own sets (dev, test, ood_<c>), not the severity sets'."""
    return [h for h in held_out if not layout.is_severity_set(h["set"])]


def shift_section(shift_dir: Path, plots_dir: Path) -> tuple[str, list[tuple[str, str]]]:
    """Markdown of the section and the figures it wrote into ``plots_dir`` ((title, file name));
    a line saying how to get it when ``shift_dir`` has no ``evaluation.json``."""
    path = shift_dir / layout.SHIFT_EVALUATION
    if not path.is_file():
        return ("Not run: `steps/shift.sh <work-dir>` (or `python -m neurosel.bin.shift fit <work-dir>`) fits "
                "and judges the predictor; add `--severity-config conf/severity.yaml` for the severity sets.\n", [])
    doc = json.loads(path.read_text(encoding="utf-8"))
    candidates = doc["candidates"]
    chosen = next(c for c in candidates if c["name"] == doc["chosen"])
    held = chosen["held_out"]
    rho = doc.get("utterance_spearman", {})
    n_sets = len(doc["sets"])
    if "picked_without" in chosen:
        chosen = chosen | {"name": f"{chosen['name']} ({'+'.join(chosen['signals'])})"}
    md = [f"The baseline's shift signals (one inference pass, no transcript) of {n_sets} sets with a measured WER"
          + (" (the recipe's and the severity sets of `conf/severity.yaml`)" if doc.get("severity") else "")
          + ", and WER predictors judged leave-one-condition-out: every set's WER is predicted by a predictor "
          "fitted without any set of its condition (dev and test are one condition). Chosen by the lowest "
          f"held-out MAE: **{chosen['name']}** (so its held-out numbers are a little optimistic). "
          f"Interval level {doc['level']:.0%}.\n"]
    rows = [[h["set"], h["condition"], f"{h['wer']:.2f}", f"{h['predicted']:.2f}",
             f"[{h['low']:.2f}, {h['high']:.2f}]", f"{h['predicted'] - h['wer']:+.2f}"] for h in held]
    md.append(_table(["set", "condition", "true WER", "predicted", "interval", "error"], rows))
    recipe = _recipe_rows(held)
    if doc.get("severity") and len(recipe) > 2:
        p, t = np.array([h["predicted"] for h in recipe]), np.array([h["wer"] for h in recipe])
        md.append(f"On the recipe's own {len(recipe)} sets alone: r {_num(pearson(p, t), '.3f')}, MAE "
                  f"{mean_absolute_error(p, t):.2f} WER points.\n")
    crow = []
    for c in candidates:
        if "error" in c:
            crow.append([c["name"], "-", "-", "-", _num(rho.get(c["name"]), ".3f"), f"not judged: {c['error']}"])
        else:
            note = ""
            if "picked_without" in c:
                note = (f"picks {'+'.join(c['signals'])} on all sets; without each condition: "
                        + "; ".join(f"{k}: {'+'.join(v)}" for k, v in c["picked_without"].items()))
            crow.append([c["name"], _num(c["pearson"], ".3f"), f"{c['mae']:.2f}", f"{c['coverage']:.2f}",
                         _num(rho.get(c["name"]), ".3f"), note])
    crow.append(["(constant: mean WER of the fitting sets)", "-", f"{doc['constant_mae']:.2f}", "-", "-", ""])
    md.append("Every candidate, held out (r and MAE in WER points over the sets above; utterance rho: Spearman "
              "correlation of the signal with each utterance's WER over all those utterances; confidence is "
              "`max_posterior`):\n")
    md.append(_table(["predictor", "r", "MAE", "coverage", "utterance rho", "note"], crow))
    md.append(_goals(chosen, rho))
    figures = []
    if _plot(plots_dir / PLOT, held, chosen["name"]):
        figures.append(("Predicted (held-out) against true WER of every set", PLOT))
    return "\n".join(md), figures


def _goals(chosen: dict[str, Any], rho: dict[str, float | None]) -> str:
    finite = {k: v for k, v in rho.items() if v is not None and k != PREDICTED}
    best_rho = max(finite.items(), key=lambda kv: abs(kv[1])) if finite else None
    r, mae = chosen["pearson"], chosen["mae"]
    r_reached = r is not None and r >= GOAL_R
    parts = [f"set-level r {_num(r, '.3f')} (goal >= {GOAL_R}: {'reached' if r_reached else 'not reached'})",
             f"held-out MAE {mae:.2f} (goal <= {GOAL_MAE:g}: {'reached' if mae <= GOAL_MAE else 'not reached'})"]
    if rho.get(PREDICTED) is not None:
        parts.append(f"utterance-level Spearman of its predicted WER with each utterance's WER {rho[PREDICTED]:+.3f} "
                     f"(goal >= {GOAL_RHO}: {'reached' if rho[PREDICTED] >= GOAL_RHO else 'not reached'})")
    if best_rho is not None:
        parts.append(f"strongest single signal at utterance level {best_rho[0]} ({best_rho[1]:+.3f}, the "
                     f"largest |rho| of {len(finite)} signals)")
    return "Goals of issue 18 for the chosen predictor: " + "; ".join(parts) + ".\n"


def _plot(path: Path, held: list[dict[str, Any]], name: str) -> bool:
    if not held:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, cond in enumerate(dict.fromkeys(h["condition"] for h in held)):
        rows = [h for h in held if h["condition"] == cond]
        true = np.array([h["wer"] for h in rows])
        pred = np.array([h["predicted"] for h in rows])
        err = np.array([[h["predicted"] - h["low"] for h in rows], [h["high"] - h["predicted"] for h in rows]])
        ax.errorbar(true, pred, yerr=err, fmt="o", color=f"C{i}", alpha=0.8, capsize=2, label=cond)
    top = max(max(h["wer"], h["high"]) for h in held) * 1.05
    low = min(0.0, min(h["low"] for h in held))
    ax.plot([low, top], [low, top], "k--", lw=1, label="predicted = true")
    ax.set_xlabel("true WER (%)")
    ax.set_ylabel("predicted WER (%), held out")
    ax.set_title(f"{name}\nleave-one-condition-out", fontsize=8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return True
