"""From a model and unlabeled sets to a verdict, as the recipe will chain it: shift signals per set
(neurosel.shift.ShiftCollector), a WER predictor judged leave-one-condition-out and fitted on sets
with WER, a prediction and verdict for a new set. The WER here is synthetic (it grows with the
known shift), so the test checks the chain, not a claim about speech."""

from __future__ import annotations

import numpy as np
import torch

from fc_nets import Mlp, mlp_spec, seeded
from neurosel.saliency.stats import collect_stats
from neurosel.shift import LabelledSet, ShiftCollector, ShiftConfig, compare_predictors, fit_wer, verdict

N_IN = 6
DIRECTION = torch.nn.functional.normalize(torch.randn(N_IN, generator=torch.Generator().manual_seed(9),
                                                      dtype=torch.float64), dim=0)


def shifted_set(model, spec, ref, seed: int, offset: float) -> dict[str, float]:
    """Set-level signals of 12 utterances of 25 frames, moved by ``offset`` along DIRECTION."""
    x = torch.randn(12, 25, N_IN, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        x = x + offset * DIRECTION
        collector.end_batch([f"u{i}" for i in range(12)], model(x).log_softmax(-1), lengths=torch.full((12,), 25))
    return collector.result().set_values()


def test_signals_to_prediction_and_verdict():
    model = seeded(Mlp(N_IN, [24, 16], 5, "sigmoid"), seed=3).double().eval()
    spec = mlp_spec(2, 0.5)
    ref = collect_stats(model, spec, [(torch.randn(5000, N_IN, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64), None)])
    noise = np.random.default_rng(1)
    offsets = {"clean": [0.0, 0.0, 0.0], "mild": [0.7, 1.0, 1.3], "strong": [2.0, 2.5, 3.0],
               "severe": [3.5, 4.0, 4.5]}
    sets = [LabelledSet(f"{c}_{i}", c, shifted_set(model, spec, ref, 10 * j + i, d), 10.0 + 12.0 * d + noise.normal())
            for j, (c, ds) in enumerate(offsets.items()) for i, d in enumerate(ds)]
    scores = {s.name: s for s in compare_predictors(sets, {"out of range": ["out_of_range_share"],
                                                           "confidence": ["max_posterior"],
                                                           "combined": ["out_of_range_share", "on_off_js"]},
                                                    ridge=0.1)}
    assert scores["out of range"].pearson > 0.9, scores["out of range"].pearson
    for score in scores.values():
        assert len(score.held_out) == len(sets)
        for h in score.held_out:
            assert not any(name.startswith(h.set.condition) for name in h.fitted_on)
    predictor = fit_wer(sets, ["out_of_range_share"])
    in_domain_wer = 10.0
    clean = predictor.predict(shifted_set(model, spec, ref, 100, 0.0))
    severe = predictor.predict(shifted_set(model, spec, ref, 101, 4.0))
    assert verdict(clean, in_domain_wer).line == "like the training data"
    assert verdict(severe, in_domain_wer).shifted and severe.low <= 10.0 + 12.0 * 4.0 <= severe.high
