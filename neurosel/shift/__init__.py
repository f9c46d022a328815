"""Acoustic shift without transcripts: per-utterance and per-set signals of how far a model's FC
neurons and outputs are from what they do on in-domain audio, a WER predictor fitted on sets with
transcripts and judged leave-one-condition-out, and a one-line verdict. Imports torch, numpy and
neurosel.{errors, fc, saliency}; works on any ``nn.Module`` with FC layers (an ``FcSpec``) whose
output is per-frame log-posteriors.

Signals (``ShiftCollector``, one streaming pass with the activation taps of the statistics stage;
``neurosel.shift.neuron_signals`` and ``output_signals`` define each precisely):

- neuron-based, against the in-domain reference ``NeuronStats`` (stage 5's statistics on ``dev``),
  pooled over all FC neurons and per layer (``<name>.layer<l>``):
  ``out_of_range_share`` (neurons whose on-count leaves the binomial range of their reference
  on-rate for the utterance's frame count), ``saturated_share`` (neurons hyper or hypo on the
  utterance, beyond their binomial range, that are normal in the reference; thresholds as in
  method.md), ``on_rate_change``
  (mean |on-rate - reference on-rate|), ``on_off_js`` (mean Jensen-Shannon divergence of the
  on/off distributions), ``window_entropy`` (on/off entropy over a running window of frames,
  averaged: the short-time activation entropy of Mitra et al., arXiv:1708.09516; saturation
  lowers it);
- output-based: ``max_posterior`` (frame confidence), ``top_gap`` (top-1 minus top-2 posterior,
  Mitra and Franco, arXiv:1802.06861), ``blank_share`` (frames whose best unit is the blank),
  ``frame_entropy`` (bits);
- any per-utterance value the caller adds (``ShiftSignals.with_values``, e.g. the decoder's cost
  per frame).

Every signal is per utterance and, frame-weighted, per set (``ShiftSignals.set_values``). Outside
anchors for WER prediction without transcripts: Hermansky et al.'s M-measure (about 3% error under
unseen noise, against 15% for frame entropy) and e-WER (glass-box correlation 0.82).

Prediction (``neurosel.shift.predict``): ``fit_wer`` (least squares or ridge on a few set-level
signals, t-based prediction interval), ``leave_one_condition_out`` / ``compare_predictors``
(Pearson r, mean absolute error and interval coverage of held-out predictions),
``utterance_spearman`` (utterance-level rank correlation), ``verdict``.

Where the recipe calls it: a step script runs ``ShiftCollector`` over a data dir or cut set with
the baseline model and the ``dev`` statistics of stage 5, fits ``fit_wer`` on the recipe's test
sets with their measured WER, and writes per-utterance and per-set signals, predictions and
verdicts; stage 8 reports ``compare_predictors`` over every test set, and stage 7 may select
adaptation data by the per-utterance signals.
"""

from neurosel.shift.collector import ShiftCollector, ShiftConfig, layer_references
from neurosel.shift.metrics import mean_absolute_error, pearson, spearman, utterance_spearman
from neurosel.shift.neuron_signals import NEURON_SIGNALS, NeuronSignalConfig
from neurosel.shift.output_signals import OUTPUT_SIGNALS
from neurosel.shift.predict import (HeldOutPrediction, LabelledSet, LocoScore, LocoSplit, Verdict, WerPrediction,
                                    WerPredictor, compare_predictors, fit_wer, leave_one_condition_out, loco_splits,
                                    verdict)
from neurosel.shift.signals import ShiftSignals

__all__ = [
    "HeldOutPrediction", "LabelledSet", "LocoScore", "LocoSplit", "NEURON_SIGNALS", "NeuronSignalConfig",
    "OUTPUT_SIGNALS", "ShiftCollector", "ShiftConfig", "ShiftSignals", "Verdict", "WerPrediction", "WerPredictor",
    "compare_predictors", "fit_wer", "layer_references", "leave_one_condition_out", "loco_splits",
    "mean_absolute_error", "pearson", "spearman", "utterance_spearman", "verdict",
]
