"""The claims dashboard at the top of RESULTS.md: one row per (claim, activation, protocol,
selection rule), derived from a run's ``results.json`` alone (never typed).

A row's verdict comes from a paired bootstrap comparison in ``results.json["comparisons"]``
(matched by its ``key``): the claim predicts that system B has the lower WER, so it ``holds`` when
the whole 95% interval of B - A is below zero, is ``refuted`` when the whole interval is above
zero, and is ``not significant`` otherwise. Claim 1 is a set overlap, not a WER difference: it
holds when a weight, gradient or weight-times-activation criterion overlaps the hyper+hypo set (Jaccard) more than
twice as much as random selection does (criteria: ``WEIGHT_CRITERIA``). A row whose comparison the run lacks says ``not run``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

HOLDS, REFUTED, NOT_SIGNIFICANT, NOT_RUN = "holds", "refuted", "not significant", "not run"
NO_RESULTS = "no results.json"

WITHOUT_RETRAINING = "removal without retraining"
WITH_RETRAINING = "removal, then retraining"
SELECTIVE = "selective adaptation"
PER_CONDITION = "removal as unsupervised adaptation (per condition)"
PER_CONDITION_RETRAINED = "removal as unsupervised adaptation, then retraining (per condition)"
SIZE_ON_DEV = WITHOUT_RETRAINING + ", size chosen on dev"
SIZE_ON_HELDOUT = SELECTIVE + ", size chosen on held-out loss"

# Claim 1's "standard pruning criteria": the weight, gradient and weight-times-activation scores
# (Wanda's, FLAP's), not the activation statistics that define hyper/hypo themselves
WEIGHT_CRITERIA = ("magnitude", "outgoing", "taylor1", "taylor2", "wanda", "flap")

CLAIM1_HEADING = "Claim 1: do pruning criteria select hyper and hypo neurons?"
CLAIM2_HEADING = "Claim 2: removing hyper and hypo neurons"
CLAIM3_HEADING = "Claim 3: unsupervised adaptation"
FORGETTING_HEADING = "Forgetting: in-domain test after adapting"
RETRAIN_HEADING = "Claim 2 with retraining: prune, then fine-tune"
CONDITION_PRUNE_HEADING = "Removal as unsupervised adaptation: neurons chosen per condition"
BOOTSTRAP_HEADING = "Paired bootstrap tests (utterances of every OOD test set)"
SIZE_HEADING = "Selection size: a sweep, and the size chosen without test data"  # neurosel.report.size_sweep


@dataclass(frozen=True)
class Expected:
    """A dashboard row every run reports, ``not run`` when its comparison is missing."""

    claim: str
    protocol: str
    rule: str  # "pruning" or "adaptation": which selection rule of results.json applies
    key: str  # Comparison.key in results.json
    what: str  # B against A, in words
    heading: str  # the section holding the table


EXPECTED = (
    Expected("2", WITHOUT_RETRAINING, "pruning", "prune_vs_baseline", "hyper+hypo removed vs baseline",
             CLAIM2_HEADING),
    Expected("2 (control)", WITHOUT_RETRAINING, "pruning", "prune_vs_random",
             "hyper+hypo removed vs random removed", CLAIM2_HEADING),
    Expected("2", WITH_RETRAINING, "pruning", "retrain_vs_baseline_ft",
             "hyper+hypo removed+retrained vs baseline fine-tuned alike", RETRAIN_HEADING),
    Expected("2 (control)", WITH_RETRAINING, "pruning", "retrain_vs_random",
             "hyper+hypo removed+retrained vs random removed+retrained", RETRAIN_HEADING),
    Expected("3", SELECTIVE, "adaptation", "adapt_vs_blind", "selective+full vs best blind", CLAIM3_HEADING),
    Expected("3 (control)", SELECTIVE, "adaptation", "adapt_vs_random", "selective+full vs random neurons+full",
             CLAIM3_HEADING),
    Expected("forgetting", SELECTIVE, "adaptation", "forget_vs_blind",
             "selective+full vs best blind, in-domain test", FORGETTING_HEADING),
)
OPTIONAL = (  # reported when the run has them, never as "not run"
    Expected("2 (control)", WITHOUT_RETRAINING + ", no mean folding", "pruning", "prune_vs_random_nofold",
             "hyper+hypo removed vs random removed", CLAIM2_HEADING),
    Expected("forgetting", SELECTIVE, "adaptation", "forget_vs_least_forgetting",
             "selective+full vs least-forgetting blind, in-domain test", FORGETTING_HEADING),
    Expected("2", PER_CONDITION, "condition_pruning", "condprune_vs_baseline",
             "hyper+hypo of each condition removed vs baseline", CONDITION_PRUNE_HEADING),
    Expected("2 (control)", PER_CONDITION, "condition_pruning", "condprune_vs_random",
             "hyper+hypo of each condition removed vs random removed per condition", CONDITION_PRUNE_HEADING),
    Expected("2", PER_CONDITION_RETRAINED, "condition_pruning", "condprune_retrain_vs_baseline_ft",
             "hyper+hypo of each condition removed+retrained vs baseline fine-tuned alike", CONDITION_PRUNE_HEADING),
    Expected("2 (control)", PER_CONDITION_RETRAINED, "condition_pruning", "condprune_retrain_vs_random",
             "hyper+hypo of each condition removed+retrained vs random removed+retrained per condition",
             CONDITION_PRUNE_HEADING),
    Expected("2", PER_CONDITION_RETRAINED + ", vs the untouched baseline", "condition_pruning",
             "condprune_retrain_vs_baseline", "hyper+hypo of each condition removed+retrained vs baseline",
             CONDITION_PRUNE_HEADING),
    Expected("2 (source)", PER_CONDITION + ", vs neurons from dev", "condition_pruning", "condprune_vs_from_dev",
             "hyper+hypo of each condition removed vs hyper+hypo of dev removed", CONDITION_PRUNE_HEADING),
    Expected("2 (source)", PER_CONDITION_RETRAINED + ", vs neurons from dev", "condition_pruning",
             "condprune_retrain_vs_from_dev", "hyper+hypo of each condition vs of dev, removed+retrained",
             CONDITION_PRUNE_HEADING),
    Expected("3 (source)", SELECTIVE + ", vs neurons from dev", "adaptation", "adapt_vs_from_dev",
             "selective+full, each condition's neurons vs dev's", CLAIM3_HEADING),
    Expected("2 (control)", WITH_RETRAINING + ", no mean folding", "pruning", "retrain_vs_random_nofold",
             "hyper+hypo removed+retrained vs random removed+retrained", RETRAIN_HEADING),
    Expected("2", WITH_RETRAINING + ", vs the untouched baseline", "pruning", "retrain_vs_baseline",
             "hyper+hypo removed+retrained vs baseline", RETRAIN_HEADING),
    Expected("2", SIZE_ON_DEV, "sweep_pruning", "sweep_prune_vs_baseline", "hyper+hypo removed vs baseline",
             SIZE_HEADING),
    Expected("2 (control)", SIZE_ON_DEV, "sweep_pruning", "sweep_prune_vs_random",
             "hyper+hypo removed vs random removed", SIZE_HEADING),
    Expected("3", SIZE_ON_HELDOUT, "sweep_adaptation", "sweep_adapt_vs_all", "selective+full vs adapt_all",
             SIZE_HEADING),
    Expected("3 (control)", SIZE_ON_HELDOUT, "sweep_adaptation", "sweep_adapt_vs_random",
             "selective+full vs random neurons+full", SIZE_HEADING),
)


@dataclass
class ClaimRow:
    """One line of the dashboard."""

    claim: str
    activation: str
    protocol: str
    selection: str
    comparison: str
    verdict: str
    effect: float | None = None  # B - A in WER points (claim 1: best criterion's Jaccard)
    reference: float | None = None  # claim 1: random selection's Jaccard
    ci_low: float | None = None
    ci_high: float | None = None
    seeds: str = "–"
    anchor: str = ""


def anchor(heading: str) -> str:
    """The GitHub-style anchor of a markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return "#" + slug.replace(" ", "-")


def verdict_of(ci_low: float, ci_high: float) -> str:
    """``holds`` (B better, interval below 0), ``refuted`` (interval above 0), else ``not significant``."""
    if ci_high < 0:
        return HOLDS
    if ci_low > 0:
        return REFUTED
    return NOT_SIGNIFICANT


def seeds_text(doc: dict, systems: list[str], sets: list[str]) -> str:
    """Seeds per system in the comparison, e.g. ``3 vs 1``."""
    out = []
    for s in systems:
        entries = [doc.get("systems", {}).get(s, {}).get(t) for t in sets]
        counts = {e["n"] for e in entries if e}
        out.append("–" if not counts else str(min(counts)))
    return " vs ".join(out)


def claim1_row(doc: dict, activation: str) -> ClaimRow:
    """Claim 1 from ``results.json["claim1"]``: ``{"reference", "jaccard": {criterion: J}}``."""
    info = doc.get("claim1") or {}
    jac = info.get("jaccard") or {}
    weight = {c: j for c, j in jac.items() if c in WEIGHT_CRITERIA}
    selection = doc.get("selection", {}).get("claim1", "–")
    row = ClaimRow("1", activation, f"criteria vs hyper+hypo on {info.get('reference', '?')}", selection,
                   "best weight/gradient criterion's Jaccard vs random's", NOT_RUN,
                   anchor=anchor(CLAIM1_HEADING))
    if not weight or "random" not in jac:
        return row
    best = max(weight, key=weight.get)
    row.verdict = HOLDS if weight[best] > 2 * jac["random"] else REFUTED
    row.effect, row.reference = weight[best], jac["random"]
    row.comparison = f"{best} Jaccard vs random's"
    row.seeds = "1"
    return row


def comparison_row(doc: dict, activation: str, spec: Expected) -> ClaimRow | None:
    comps = {c.get("key"): c for c in doc.get("comparisons", []) if c.get("key")}
    selection = doc.get("selection", {}).get(spec.rule, "–")
    c = comps.get(spec.key)
    if c is None:
        return None
    row = ClaimRow(spec.claim, activation, spec.protocol, selection, f"{c['b']} vs {c['a']}",
                   verdict_of(c["ci_low"], c["ci_high"]), effect=c["difference"], ci_low=c["ci_low"],
                   ci_high=c["ci_high"], seeds=seeds_text(doc, [c["b"], c["a"]], c["test_sets"]),
                   anchor=anchor(spec.heading))
    return row


def claim_rows(doc: dict | None, activation: str) -> list[ClaimRow]:
    """Every dashboard row of one run; ``doc`` None: the run kept no ``results.json``."""
    if doc is None:
        return [ClaimRow("all", activation, "–", "–", "this run's report predates results.json; rerun its stage 8",
                         NO_RESULTS)]
    rows = [claim1_row(doc, activation)]
    for spec in EXPECTED:
        row = comparison_row(doc, activation, spec)
        rows.append(row or ClaimRow(spec.claim, activation, spec.protocol,
                                    doc.get("selection", {}).get(spec.rule, "–"), spec.what, NOT_RUN,
                                    anchor=anchor(spec.heading)))
    for spec in OPTIONAL:
        row = comparison_row(doc, activation, spec)
        if row is not None:
            rows.append(row)
    order = {claim: i for i, claim in enumerate(["1", "2", "2 (control)", "2 (source)", "3", "3 (control)",
                                                  "3 (source)", "forgetting"])}
    return sorted(rows, key=lambda r: (order.get(r.claim, 99), r.protocol))


def rows_json(rows: list[ClaimRow]) -> list[dict]:
    return [asdict(r) for r in rows]


def dashboard_section(rows: list[ClaimRow]) -> str:
    """The markdown table; effects are B - A in WER points with their 95% paired bootstrap
    interval (claim 1: Jaccard index of the criterion and of random selection)."""
    lines = ["| claim | activation | protocol | selection rule | comparison (B vs A) | verdict | effect (95% CI) "
             "| seeds | table |", "|" + "|".join(" --- " for _ in range(9)) + "|"]
    for r in rows:
        if r.effect is None:
            effect = "–"
        elif r.claim == "1":
            effect = f"J {r.effect:.2f} vs {r.reference:.2f} (no interval)"
        else:
            effect = f"{r.effect:+.2f} [{r.ci_low:+.2f}, {r.ci_high:+.2f}]"
        link = f"[table]({r.anchor})" if r.anchor and r.verdict not in (NOT_RUN, NO_RESULTS) else "–"
        lines.append("| " + " | ".join([r.claim, r.activation, r.protocol, r.selection, r.comparison,
                                          f"**{r.verdict}**", effect, r.seeds, link]) + " |")
    return "\n".join(lines) + "\n"


DASHBOARD_NOTE = (
    "Verdicts: the claim predicts that B has the lower WER; **holds** when the whole 95% paired bootstrap "
    "interval of B − A (WER points, utterances of the sets the comparison names) lies below zero, **refuted** "
    "when it lies above zero, **not significant** when it contains zero. Claim 1 (a set overlap, one model): "
    "holds when a weight, gradient or weight-times-activation criterion (magnitude, outgoing, taylor1, taylor2, "
    "wanda, flap) overlaps the hyper+hypo set more than twice as much as random selection. Seeds: B's vs A's. **not run**: this run has no such systems. Every entry is read "
    "from results.json.\n")
