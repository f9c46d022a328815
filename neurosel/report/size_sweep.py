"""Stage 8's section on the selection size (issue 16 part 3): how many neurons the hyper/hypo rule
takes, as a sweep, for pruning and for selective adaptation, and the size chosen without test data.

- Pruning (stage 6's ``sweep_percents``): ``sweep_hyper_hypo_<p>`` removes the top and bottom
  ``p`` % of each FC layer by on-rate, ``sweep_random_<p>.s<seed>`` as many random neurons per
  layer; ``sweep_*_thr`` the fixed on-rate thresholds. The size is the ``p`` with the lowest dev
  WER of ``sweep_hyper_hypo_<p>`` (ties: the smaller ``p``); at that size, paired bootstraps against
  the baseline and against random removal on the OOD test sets.
- Adaptation (stage 7's neuron-share variants ``<system>_n<PP>``): each system that moves
  selected neurons, with its variants; the size is the one with the lowest held-out pseudo-label
  loss after adaptation (the units' ``adapt.json``: no transcript, no test set), and at that size
  paired bootstraps of ``adapt_selective_full`` against ``adapt_all`` and against
  ``adapt_random_full`` at the same share when it ran.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import NEURON_SYSTEMS, neuron_share
from neurosel.report import claims
from neurosel.report.collect import SystemResults
from neurosel.report.markdown import cell, comparisons_section, mean_wer, table
from neurosel.report.plots import save_figure
from neurosel.report.results import Comparison, compare_on_ood

KEY = "sweep_"  # the comparisons' keys: sweep_prune_vs_baseline, sweep_prune_vs_random, sweep_adapt_vs_*
HEADING = claims.SIZE_HEADING
_PRUNE = re.compile(r"^sweep_(?P<sel>hyper_hypo|random)_(?P<tag>\d+|thr)$")
BASE_SHARE = "stage 5's classes"  # what a system without _n<PP> selects (the table's own classes)


@dataclass
class AdaptPoint:
    """One size of one adaptation system: ``system`` (the system itself or a variant), the share
    per class and layer (None: stage 5's classes), mean held-out pseudo-label loss after adapting."""

    system: str
    share: float | None
    heldout: float | None


def prune_points(summary: dict) -> dict[str, dict[str, str]]:
    """``{tag: {"hyper_hypo": system, "random": system}}`` of the pruning sweep (tags: whole
    percentages, sorted, then ``thr``)."""
    points: dict[str, dict[str, str]] = {}
    for name in summary:
        m = _PRUNE.match(layout.parse_system_id(name)[0])
        if m is not None:
            points.setdefault(m["tag"], {})[m["sel"]] = name
    return dict(sorted(points.items(), key=lambda kv: (kv[0] == "thr", int(kv[0]) if kv[0] != "thr" else 0)))


def chosen_prune_size(points: dict[str, dict[str, str]], summary: dict) -> str | None:
    """The sweep's percentage (tag of ``points``) whose hyper+hypo removal has the lowest dev WER
    (ties: smaller)."""
    best = None
    for tag, systems in points.items():
        dev = summary.get(systems.get("hyper_hypo", ""), {}).get(layout.DEV)
        if tag == "thr" or dev is None:
            continue
        if best is None or dev["wer"] < best[1]:
            best = (tag, dev["wer"])
    return None if best is None else best[0]


def heldout_after(adapt_root: Path, system: str) -> float | None:
    """Mean held-out pseudo-label loss after adaptation over the system's per-condition units."""
    values = [json.loads(p.read_text(encoding="utf-8")).get("heldout_loss_after")
              for p in sorted(adapt_root.glob(f"{system}.s*/{layout.adapted_name('*')}/adapt.json"))]
    values = [float(v) for v in values if v is not None]
    return float(np.mean(values)) if values else None


def adapt_points(summary: dict, adapt_root: Path) -> dict[str, list[AdaptPoint]]:
    """``{system: [its sizes]}`` for each system of ``NEURON_SYSTEMS`` that ran with neuron-share
    variants: the system itself (stage 5's classes) first, then its variants by share."""
    out: dict[str, list[AdaptPoint]] = {}
    for name in sorted(summary):
        share = neuron_share(name)
        if share is None or layout.is_pooled(name):
            continue
        out.setdefault(share[0], []).append(AdaptPoint(name, share[1], heldout_after(adapt_root, name)))
    for base, points in out.items():
        points.sort(key=lambda p: p.share or 0.0)
        if base in summary:
            points.insert(0, AdaptPoint(base, None, heldout_after(adapt_root, base)))
    return {b: out[b] for b in NEURON_SYSTEMS if b in out}


def chosen_adapt_point(points: list[AdaptPoint]) -> AdaptPoint | None:
    """The size with the lowest held-out pseudo-label loss after adapting (ties: the first)."""
    scored = [p for p in points if p.heldout is not None]
    return min(scored, key=lambda p: p.heldout) if scored else None


@dataclass
class SizeSweep:
    """What a run holds of the sweep, read once: the pruning points and the size chosen on dev, the
    adaptation points of each neuron-moving system and adapt_selective_full's chosen size."""

    prune: dict[str, dict[str, str]]
    prune_chosen: str | None
    adapt: dict[str, list[AdaptPoint]]
    adapt_chosen: AdaptPoint | None


def read_sweep(summary: dict, adapt_root: Path) -> SizeSweep:
    """The run's ``SizeSweep`` (the adaptation points read the units' ``adapt.json``)."""
    prune, adapt = prune_points(summary), adapt_points(summary, adapt_root)
    return SizeSweep(prune, chosen_prune_size(prune, summary), adapt,
                     chosen_adapt_point(adapt.get("adapt_selective_full", [])))


def size_comparisons(systems: dict[str, SystemResults], sweep: SizeSweep) -> list[Comparison]:
    """The paired bootstraps at the chosen sizes (module docstring); keys start with ``KEY``."""
    out = []
    tag = sweep.prune_chosen
    if tag is not None:
        point = sweep.prune[tag]
        hh = point.get("hyper_hypo", "")
        out += compare_on_ood(f"hyper+hypo removal at {tag}%/class (chosen on dev) vs baseline", systems,
                              layout.BASELINE, hh, f"{KEY}prune_vs_baseline")
        out += compare_on_ood(f"hyper+hypo removal at {tag}%/class (chosen on dev) vs random removal", systems,
                              point.get("random", ""), hh, f"{KEY}prune_vs_random")
    chosen = sweep.adapt_chosen
    if chosen is not None:
        size = BASE_SHARE if chosen.share is None else f"{chosen.share:g}%/class"
        out += compare_on_ood(f"selective+full at {size} (chosen on held-out loss) vs adapt_all", systems,
                              "adapt_all", chosen.system, f"{KEY}adapt_vs_all")
        random = "adapt_random_full" if chosen.share is None else f"adapt_random_full_n{chosen.share:g}"
        out += compare_on_ood(f"selective+full at {size} (chosen on held-out loss) vs random neurons+full at the "
                              "same size", systems, random, chosen.system, f"{KEY}adapt_vs_random")
    return out


def selection_rules(sweep: SizeSweep) -> dict[str, str]:
    """The dashboard's selection-rule text of the chosen sizes (``results.json["selection"]``)."""
    rules = {}
    if sweep.prune_chosen is not None:
        rules["sweep_pruning"] = f"{sweep.prune_chosen}%/class/layer by on-rate, size chosen on dev WER"
    chosen = sweep.adapt_chosen
    if chosen is not None:
        size = BASE_SHARE if chosen.share is None else f"{chosen.share:g}%/class/layer by on-rate"
        rules["sweep_adaptation"] = f"{size}, each ood_adapt_<c>, size chosen on held-out pseudo-label loss"
    return rules


def size_sweep_section(summary: dict, sweep: SizeSweep, comparisons: list[Comparison], ood: list[str],
                       prune_dir: Path) -> str:
    """Markdown of the section; one line saying how to run it when no sweep ran."""
    points, adapt = sweep.prune, sweep.adapt
    if not points and not adapt:
        return ("Not run: stage 6's `sweep_percents` / `sweep_threshold` and stage 7's `<system>_n<PP>` systems "
                "(the full study, `./run.sh --study full`, runs them).\n")
    md = []
    if points:
        tag = sweep.prune_chosen
        rows = []
        for t, systems in points.items():
            for sel in ("hyper_hypo", "random"):
                s = systems.get(sel)
                if s is None:
                    continue
                infos = sorted(prune_dir.glob(f"{s}/prune.json")) + sorted(prune_dir.glob(f"{s}.s*/prune.json"))
                removed = json.loads(infos[0].read_text())["removed"] if infos else None
                m = mean_wer(summary, s, ood)
                rows.append([s, "thresholds" if t == "thr" else f"{t}%", "–" if removed is None else str(removed),
                             cell(summary[s].get(layout.DEV)), cell(summary[s].get(layout.TEST)),
                             "–" if m is None else f"{m:.2f}",
                             "**chosen**" if t == tag and sel == "hyper_hypo" else ""])
        base = mean_wer(summary, layout.BASELINE, ood)
        md += ["**Pruning.** Removed: the top and bottom share of each FC layer by the reference set's on-rate "
               "(hyper+hypo), or as many random neurons per layer; `thresholds`: on-rate at or past the fixed limits "
               "(the unpruned model where they select nothing). The size is chosen on dev WER, never on a test set"
               + (f"; baseline mean OOD WER {base:.2f}" if base is not None else "") + ".\n",
               table(["system", "share per class", "neurons removed", "dev", "test", "mean OOD", ""], rows)]
    for base_system, pts in adapt.items():
        chosen = chosen_adapt_point(pts)
        rows = []
        for p in pts:
            in_domain = [summary[p.system][k]["wer"] for k in summary[p.system] if k.startswith(f"{layout.TEST}.")]
            m = mean_wer(summary, p.system, ood)
            rows.append([p.system, BASE_SHARE if p.share is None else f"{p.share:g}%",
                         "–" if p.heldout is None else f"{p.heldout:.4f}", "–" if m is None else f"{m:.2f}",
                         "–" if not in_domain else f"{np.mean(in_domain):.2f}",
                         "**chosen**" if chosen is not None and p.system == chosen.system else ""])
        md += [f"**Adaptation, {base_system}.** Neurons: the top and bottom share of each FC layer by the "
               "condition's own on-rate (`<system>_n<PP>`), or stage 5's classes; same phases, step budget and "
               "learning rates. The size is chosen on the held-out pseudo-label loss after adapting (mean over "
               "conditions and seeds), never on a test set.\n",
               table(["system", "share per class", "held-out loss after", "mean OOD", "test (in-domain, after "
                      "adapting)", ""], rows)]
    if comparisons:
        md += ["Paired bootstrap at the chosen sizes (B − A < 0: B better), OOD test sets pooled:\n",
               comparisons_section(comparisons)]
    return "\n".join(md)


def plot_size_sweep(path: Path, summary: dict, sweep: SizeSweep, ood: list[str]) -> bool:
    """WER against the share per class: pruning (dev and mean OOD, hyper+hypo and random) and
    adaptation (mean OOD WER of each neuron-moving system)."""
    points = {t: s for t, s in sweep.prune.items() if t != "thr"}
    adapt = sweep.adapt
    panels = int(bool(points)) + int(bool(adapt))
    if not panels:
        return False
    fig = Figure(figsize=(5.5 * panels, 4))
    axes = list(np.atleast_1d(fig.subplots(1, panels)))
    if points:
        ax = axes.pop(0)
        xs = [int(t) for t in points]
        for sel, style in (("hyper_hypo", "-"), ("random", "--")):
            for sets, label in (([layout.DEV], "dev"), (ood, "mean OOD")):
                ys = [mean_wer(summary, points[t].get(sel, ""), sets) if points[t].get(sel) in summary else None
                      for t in points]
                if all(y is not None for y in ys):
                    ax.plot(xs, ys, style, marker="o", label=f"{sel.replace('_', '+')}, {label}")
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("removed per class and layer (%)")
        ax.set_ylabel("WER (%)")
        ax.set_title("Pruning (no retraining)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    if adapt:
        ax = axes.pop(0)
        ticks: list[float] = []
        for base_system, pts in adapt.items():
            sized = [p for p in pts if p.share is not None]
            ys = [mean_wer(summary, p.system, ood) for p in sized]
            if sized and all(y is not None for y in ys):
                ax.plot([p.share for p in sized], ys, marker="o", label=base_system)
                ticks = sorted({float(p.share) for p in sized})
        ax.set_xscale("log")
        if ticks:
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
        ax.set_xlabel("neurons per class and layer (%)")
        ax.set_ylabel("mean OOD WER (%)")
        ax.set_title("Selective adaptation (stage 5's classes: see the table)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, path)
    return True
