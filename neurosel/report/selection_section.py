"""Stage 8's section on choosing the adaptation data (issue 18 part 4): each adaptation system
that ran with selection variants (``<system>_conf<NN>``: the NN% most confident first-pass
utterances; ``<system>_shift<NN>``: the NN% least shifted by the configured shift score;
``neurosel.recipe.adapt_systems.selection_variant``) beside the system itself, which keeps them
all; mean OOD WER, in-domain test after adapting, the pseudo-label WER of what was kept (from the
units' ``adapt.json``, for the report only), and paired bootstraps: selection by shift against
selection by confidence and against keeping all, and by confidence against keeping all."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import selection_variant
from neurosel.report.collect import SystemResults
from neurosel.report.markdown import cell, comparisons_section, mean_wer, table
from neurosel.report.results import Comparison, compare_on_ood

KEY = "select_"  # the comparisons' keys: select_shift_vs_conf:<system>_shift<NN>, ...
HEADING = "Adaptation data chosen by shift or by confidence"


def selection_comparisons(systems: dict[str, SystemResults]) -> list[Comparison]:
    """For each ``<system>_shift<NN>``: against ``<system>_conf<NN>`` and against ``<system>``; for
    each ``<system>_conf<NN>``: against ``<system>``; paired bootstrap on the OOD test sets both
    were scored on (each condition's set decoded by the model adapted to it)."""
    out = []
    for name in sorted(systems):
        variant = selection_variant(name)
        if variant is None or layout.is_pooled(name):
            continue
        percent = f"{round(100 * variant.fraction)}"
        others = ([(f"{variant.system}_conf{percent}", "confidence", "conf")] if variant.by == "shift" else [])
        others.append((variant.system, "keeping all", "all"))
        by = "shift" if variant.by == "shift" else "conf"
        for other, what, short in others:
            out += compare_on_ood(f"{variant.system}: top {percent}% by {variant.by} vs {what}", systems, other, name,
                                  f"{KEY}{by}_vs_{short}:{name}")
    return out


def kept_report(adapt_root: Path, system: str) -> tuple[float | None, float | None]:
    """Mean over the system's units (not pooled) of the share of utterances kept and of the
    pseudo-label WER of the kept ones, from their ``adapt.json``."""
    shares, wers = [], []
    for path in sorted(adapt_root.glob(f"{system}.s*/{layout.adapted_name('*')}/adapt.json")):
        labels = json.loads(path.read_text(encoding="utf-8")).get("labels", {})
        if labels.get("utterances"):
            shares.append(labels["kept"] / labels["utterances"])
        if labels.get("pseudo_wer_kept") is not None:
            wers.append(labels["pseudo_wer_kept"])
    return (float(np.mean(shares)) if shares else None, float(np.mean(wers)) if wers else None)


def selection_section(summary: dict, comparisons: list[Comparison], conditions: list[str], adapt_root: Path) -> str:
    """Markdown of the section; one line saying how to run it when no variant ran."""
    variants = sorted(s for s in summary if selection_variant(s) is not None and not layout.is_pooled(s))
    if not variants:
        return ("Not run: add selection variants to stage 7's systems, e.g. `adapt_all_conf80` and "
                "`adapt_all_shift80` (the full study, `./run.sh --study full`, does).\n")
    ood = [layout.ood_set(c) for c in conditions]
    bases = sorted({selection_variant(s).system for s in variants})  # type: ignore[union-attr]
    rows = []
    for base in bases:
        for s in [base] + [v for v in variants if selection_variant(v).system == base]:  # type: ignore[union-attr]
            if s not in summary:
                continue
            variant = selection_variant(s)
            kept, pseudo = kept_report(adapt_root, s)
            in_domain = [summary[s][k]["wer"] for k in summary[s] if k.startswith(f"{layout.TEST}.")]
            m = mean_wer(summary, s, ood)
            rows.append([s, "all (pseudo_labels)" if variant is None else f"top {variant.fraction:.0%} by {variant.by}",
                         "–" if kept is None else f"{kept:.0%}", "–" if pseudo is None else f"{pseudo:.2f}"]
                        + [cell(summary[s].get(t)) for t in ood]
                        + ["–" if m is None else f"{m:.2f}", "–" if not in_domain else f"{np.mean(in_domain):.2f}",
                           str(max((e["n"] for e in summary[s].values()), default=0))])
    md = ["Each condition's adaptation utterances ranked without a transcript: by the first pass's confidence "
          "or by the shift score of the baseline's neurons and outputs on them (stage 7's `shift_score`); the "
          "variant trains on the kept share with its system's learning rates and step budget. Kept: share of "
          "the adaptation utterances; pseudo-label WER of the kept ones for this report only.\n",
          table(["system", "adaptation data", "kept", "pseudo-label WER kept"] + ood
                + ["mean OOD", "test (in-domain, after adapting)", "seeds"], rows)]
    if comparisons:
        md += ["Paired bootstrap (B − A < 0: B better), each condition's OOD test set decoded by the model adapted "
               "to it, all conditions pooled:\n", comparisons_section(comparisons), verdict(comparisons)]
    return "\n".join(md)


def verdict(comparisons: list[Comparison]) -> str:
    """One line per comparison of selection by shift: whether it helps, and how sure."""
    lines = []
    for c in comparisons:
        if "by shift" not in c.name:
            continue
        r = c.result
        sure = r.ci_high < 0 or r.ci_low > 0
        word = ("helps" if r.difference < 0 else "hurts") if sure else "makes no significant difference"
        lines.append(f"- {c.name}: selection by shift {word} ({r.wer_b:.2f} vs {r.wer_a:.2f}, "
                     f"{r.difference:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]).")
    return "\n".join(lines) + "\n" if lines else ""
