"""``exp/results.json`` (schema in DESIGN.md) and the paired comparisons the paper makes.

``results.json``: ``{"recipe", "seeds", "test_sets", "systems": {system: {test_set: {"wer",
"wer_std", "n"}}}}``; WER in percent, mean and sample standard deviation over the system's seeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from neurosel.recipe import layout
from neurosel.report.bootstrap import BootstrapResult, mean_std, paired_bootstrap
from neurosel.report.collect import SetResult, SystemResults

BLIND_SYSTEMS = ("adapt_all", "adapt_fc", "adapt_conv", "adapt_last")


def summarise(systems: dict[str, SystemResults]) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{system: {test_set: {"wer", "wer_std", "n"}}}`` over seeds."""
    out: dict[str, dict[str, dict[str, float | int]]] = {}
    for name, system in sorted(systems.items()):
        out[name] = {}
        for test_set, runs in sorted(system.runs.items()):
            stats = mean_std([r.wer for r in runs.values()])
            out[name][test_set] = {"wer": round(stats.mean, 4), "wer_std": round(stats.std, 4), "n": stats.n}
    return out


def seeds_of(systems: dict[str, SystemResults]) -> list[int]:
    """Every seed that occurs in a decode dir name."""
    return sorted({s for sys_ in systems.values() for runs in sys_.runs.values() for s in runs if s is not None})


def results_json(recipe: str, systems: dict[str, SystemResults], base_seed: int) -> dict:
    """The ``results.json`` document."""
    summary = summarise(systems)
    test_sets = sorted({t for per_set in summary.values() for t in per_set if layout.is_test_set(t)})
    return {"recipe": recipe, "seeds": seeds_of(systems) or [base_seed], "test_sets": test_sets,
            "systems": summary}


def pooled_counts(system: SystemResults, test_sets: list[str]) -> tuple[list[str], np.ndarray, np.ndarray, int]:
    """Per-utterance error and reference counts of ``system`` over ``test_sets``, summed over its
    seeds; returns (utterance keys, errors, ref words, number of seeds)."""
    keys: list[str] = []
    errors: list[np.ndarray] = []
    refs: list[np.ndarray] = []
    n_seeds = None
    for t in test_sets:
        runs: dict[int | None, SetResult] = system.runs[t]
        n_seeds = len(runs) if n_seeds is None else min(n_seeds, len(runs))
        first = next(iter(runs.values()))
        keys += [f"{t}/{u}" for u in first.utt_ids]
        errors.append(np.sum([r.utt_errors for r in runs.values()], axis=0))
        refs.append(np.sum([r.utt_ref_words for r in runs.values()], axis=0))
    return keys, np.concatenate(errors), np.concatenate(refs), n_seeds or 1


@dataclass
class Comparison:
    """A paired bootstrap of system B against system A over ``test_sets``."""

    name: str
    system_a: str
    system_b: str
    test_sets: list[str]
    result: BootstrapResult
    key: str = ""  # what the claims dashboard (neurosel.report.claims) looks it up by


def compare(name: str, a: SystemResults, b: SystemResults, test_sets: list[str], seed: int = 0,
            key: str = "") -> Comparison:
    """Paired bootstrap of ``b`` vs ``a`` on the utterances of ``test_sets``; systems with different
    numbers of seeds are weighted so that each system's seeds count as one average."""
    keys_a, err_a, ref_a, n_a = pooled_counts(a, test_sets)
    keys_b, err_b, ref_b, n_b = pooled_counts(b, test_sets)
    if keys_a != keys_b:
        raise ValueError(f"{a.name} and {b.name} were scored on different utterances")
    result = paired_bootstrap(err_a * n_b, err_b * n_a, ref_a * n_b, seed=seed)
    return Comparison(name, a.name, b.name, test_sets, result, key)


def ood_sets(system: SystemResults) -> list[str]:
    """The OOD test sets a system was scored on (adapted systems: each condition's own)."""
    return sorted(t for t in system.runs if layout.is_ood_set(t))


def compare_on_ood(name: str, systems: dict[str, SystemResults], a: str, b: str, key: str) -> list[Comparison]:
    """``[compare(b vs a)]`` on the OOD test sets both were scored on, or ``[]`` when either did not
    run or they share none."""
    if a not in systems or b not in systems:
        return []
    sets = sorted(set(ood_sets(systems[a])) & set(ood_sets(systems[b])))
    return [compare(name, systems[a], systems[b], sets, key=key)] if sets else []


def paper_comparisons(systems: dict[str, SystemResults], summary: dict) -> list[Comparison]:
    """(a) hyper+hypo removal vs random removal on every OOD test set, with mean folding and (when
    run) without; (b) selective-then-full vs the best blind adaptation system (lowest mean OOD
    WER) on every OOD test set; (c) selective-then-full vs random-neurons-then-full, the control
    that tells the choice of the hyper/hypo neurons from the two-phase schedule itself. Then the
    claims' own tests: hyper+hypo removal vs the unpruned baseline (claim 2 as the paper states
    it) and forgetting: selective-then-full vs the best blind system, and vs the blind system that
    forgets least, on in-domain test after adapting to each condition (``test.<c>``). Then, when
    retrained, hyper+hypo removal against random removal (with and without mean folding), against
    ``baseline_ft`` and against the untouched baseline, and the per-condition comparisons."""
    out = []
    ood = lambda s: ood_sets(systems[s])  # noqa: E731
    for suffix, how in (("", ""), ("_nofold", ", no mean folding")):
        hh, rnd = f"prune_hyper_hypo{suffix}", f"prune_random{suffix}"
        if hh in systems and rnd in systems:
            sets = sorted(set(ood(hh)) & set(ood(rnd)))
            if sets:
                out.append(compare(f"hyper+hypo removal vs random removal{how}", systems[rnd], systems[hh], sets,
                                   key=f"prune_vs_random{suffix}"))
    blind = [s for s in BLIND_SYSTEMS if s in systems and ood(s)]
    best = None
    if "adapt_selective_full" in systems and blind:
        best = min(blind, key=lambda s: np.mean([summary[s][t]["wer"] for t in ood(s)]))
        sets = sorted(set(ood("adapt_selective_full")) & set(ood(best)))
        if sets:
            out.append(compare(f"selective+full vs best blind ({best})", systems[best],
                               systems["adapt_selective_full"], sets, key="adapt_vs_blind"))
    if "adapt_selective_full" in systems and "adapt_random_full" in systems:
        sets = sorted(set(ood("adapt_selective_full")) & set(ood("adapt_random_full")))
        if sets:
            out.append(compare("selective+full vs random neurons+full", systems["adapt_random_full"],
                               systems["adapt_selective_full"], sets, key="adapt_vs_random"))
    out += compare_on_ood("selective+full, neurons of each condition's own audio vs neurons of dev", systems,
                          layout.selected_from("adapt_selective_full", layout.DEV), "adapt_selective_full",
                          key="adapt_vs_from_dev")
    if "prune_hyper_hypo" in systems and layout.BASELINE in systems:
        sets = sorted(set(ood("prune_hyper_hypo")) & set(ood(layout.BASELINE)))
        if sets:
            out.append(compare("hyper+hypo removal vs baseline", systems[layout.BASELINE],
                               systems["prune_hyper_hypo"], sets, key="prune_vs_baseline"))
    out += forgetting_comparisons(systems, summary, best, blind)
    hh = layout.retrained("prune_hyper_hypo")
    out += compare_on_ood("hyper+hypo removal vs random removal, no mean folding, both retrained", systems,
                          layout.retrained("prune_random_nofold"), layout.retrained("prune_hyper_hypo_nofold"),
                          key="retrain_vs_random_nofold")
    for other, name, key in ((layout.retrained("prune_random"), "hyper+hypo removal vs random removal, both retrained",
                              "retrain_vs_random"),
                             (layout.BASELINE_FT, "hyper+hypo removal+retraining vs baseline fine-tuned alike",
                              "retrain_vs_baseline_ft"),
                             (layout.BASELINE, "hyper+hypo removal+retraining vs the untouched baseline",
                              "retrain_vs_baseline")):
        out += compare_on_ood(name, systems, other, hh, key=key)
    return out + condition_prune_comparisons(systems)


RETRAIN_EACH_KEY = "retrain_each:"  # + system: each retrained system vs baseline_ft (the retraining table's column)


def retrain_comparisons(systems: dict[str, SystemResults]) -> list[Comparison]:
    """Every retrained system (B) against ``baseline_ft`` (A, the unpruned model fine-tuned alike) on
    the OOD test sets both were scored on (a ``condprune_*`` system: each condition's own), keyed
    ``RETRAIN_EACH_KEY + system``: does any removal help beyond the fine-tuning itself."""
    return [c for s in sorted(systems) if layout.is_retrained(s)
            for c in compare_on_ood(f"{s} vs baseline fine-tuned alike", systems, layout.BASELINE_FT, s,
                                    key=RETRAIN_EACH_KEY + s)]


def condition_prune_comparisons(systems: dict[str, SystemResults]) -> list[Comparison]:
    """Removal as unsupervised adaptation: each condition's model of ``condprune_hyper_hypo``
    (hyper+hypo of that condition's own adaptation audio removed) against the unpruned baseline
    and against ``condprune_random`` (random neurons, the same per-layer counts, per condition), and
    against ``prune_hyper_hypo`` (the neurons of stage 6's one reference set, e.g. pooled);
    when retrained, against ``baseline_ft``, ``condprune_random`` retrained alike and the untouched
    baseline (the model one started from); against ``prune_hyper_hypo_from_dev`` (the neurons of
    in-domain dev instead of the condition's own audio), retrained or not; on every
    condition's ``ood_<c>`` utterances pooled."""
    hh, rnd = layout.condition_pruned("hyper_hypo"), layout.condition_pruned("random")
    from_dev = layout.selected_from("prune_hyper_hypo", layout.DEV)
    pairs = ((hh, layout.BASELINE, "hyper+hypo of each condition removed vs baseline", "condprune_vs_baseline"),
             (hh, rnd, "hyper+hypo of each condition removed vs random removed per condition", "condprune_vs_random"),
             (hh, "prune_hyper_hypo", "hyper+hypo of each condition removed vs hyper+hypo of stage 6's one "
              "reference set removed", "condprune_vs_one_reference"),
             (layout.retrained(hh), layout.BASELINE_FT, "hyper+hypo of each condition removed, then retrained, vs "
              "baseline fine-tuned alike", "condprune_retrain_vs_baseline_ft"),
             (layout.retrained(hh), layout.retrained(rnd), "hyper+hypo of each condition removed vs random removed "
              "per condition, both retrained", "condprune_retrain_vs_random"),
             (layout.retrained(hh), layout.BASELINE, "hyper+hypo of each condition removed, then retrained, vs the "
              "untouched baseline", "condprune_retrain_vs_baseline"),
             (hh, from_dev, "hyper+hypo of each condition removed vs hyper+hypo of dev removed",
              "condprune_vs_from_dev"),
             (layout.retrained(hh), layout.retrained(from_dev), "hyper+hypo of each condition removed vs hyper+hypo "
              "of dev removed, both retrained", "condprune_retrain_vs_from_dev"))
    return [c for b, a, name, key in pairs for c in compare_on_ood(name, systems, a, b, key=key)]


def in_domain_after(system: SystemResults) -> list[str]:
    """The ``test.<c>`` sets of an adapted system: in-domain test after adapting to ``c``."""
    return sorted(t for t in system.runs if layout.is_in_domain_after(t))


def forgetting_comparisons(systems: dict[str, SystemResults], summary: dict, best: str | None,
                           blind: list[str]) -> list[Comparison]:
    """Selective+full vs ``best`` (the best blind system on OOD) and vs the blind system with the
    lowest mean in-domain test WER after adapting, on the pooled ``test.<c>`` utterances."""
    sel = "adapt_selective_full"
    if sel not in systems or best is None:
        return []
    forgets = {s: np.mean([summary[s][t]["wer"] for t in in_domain_after(systems[s])])
               for s in blind if in_domain_after(systems[s])}
    out = []
    for other, name, key in ((best, f"forgetting: selective+full vs best blind ({best}), in-domain test",
                              "forget_vs_blind"),
                             (min(forgets, key=forgets.get) if forgets else None,
                              "forgetting: selective+full vs least-forgetting blind ({}), in-domain test",
                              "forget_vs_least_forgetting")):
        if other is None or (key == "forget_vs_least_forgetting" and other == best):
            continue
        sets = sorted(set(in_domain_after(systems[sel])) & set(in_domain_after(systems[other])))
        if sets:
            out.append(compare(name.format(other), systems[other], systems[sel], sets, key=key))
    return out
