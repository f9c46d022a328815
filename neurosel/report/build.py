"""Stage 8: ``exp/results.json``, ``exp/RESULTS.md`` and ``exp/plots/*.png`` from a run's decode
dirs, saliency and pruning outputs. Every number comes from a file the run wrote."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from neurosel.decode.baseline_check import weak_baseline_warning
from neurosel.io import atomic_path, write_json, write_text
from neurosel.recipe import layout
from neurosel.config import load_yaml
from neurosel.report.claims import (BOOTSTRAP_HEADING, CLAIM1_HEADING, CLAIM2_HEADING, CLAIM3_HEADING,
                                    CONDITION_PRUNE_HEADING, FORGETTING_HEADING, RETRAIN_HEADING,
                                    WEIGHT_CRITERIA, claim_rows, rows_json)
from neurosel.report.collect import collect, read_wer
from neurosel.report.markdown import (adaptation_section, cell, comparisons_section, condition_pruning_section,
                                      criteria_section, mean_wer, pruning_section, retrain_section,
                                      table)
from neurosel.report.plots import plot_adaptation_losses, plot_pruning_curve, plot_wer_bars
from neurosel.report.rejoin import FINDINGS, dashboard_text, other_rows, read_results
from neurosel.report.results import RETRAIN_EACH_KEY, Comparison, paper_comparisons, results_json, retrain_comparisons
from neurosel.report.selection_section import HEADING as SELECTION_HEADING, KEY as SELECTION_KEY
from neurosel.report.selection_section import selection_comparisons, selection_section
from neurosel.report.size_sweep import HEADING as SIZE_HEADING, KEY as SIZE_KEY
from neurosel.report.size_sweep import plot_size_sweep, read_sweep, size_comparisons, size_sweep_section
from neurosel.report.size_sweep import selection_rules as size_rules
from neurosel.report.shift_section import shift_section


# the tracked reports stage 8 itself writes (a recipe's RESULTS.md, results.json, plots/ and
# results_<activation>/): a change there does not make the code that produced a run dirty
REPORT_PATHS = ("egs/*/RESULTS*.md", "egs/*/results.json", "egs/*/plots/**", "egs/*/results_*/**")


def git_revision(repo: Path) -> str:
    """``<sha>`` of HEAD, with ``-dirty`` when the tree has uncommitted changes other than the
    tracked reports of ``REPORT_PATHS`` (the full study's stage 8 writes the sigmoid's report
    before the main one reads the revision)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                *(f":(exclude,glob){p}" for p in REPORT_PATHS)], cwd=repo,
                               capture_output=True, text=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment() -> str:
    import torch

    return (f"Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.machine()} with {os.cpu_count()} cores")


def claim1_verdict(saliency_dir: Path, reference: str = "dev") -> list[str]:
    """Claim 1 in words, from ``<saliency_dir>/<reference>/criteria.json``: how much the weight,
    gradient and weight-times-activation criteria (``WEIGHT_CRITERIA``) overlap the hyper+hypo set, against random, and which class the
    activation-based ones pick."""
    path = saliency_dir / reference / "criteria.json"
    if not path.is_file():
        return []
    doc = json.loads(path.read_text())
    rows = {r["criterion"]: r for r in doc.get("rows", []) if r.get("jaccard") is not None}
    weight = [(c, rows[c]["jaccard"]) for c in WEIGHT_CRITERIA if c in rows]
    if not weight or "random" not in rows:
        return []
    low, high = min(j for _, j in weight), max(j for _, j in weight)
    found = "do not find them" if high <= 2 * rows["random"]["jaccard"] else "find part of them"
    text = (f"Claim 1 (pruning criteria select hyper/hypo neurons), on {reference}: the weight, gradient and "
            f"weight-times-activation criteria ({', '.join(c for c, _ in weight)}) overlap the hyper+hypo set with "
            f"Jaccard {low:.2f}-{high:.2f}, random {rows['random']['jaccard']:.2f}: they {found}.")
    activation = [c for c in ("apoz", "mean_act", "entropy") if c in rows]
    if activation:
        text += " Activation-based criteria pick " + ", ".join(
            f"{c} {rows[c]['share_hypo']:.2f} hypo / {rows[c]['share_hyper']:.2f} hyper" for c in activation) + \
            " of their selection (a low score prunes first, so they reach the barely active end)."
    return [text]


def verdicts(summary: dict, comparisons: list[Comparison], ood: list[str], prune_info: dict,
             saliency_dir: Path | None = None) -> list[str]:
    """Plain statements of whether the paper's claims hold here, from the numbers."""
    out = claim1_verdict(saliency_dir) if saliency_dir is not None else []
    base = mean_wer(summary, "baseline", ood)
    hh = mean_wer(summary, "prune_hyper_hypo", ood)
    removed = prune_info.get("prune_hyper_hypo", {}).get("removed")
    if removed == 0:
        out.append("Claim 2 cannot be tested on this run: the reference set of stage 6 "
                   f"({prune_info['prune_hyper_hypo'].get('reference_set', '?')}) has no hyper or hypo neuron, "
                   "so prune_hyper_hypo is the unpruned model.")
    elif base is not None and hh is not None:
        holds = "holds" if hh < base else "does not hold"
        out.append(f"Claim 2 (removing hyper+hypo neurons improves OOD WER) {holds} here: mean OOD WER "
                   f"{hh:.2f} after removal vs {base:.2f} for the baseline.")
        pruned = {s: m for s in summary if s.startswith("prune_") and not layout.is_retrained(s)
                  and (m := mean_wer(summary, s, ood)) is not None}
        if pruned:
            best = min(pruned, key=pruned.get)
            out.append(f"Best pruned system on mean OOD WER: {best} ({pruned[best]:.2f} vs {base:.2f} for the "
                       f"baseline; in-domain test {cell(summary[best].get('test'))} vs "
                       f"{cell(summary['baseline'].get('test'))}).")
    for c in comparisons:
        r = c.result
        better = r.difference < 0
        sure = r.ci_high < 0 or r.ci_low > 0
        verb = ("beats" if better else "is worse than") if sure else "does not differ significantly from"
        out.append(f"{c.name}: {c.system_b} {verb} {c.system_a} "
                   f"({r.wer_b:.2f} vs {r.wer_a:.2f}, difference {r.difference:+.2f}, 95% CI "
                   f"[{r.ci_low:+.2f}, {r.ci_high:+.2f}], p(B better) {r.p_b_better:.3f}; "
                   f"{'significant' if sure else 'not significant'} at 95%).")
    if not out:
        out.append("No pruned or adapted system in this run yet (stages 6 and 7 not run): nothing to "
                   "say about the paper's claims.")
    return out


def retrain_finding(each: list[Comparison]) -> list[str]:
    """One statement over every retrained system against ``baseline_ft``: which removals help beyond
    the fine-tuning itself (95% interval below zero), which hurt, how many do not differ."""
    if not each:
        return []
    better = [c for c in each if c.result.ci_high < 0]
    worse = [c for c in each if c.result.ci_low > 0]
    name = lambda cs: ", ".join(f"{c.system_b} ({c.result.difference:+.2f})" for c in cs) or "none"  # noqa: E731
    return [f"Every retrained system against baseline_ft (the unpruned model fine-tuned alike), {len(each)} "
            f"systems: beats it {name(better)}; worse {name(worse)}; "
            f"{len(each) - len(better) - len(worse)} not significantly different (table: retraining section)."]


def activation_of(exp: Path) -> str:
    """The baseline model's FC activation, from the config stage 3 saved beside it."""
    path = layout.baseline_dir(exp) / "config.yaml"
    if not path.is_file():
        return "?"
    doc = load_yaml(path)
    return str((doc.get("model") or {}).get("fc_activation", "?")) if isinstance(doc, dict) else "?"


def rule_text(saliency_dir: Path, reference: str) -> str:
    """How the hyper/hypo neurons of ``reference``'s statistics were chosen, in a few words."""
    path = saliency_dir / reference / "criteria.json"
    doc = json.loads(path.read_text()) if path.is_file() else {}
    spec = doc.get("classify") if isinstance(doc, dict) else None
    if not isinstance(spec, dict):
        return f"? ({reference})"
    if spec.get("mode") == "percentile":
        scope = "layer" if spec.get("scope") == "layer" else "network"
        rule = f"{spec['percent']:g}%/{scope} by {spec['percentile_by'].replace('_', '-')}"
    else:
        rule = f"on-rate >= {spec['hyper_on_rate']:g} / <= {spec['hypo_on_rate']:g}"
    return f"{rule}, {reference}"


def selection_rules(exp: Path, prune_info: dict) -> dict[str, str]:
    """The selection rule behind each protocol: claim 1 on dev, pruning on stage 6's reference
    set (the condprune_* systems on each condition's own), selective adaptation on each condition's
    (or the configured set's) statistics."""
    sal = layout.saliency_dir(exp)
    out = {"claim1": rule_text(sal, "dev")}
    ref = prune_info.get("prune_hyper_hypo", {}).get("reference_set")
    if ref:
        out["pruning"] = rule_text(sal, ref)
    per_condition = sorted(layout.prune_dir(exp).glob(f"{layout.condition_pruned('hyper_hypo')}/*/prune.json"))
    if per_condition:
        some = json.loads(per_condition[0].read_text())["reference_set"]
        out["condition_pruning"] = rule_text(sal, some).replace(some, "each condition's ood_adapt_<c>")
    refs = set()
    for f in sorted(layout.adapt_dir(exp).glob("adapt_selective_full.*/*/adapt.json")):
        refs.add(json.loads(f.read_text()).get("saliency_reference"))
    refs.discard(None)
    if len(refs) == 1:
        out["adaptation"] = rule_text(sal, refs.pop())
    elif refs:
        some = sorted(refs)[0]
        text = rule_text(sal, some).replace(some, "each condition's ood_adapt_<c>") \
            if all(layout.is_adapt_set(r) for r in refs) else ", ".join(sorted(refs))
        out["adaptation"] = text
    return out


def claim1_overlap(saliency_dir: Path, reference: str = "dev") -> dict | None:
    """``{"reference", "jaccard": {criterion: J}}`` from ``<reference>/criteria.json``."""
    path = saliency_dir / reference / "criteria.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return {"reference": reference, "jaccard": {r["criterion"]: r["jaccard"] for r in doc.get("rows", [])
                                                if r.get("jaccard") is not None}}


def forgetting_section(forgetting: list[Comparison]) -> str:
    """What adapting costs on in-domain speech: the paired tests on ``test.<c>`` (in-domain test
    after adapting to condition ``c``, every condition's utterances pooled); each system's mean is
    the last column of the claim 3 table."""
    if not forgetting:
        return "No selective+full and blind adaptation systems scored on in-domain test after adapting.\n"
    return ("In-domain test WER after adapting is the last column of the claim 3 table. Paired bootstrap of "
            "selective+full against the best blind system (the one claim 3 compares with) and against the blind "
            "system with the lowest in-domain WER after adapting, on in-domain test decoded by each condition's "
            "adapted model (all conditions' utterances pooled):\n\n" + comparisons_section(forgetting))


def build_report(workdir: str | Path, recipe: str, seed: int, command: str, repo: str | Path,
                 out_copy: str | Path | None = None,
                 others: dict[str, Path] | None = None) -> tuple[dict, list[str]]:
    """Write ``<workdir>/exp/{results.json,RESULTS.md,plots/}``; with ``out_copy`` (the recipe's
    tracked ``RESULTS.md`` for the default run) also a copy whose plots and results.json sit beside
    it. ``others``: ``{activation: results.json}`` of runs with another FC activation, whose rows
    join the claims dashboard. Returns the ``results.json`` content and the findings of RESULTS.md's
    "What the data say", one per line."""
    exp = Path(workdir) / "exp"
    systems = collect(layout.decode_root(exp))
    doc = results_json(recipe, systems, seed)
    summary = doc["systems"]
    test_sets = doc["test_sets"]
    ood = [t for t in test_sets if layout.is_ood_set(t)]
    conditions = [layout.condition_of(t) for t in ood]
    prune_info = {}
    for f in sorted(layout.prune_dir(exp).glob("*/prune.json")):
        prune_info[layout.parse_system_id(f.parent.name)[0]] = json.loads(f.read_text())
    selection = selection_comparisons(systems)
    sweep = read_sweep(summary, layout.adapt_dir(exp))
    sizes = size_comparisons(systems, sweep)
    comparisons = paper_comparisons(systems, summary) + selection + sizes + retrain_comparisons(systems)
    doc["comparisons"] = [{"name": c.name, "key": c.key, "a": c.system_a, "b": c.system_b, "test_sets": c.test_sets,
                           **{k: float(v) for k, v in vars(c.result).items()}} for c in comparisons]
    doc["activation"] = activation_of(exp)
    doc["selection"] = selection_rules(exp, prune_info) | size_rules(sweep)
    doc["claim1"] = claim1_overlap(layout.saliency_dir(exp))
    rows = claim_rows(doc, doc["activation"])
    report_dir = Path(out_copy).parent if out_copy is not None else exp  # where the other runs' links start
    for name, path in (others or {}).items():
        rows += other_rows(read_results(Path(path)), name, Path(path), report_dir)
    doc["claims"] = rows_json(rows)
    write_json(exp / "results.json", doc)

    plots = exp / "plots"
    figures = []
    prune_systems = ["baseline"] + sorted(s for s in summary if s.startswith("prune_") and "_nofold" not in s
                                      and not layout.is_retrained(s))
    if plot_wer_bars(plots / "pruning_wer.png", summary, prune_systems, test_sets, "Pruned systems"):
        figures.append(("WER of the pruned systems", "pruning_wer.png"))
    adapt_systems = ["baseline"] + sorted(s for s in summary if s.startswith("adapt_") and not layout.is_pooled(s))
    if plot_wer_bars(plots / "adaptation_wer.png", summary, adapt_systems, ood, "Adapted systems, per condition"):
        figures.append(("WER per adaptation system and condition", "adaptation_wer.png"))
    if plot_pruning_curve(plots / "pruning_curve.png", summary, ood):
        figures.append(("Mean OOD WER against the share of FC neurons removed", "pruning_curve.png"))
    if plot_adaptation_losses(plots / "adaptation_losses.png", layout.adapt_dir(exp)):
        figures.append(("Pseudo-label loss during adaptation", "adaptation_losses.png"))
    if plot_size_sweep(plots / "size_sweep.png", summary, sweep, ood):
        figures.append(("WER against the selection size (pruning and selective adaptation)", "size_sweep.png"))


    forgetting = [c for c in comparisons if c.key.startswith("forget_")]
    on_ood = [c for c in comparisons if not c.key.startswith(("forget_", SELECTION_KEY, SIZE_KEY, RETRAIN_EACH_KEY))]
    retrain_each = {c.system_b: c for c in comparisons if c.key.startswith(RETRAIN_EACH_KEY)}
    shift_md, shift_figures = shift_section(layout.shift_dir(exp), plots)
    figures += shift_figures
    findings = verdicts(summary, [c for c in comparisons if not c.key.startswith(RETRAIN_EACH_KEY)], ood, prune_info,
                        layout.saliency_dir(exp)) + retrain_finding(list(retrain_each.values()))
    pseudo = []
    for c in conditions:
        wer_file = layout.decode_dir(exp, layout.BASELINE) / layout.adapt_set(c) / "wer"
        if wer_file.is_file():
            pseudo.append([c, f"{read_wer(wer_file)[0]:.2f}"])

    weak = weak_baseline_warning(layout.decode_dir(exp, layout.BASELINE), missing_ok=True)
    md = [f"# Results: {recipe}\n", *([f"> **{weak}**\n"] if weak else []),
          f"Generated by stage 8 of `{command}` on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"git revision `{git_revision(Path(repo))}`, {environment()}. Seeds: {doc['seeds']}. "
          "Every number below is read from this run's files; WER in percent, mean ± std (number of seeds) "
          "where a system ran with several seeds.\n",
          dashboard_text(rows),
          FINDINGS, "\n".join(f"- {v}" for v in findings) + "\n",
          "## Baseline\n",
          table(["set", "WER"], [[t, cell(summary.get("baseline", {}).get(t))] for t in ["dev"] + test_sets]),
          f"## {CLAIM1_HEADING}\n",
          "For a budget equal to the number of hyper+hypo neurons of each layer, the share of each criterion's "
          "selection that is hyper, hypo or normal, and its precision, recall and Jaccard index against the "
          "hyper+hypo set, per reference set.\n",
          criteria_section(layout.saliency_dir(exp)),
          f"## {CLAIM2_HEADING}\n",
          pruning_section(summary, test_sets, prune_info),
          f"### {CONDITION_PRUNE_HEADING}\n",
          condition_pruning_section(summary, conditions, layout.prune_dir(exp)),
          f"## {RETRAIN_HEADING}\n", retrain_section(summary, test_sets, retrain_each),
          f"## {CLAIM3_HEADING}\n",
          "Pseudo-label WER of the baseline on each adaptation set (for this report only; no transcript of an "
          "adaptation set is used for training" + (", except by the oracle upper bound" if "adapt_oracle" in summary
                                                   else "") + "):\n",
          table(["condition", "pseudo-label WER"], pseudo) if pseudo else "No adaptation sets decoded.\n",
          adaptation_section(summary, conditions),
          f"## {SELECTION_HEADING}\n", selection_section(summary, selection, conditions, layout.adapt_dir(exp)),
          f"## {SIZE_HEADING}\n",
          size_sweep_section(summary, sweep, sizes, ood, layout.prune_dir(exp)),
          f"## {FORGETTING_HEADING}\n", forgetting_section(forgetting),
          f"## {BOOTSTRAP_HEADING}\n",
          comparisons_section(on_ood) if on_ood else "Not enough systems for the comparisons.\n",
          "## WER predicted without transcripts (shift command)\n", shift_md,
          "## Plots\n", "\n".join(f"- [{title}](plots/{name})" for title, name in figures) + "\n"]
    text = "\n".join(md)
    write_text(exp / "RESULTS.md", text)
    if out_copy is not None:
        out_copy = Path(out_copy)
        for _, name in figures:
            target = out_copy.parent / "plots" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes((plots / name).read_bytes())
        write_json(out_copy.parent / "results.json", doc)
        write_text(out_copy, text)
    return doc, findings
