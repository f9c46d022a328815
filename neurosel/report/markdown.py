"""RESULTS.md: the paper-style tables, generated from a run's numbers (never typed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurosel.recipe import layout
from neurosel.report.results import BLIND_SYSTEMS, Comparison

Summary = dict[str, dict[str, dict[str, float | int]]]


def cell(entry: dict | None) -> str:
    """``12.34`` for one run, ``12.34 ± 0.56 (3)`` over seeds, ``–`` when absent."""
    if entry is None:
        return "–"
    if entry["n"] > 1:
        return f"{entry['wer']:.2f} ± {entry['wer_std']:.2f} ({entry['n']})"
    return f"{entry['wer']:.2f}"


def rel(entry: dict | None, base: dict | None) -> str:
    """Relative WER change against the baseline, in percent."""
    if entry is None or base is None or base["wer"] == 0:
        return "–"
    return f"{100 * (entry['wer'] - base['wer']) / base['wer']:+.1f}%"


def mean_wer(summary: Summary, system: str, sets: list[str]) -> float | None:
    vals = [summary[system][t]["wer"] for t in sets if t in summary.get(system, {})]
    return float(np.mean(vals)) if vals and len(vals) == len(sets) else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def pruning_section(summary: Summary, test_sets: list[str], prune_info: dict) -> str:
    systems = ["baseline"] + sorted(s for s in summary if s.startswith("prune_") and not layout.is_retrained(s))
    ood = [t for t in test_sets if layout.is_ood_set(t)]
    base_ood = mean_wer(summary, "baseline", ood)
    rows = []
    for s in systems:
        m = mean_wer(summary, s, ood)
        change = "–" if m is None or base_ood in (None, 0) else f"{100 * (m - base_ood) / base_ood:+.1f}%"
        info = prune_info.get(s, {})
        removed = str(info.get("removed", "–")) if s != "baseline" else "0"
        speed = {} if s == "baseline" else info.get("speed", {})
        ratio = 1.0 if s == "baseline" else info.get("parameter_ratio")
        speedups = [1.0, 1.0] if s == "baseline" else [speed.get("speedup"), speed.get("fc_speedup")]
        rows.append([s, removed, "–" if ratio is None else f"{ratio:.0%}"]
                    + ["–" if x is None else f"{x:.2f}x" for x in speedups]
                    + [cell(summary[s].get(t)) for t in test_sets] + ["–" if m is None else f"{m:.2f}", change])
    return (table(["system", "neurons removed", "parameters", "speed-up", "FC speed-up"] + test_sets
                  + ["mean OOD", "rel. to baseline"], rows)
            + "\n`parameters`: the pruned model's parameters as a share of the baseline's (the smaller model, "
              "rows and columns deleted). `speed-up`: the baseline's forward time over the pruned model's on "
              f"the same utterances, {speed_clock(prune_info)} (stage 6's speed test, `prune.yaml`: speed_set, "
              "speed_utterances, speed_repeats; one seed's model for systems with several); `FC speed-up` the "
              "same for the FC stack alone. The whole forward includes the conv front end, which pruning "
              "leaves as it is, and its timing varies by a few percent with the allocator's page faults: "
              "`bench/` measures it on more audio.\n")


def speed_clock(prune_info: dict) -> str:
    """How stage 6 timed the forwards, from the systems' ``speed`` records: process CPU time on one
    thread on the CPU, synchronised wall time on a GPU (``device``, ``clock``)."""
    where = sorted({(sp.get("device", "?"), sp.get("clock", "?")) for info in prune_info.values()
                    if (sp := info.get("speed"))})
    if not where:
        return "CPU time on one thread"
    return "; ".join("CPU time on one thread" if clock == "process CPU" else f"{clock} time on {device}"
                     for device, clock in where)


def mean_in_domain_after(entry: dict[str, dict[str, float | int]]) -> float | None:
    """Mean in-domain test WER of a system scored per condition (``test.<c>``: after adapting or
    pruning for ``c``), or None when it has none."""
    after = [v["wer"] for t, v in entry.items() if layout.is_in_domain_after(t)]
    return float(np.mean(after)) if after else None


def retrain_section(summary: Summary, test_sets: list[str], each: dict[str, Comparison] | None = None) -> str:
    """Each retrained system beside its pruned model before retraining, and the control
    ``baseline_ft`` beside the baseline; WER on every test set and mean OOD (a ``condprune_*``
    system: its condition's ``ood_<c>``, and in-domain test as the mean of ``test.<c>``), and for
    each retrained system the paired bootstrap against ``baseline_ft`` (``each``: by system)."""
    retrained = sorted(s for s in summary if layout.is_retrained(s))
    if not retrained:
        return ("Not run (not part of the default run): `steps/retrain.sh` fine-tunes the pruned "
                "systems and the unpruned control `baseline_ft` alike (see README).\n")
    each = each or {}
    ood = [t for t in test_sets if layout.is_ood_set(t)]
    rows = []
    for s in ["baseline", layout.BASELINE_FT] + [x for r in retrained for x in (r.removesuffix("_retrain"), r)]:
        if s not in summary:
            continue
        m = mean_wer(summary, s, ood)
        cells = [cell(summary[s].get(t)) for t in test_sets]
        after = mean_in_domain_after(summary[s])
        if layout.TEST in test_sets and summary[s].get(layout.TEST) is None and after is not None:
            cells[test_sets.index(layout.TEST)] = f"{after:.2f} (mean of test.<c>)"
        c = each.get(s)
        rows.append([s] + cells + ["–" if m is None else f"{m:.2f}",
                                   "–" if c is None else f"{c.result.difference:+.2f} [{c.result.ci_low:+.2f}, "
                                   f"{c.result.ci_high:+.2f}]"])
    return (table(["system"] + test_sets + ["mean OOD", "vs baseline_ft: B − A (95% CI)"], rows)
            + "\n`vs baseline_ft`: paired bootstrap of the retrained system (B) against the unpruned baseline "
              "fine-tuned with the same steps, data order and rate (A) on the OOD utterances both were scored "
              "on, WER points: below zero, the removal helped beyond the fine-tuning itself.\n")


def removed_neurons(path: Path) -> set[tuple[int, int]]:
    """(layer, neuron) of every neuron a pruned system removed, from its ``removed.tsv``."""
    rows = [line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()[1:] if line]
    return {(int(layer), int(neuron)) for layer, neuron in rows}


def condition_pruning_section(summary: Summary, conditions: list[str], prune_dir: Path) -> str:
    """Removal as unsupervised adaptation: the ``condprune_*`` systems (one model per condition
    ``c``, neurons chosen from ``ood_adapt_<c>``) on each ``ood_<c>`` and on in-domain test after
    pruning for ``c`` (``test.<c>``, mean over conditions), beside the baseline and stage 6's
    hyper+hypo and random removal from its one reference set and the removals chosen from another
    set (``prune_hyper_hypo_from_<set>``, e.g. dev), retrained or not; then how many neurons each
    condition's hyper+hypo set removes and how much it shares with that one reference set's."""
    systems = sorted(s for s in summary if layout.is_condition_pruned(s))
    if not systems:
        return ("Not run (not part of the default run): `per_condition` in the prune config (`./run.sh --study "
                "full`) prunes, for each condition, the hyper+hypo neurons of its own adaptation audio.\n")
    ood = [layout.ood_set(c) for c in conditions]
    base_ood = mean_wer(summary, "baseline", ood)
    one_ref = prune_dir / "prune_hyper_hypo"
    reference = json.loads((one_ref / "prune.json").read_text())["reference_set"] \
        if (one_ref / "prune.json").is_file() else "?"
    control = [layout.BASELINE_FT] if any(layout.is_retrained(s) for s in systems) else []
    elsewhere = sorted(s for s in summary if s.startswith("prune_") and layout.selection_source(s) is not None)
    rows = []
    for s in [s for s in ["baseline", *control, "prune_hyper_hypo", "prune_random", *elsewhere, *systems]
              if s in summary]:
        m = mean_wer(summary, s, ood)
        change = "–" if m is None or base_ood in (None, 0) or s == "baseline" \
            else f"{100 * (m - base_ood) / base_ood:+.1f}%"
        after = [summary[s][t]["wer"] for t in (layout.adapted_test_set(layout.TEST, c) for c in conditions)
                 if t in summary[s]]
        source = ("each ood_adapt_<c>" if layout.is_condition_pruned(s)
                  else (layout.selection_source(s) or ("", reference))[1]) if s.startswith(
            ("prune_", layout.CONDITION_PRUNED)) else "–"
        rows.append([s, source] + [cell(summary[s].get(t)) for t in ood]
                    + ["–" if m is None else f"{m:.2f}", change,
                       f"{np.mean(after):.2f}" if after else cell(summary[s].get(layout.TEST))])
    text = table(["system", "neurons chosen from"] + ood + ["mean OOD", "rel. to baseline", "test (in-domain)"], rows)
    theirs = removed_neurons(one_ref / "removed.tsv") if (one_ref / "removed.tsv").is_file() else None
    notes = []
    for c in conditions:
        path = prune_dir / layout.condition_pruned("hyper_hypo") / layout.adapted_name(c) / "removed.tsv"
        if theirs is not None and path.is_file():
            mine = removed_neurons(path)
            jaccard = len(mine & theirs) / len(mine | theirs) if mine | theirs else 1.0
            notes.append(f"{c}: {len(mine)} (Jaccard {jaccard:.2f} with {reference}'s)")
    return (text + "\nEach `condprune_*` system is one model per condition: its neurons are chosen from that "
            "condition's own adaptation audio (no transcript), by the rule and per-layer counts of stage 6, their "
            "mean output on that audio folded into the next layer; it is scored on that condition's test set and "
            "on in-domain test (the last column: the mean over the conditions' models). The random control removes "
            "random neurons in the same per-layer counts and folds the same condition's means. "
            + (f"Neurons removed by {layout.condition_pruned('hyper_hypo')} per condition: {'; '.join(notes)}.\n"
               if notes else "\n"))


def adaptation_section(summary: Summary, conditions: list[str]) -> str:
    adapt = sorted(s for s in summary if s.startswith("adapt_"))
    ood = [layout.ood_set(c) for c in conditions]
    base_ood = mean_wer(summary, "baseline", ood)
    rows = [["baseline (unadapted)"] + [cell(summary.get("baseline", {}).get(t)) for t in ood]
            + ["–" if base_ood is None else f"{base_ood:.2f}", "–", cell(summary.get("baseline", {}).get("test"))]]
    for s in adapt:
        m = mean_wer(summary, s, ood)
        change = "–" if m is None or base_ood in (None, 0) else f"{100 * (m - base_ood) / base_ood:+.1f}%"
        in_domain = [summary[s][k]["wer"] for k in summary[s] if k.startswith("test")]
        label = s + (" (blind)" if s in BLIND_SYSTEMS else " (upper bound: true transcripts)" if s == "adapt_oracle" else "")
        rows.append([label] + [cell(summary[s].get(t)) for t in ood]
                    + ["–" if m is None else f"{m:.2f}", change,
                       "–" if not in_domain else f"{np.mean(in_domain):.2f}"])
    return table(["system"] + ood + ["mean OOD", "rel. to baseline", "test (in-domain, after adapting)"], rows)


def comparisons_section(comparisons: list[Comparison]) -> str:
    rows = []
    for c in comparisons:
        r = c.result
        rows.append([c.name, c.system_a, c.system_b, f"{r.wer_a:.2f}", f"{r.wer_b:.2f}",
                     f"{r.difference:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]", f"{r.p_b_better:.3f}",
                     str(r.num_utterances)])
    return table(["comparison", "A", "B", "WER A", "WER B", "B − A (95% CI)", "p(B better)", "utterances"], rows)


def selection_note(doc: object) -> str:
    """How the hyper/hypo neurons of a ``criteria.json`` were chosen, and for a percentile
    selection what the on-rate thresholds alone would have found."""
    spec = doc.get("classify") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        return ""
    thresholds = f"on-rate >= {spec['hyper_on_rate']:g} / <= {spec['hypo_on_rate']:g}"
    if spec.get("mode") != "percentile":
        return f" (hyper/hypo: {thresholds})"
    scope = "each layer" if spec.get("scope") == "layer" else "all layers"
    found = doc.get("threshold_counts") or []
    alone = ", ".join(f"{c.get('hyper', 0)}/{c.get('hypo', 0)}" for c in found)
    return (f" (hyper/hypo: the top/bottom {spec['percent']:g}% of {scope} by {spec['percentile_by']}; "
            f"{thresholds} would find {alone} hyper/hypo per layer)")


def criteria_section(saliency_dir: Path) -> str:
    """Per reference set: hyper/hypo counts and each criterion's overlap with hyper+hypo."""
    parts = []
    for ref in sorted(p for p in saliency_dir.iterdir() if (p / "criteria.json").is_file()) if saliency_dir.is_dir() else []:
        doc = json.loads((ref / "criteria.json").read_text())
        rows_in = doc["rows"] if isinstance(doc, dict) and "rows" in doc else doc
        counts = doc.get("counts") if isinstance(doc, dict) else None
        head = f"**{ref.name}**"
        if counts:
            head += ": " + ", ".join(f"layer {i}: {c.get('hyper', 0)} hyper / {c.get('hypo', 0)} hypo"
                                     for i, c in enumerate(counts))
        head += selection_note(doc)
        if counts and not any(c.get("hyper", 0) + c.get("hypo", 0) for c in counts):
            parts.append(f"**{ref.name}**: no hyper or hypo neuron in any layer; nothing to compare.\n")
            continue
        rows = []
        for row in rows_in:
            fmt = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
            rows.append([row["criterion"], str(row.get("selected", "–")), fmt(row.get("share_hyper")),
                         fmt(row.get("share_hypo")), fmt(row.get("share_normal")), fmt(row.get("precision")),
                         fmt(row.get("recall")), fmt(row.get("jaccard"))])
        parts.append(head + "\n\n" + table(["criterion", "selected", "share hyper", "share hypo", "share normal",
                                            "precision", "recall", "Jaccard"], rows))
    return "\n".join(parts) if parts else "No saliency results (stage 5 not run).\n"
