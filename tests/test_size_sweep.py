"""The selection-size sweep's report (issue 16 part 3; neurosel.report.size_sweep) on hand-made
decode dirs and adaptation records whose answers are known: the pruning size is the one with the
lowest dev WER (never a test set), the adaptation size the one with the lowest held-out
pseudo-label loss, and the dashboard's rows at those sizes; and the neuron-share variants of
stage 7 select the share they name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import AdaptConfig, base_system, known_system, neuron_share
from neurosel.recipe.adapt_units import load_neurons
from neurosel.report.build import build_report
from neurosel.report.claims import HOLDS, NOT_SIGNIFICANT, SIZE_ON_DEV, SIZE_ON_HELDOUT
from test_condition_prune import write_decode

ROOT = Path(__file__).resolve().parents[1]
CONDITIONS = ("a", "b")
N = 40


def write_adapt(adapt: Path, system: str, seed: int, condition: str, heldout: float) -> None:
    folder = adapt / f"{system}.s{seed}" / layout.adapted_name(condition)
    folder.mkdir(parents=True)
    (folder / "adapt.json").write_text(json.dumps({"heldout_loss_after": heldout, "labels": {}}))


def hand_made_run(root: Path) -> None:
    """Baseline 3 errors per 10 words on OOD, 2 on dev. Pruning sweep at 1, 2, 10%: dev errors
    2, 3, 6 (1% lowest) while OOD errors 5, 4, 9 (2% would win on test: must not be chosen);
    random at 1%: OOD 7. Adaptation: adapt_selective_full (stage 5's classes) held-out 1.9,
    _n2 1.5 (chosen), _n20 1.7; OOD errors 2, 2, 1 (n20 best on test: must not be chosen);
    adapt_all 3, adapt_random_full_n2 2."""
    decode, adapt = root / "exp" / "decode", root / "exp" / "adapt"
    for folder in ("sweep_hyper_hypo_1", "sweep_random_1.s1"):
        (root / "exp" / "prune" / folder).mkdir(parents=True)
        (root / "exp" / "prune" / folder / "prune.json").write_text(json.dumps({"removed": 3}))
    for t, e in ((layout.DEV, 2), (layout.TEST, 1), *((layout.ood_set(c), 3) for c in CONDITIONS)):
        write_decode(decode / "baseline" / t, [e] * N)
    for tag, dev, ood in (("1", 2, 5), ("2", 3, 4), ("10", 6, 9)):
        for system, ood_errors in ((f"sweep_hyper_hypo_{tag}", ood), (f"sweep_random_{tag}.s1", 7 if tag == "1" else ood)):
            write_decode(decode / system / layout.DEV, [dev] * N)
            write_decode(decode / system / layout.TEST, [1] * N)
            for c in CONDITIONS:
                write_decode(decode / system / layout.ood_set(c), [ood_errors] * N)
    for system, heldout, ood in (("adapt_selective_full", 1.9, 2), ("adapt_selective_full_n2", 1.5, 2),
                                 ("adapt_selective_full_n20", 1.7, 1), ("adapt_all", 2.0, 3),
                                 ("adapt_random_full_n2", 1.6, [2, 3])):
        for seed in (42, 43):
            for c in CONDITIONS:
                errors = ood if isinstance(ood, int) else ood[seed - 42]
                write_decode(decode / f"{system}.s{seed}" / layout.adapted_name(c) / layout.ood_set(c), [errors] * N)
                write_decode(decode / f"{system}.s{seed}" / layout.adapted_name(c) / layout.TEST, [1] * N)
                write_adapt(adapt, system, seed, c, heldout + 0.01 * (seed - 42))


def test_sizes_are_chosen_without_test_data(tmp_path):
    hand_made_run(tmp_path)
    doc, _ = build_report(tmp_path, "hand", 0, "test", ROOT)
    comps = {c["key"]: c for c in doc["comparisons"]}
    # pruning: 1% (lowest dev WER), although 2% has the lower OOD WER
    assert comps["sweep_prune_vs_baseline"]["b"] == "sweep_hyper_hypo_1"
    assert comps["sweep_prune_vs_baseline"]["difference"] == pytest.approx(50.0 - 30.0)
    assert comps["sweep_prune_vs_random"]["a"] == "sweep_random_1"
    assert comps["sweep_prune_vs_random"]["difference"] == pytest.approx(50.0 - 70.0)
    assert doc["selection"]["sweep_pruning"].startswith("1%/class/layer")
    # adaptation: _n2 (lowest held-out loss), although _n20 has the lower OOD WER
    assert comps["sweep_adapt_vs_all"]["b"] == "adapt_selective_full_n2"
    assert comps["sweep_adapt_vs_all"]["difference"] == pytest.approx(20.0 - 30.0)
    assert comps["sweep_adapt_vs_random"]["a"] == "adapt_random_full_n2"
    assert comps["sweep_adapt_vs_random"]["difference"] == pytest.approx(20.0 - 25.0)
    rows = {(r["claim"], r["protocol"]): r for r in doc["claims"]}
    assert rows[("2", SIZE_ON_DEV)]["verdict"] == "refuted"
    assert rows[("2 (control)", SIZE_ON_DEV)]["verdict"] == HOLDS
    assert rows[("3", SIZE_ON_HELDOUT)]["verdict"] == HOLDS
    assert rows[("3 (control)", SIZE_ON_HELDOUT)]["verdict"] in (HOLDS, NOT_SIGNIFICANT)
    text = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert "## Selection size: a sweep, and the size chosen without test data" in text
    assert "| sweep_hyper_hypo_1 | 1% | 3 | 20.00 | 10.00 | 50.00 | **chosen** |" in text
    assert "| sweep_random_1 | 1% | 3 | 20.00 | 10.00 | 70.00 |  |" in text  # removed: from its seed's prune.json
    assert "| adapt_selective_full_n2 | 2% | 1.5050 | 20.00 | 10.00 | **chosen** |" in text
    assert "| adapt_selective_full | stage 5's classes | 1.9050 |" in text
    assert (tmp_path / "exp" / "plots" / "size_sweep.png").stat().st_size > 0
    # the sweep's comparisons stay out of the main bootstrap list (they have their own section)
    main = text.split("## Paired bootstrap tests")[1].split("##")[0]
    assert "chosen on dev" not in main


def test_a_run_without_a_sweep_says_how_to_run_it(tmp_path):
    decode = tmp_path / "exp" / "decode"
    for t in (layout.TEST, layout.ood_set("a")):
        write_decode(decode / "baseline" / t, [3] * N)
    doc, _ = build_report(tmp_path, "hand", 0, "test", ROOT)
    assert not any(c["key"].startswith("sweep_") for c in doc["comparisons"])
    assert "Not run: stage 6's `sweep_percents`" in (tmp_path / "exp" / "RESULTS.md").read_text()


def test_neuron_share_variants_select_the_share_they_name(tmp_path):
    assert neuron_share("adapt_selective_full_n2") == ("adapt_selective_full", 2.0)
    assert base_system("adapt_random_full_n20") == "adapt_random_full"
    assert neuron_share("adapt_all_n2") is None and not known_system("adapt_all_n2")
    cfg = AdaptConfig(systems=["adapt_selective_full_n10"], pooled_systems=[], lr_search="fixed",
                      rates={"adapt_selective_full": [3e-3, 1e-4]})
    assert cfg.rates_of("adapt_selective_full_n10") == [3e-3, 1e-4]
    with pytest.raises(ValueError, match="neuron-share and neuron-source variants"):
        AdaptConfig(systems=["adapt_lhuc_n2"])
    # a 2-layer table of 20 neurons per layer, on-rate j/20 in layer 0 and 1 - j/20 in layer 1
    lines = ["layer\tneuron\tclass\ton_rate\tmean_act\tentropy"]
    for layer in range(2):
        for j in range(20):
            rate = j / 20 if layer == 0 else 1 - j / 20
            lines.append(f"{layer}\t{j}\t{'hyper' if j == 5 else 'normal'}\t{rate}\t{rate}\t0.5")
    path = tmp_path / "neurons.tsv"
    path.write_text("\n".join(lines) + "\n")
    own = load_neurons(path, [20, 20], ["hyper", "hypo"])
    assert [v.tolist() for v in own.values()] == [[5], [5]]
    ten = load_neurons(path, [20, 20], ["hyper", "hypo"], percent=10)
    assert [v.tolist() for v in ten.values()] == [[0, 1, 18, 19], [0, 1, 18, 19]]
    hyper = load_neurons(path, [20, 20], ["hyper"], percent=10)
    assert [v.tolist() for v in hyper.values()] == [[18, 19], [0, 1]]
    assert all(isinstance(v, torch.Tensor) for v in hyper.values())


def test_neuron_source_variants_take_the_neurons_of_the_set_they_name(tmp_path):
    """<system>_from_<set>: the neurons of stage 5's <set> (here dev) instead of the condition's
    own adaptation audio, in the unit's marker inputs too; the system's phases and recorded rates;
    only for the systems that move selected neurons."""
    from pathlib import Path

    from neurosel.recipe.adapt_systems import neuron_source
    from neurosel.recipe.adapt_units import StagePaths, Unit, saliency_reference, unit_inputs

    assert neuron_source("adapt_selective_full_from_dev") == ("adapt_selective_full", "dev")
    assert base_system("adapt_selective_full_from_dev") == "adapt_selective_full"
    assert neuron_source("adapt_all_from_dev") is None and not known_system("adapt_all_from_dev")
    with pytest.raises(ValueError, match="neuron-source variants"):
        AdaptConfig(systems=["adapt_lhuc_from_dev"])
    cfg = AdaptConfig(systems=["adapt_selective_full", "adapt_selective_full_from_dev"], pooled_systems=[],
                      lr_search="fixed", rates={"adapt_selective_full": [3e-3, 1e-4]})
    assert cfg.rates_of("adapt_selective_full_from_dev") == [3e-3, 1e-4]
    own, dev = Unit("adapt_selective_full", 42, "noise"), Unit("adapt_selective_full_from_dev", 42, "noise")
    assert saliency_reference(own, cfg) == "ood_adapt_noise" and saliency_reference(dev, cfg) == "dev"
    paths = StagePaths(*(Path(p) for p in ("m.pt", "lang", "fbank", "sal", "pseudo", "adapt", "decode")))
    tables = lambda u: [p for p in unit_inputs(u, paths, cfg, ["noise"]) if p.name == "neurons.tsv"]  # noqa: E731
    assert tables(own) == [Path("sal/ood_adapt_noise/neurons.tsv")] and tables(dev) == [Path("sal/dev/neurons.tsv")]
    assert dev.name == "adapt_selective_full_from_dev.s42"
