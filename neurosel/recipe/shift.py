"""Is this audio like the training data? Shift scores, a predicted WER with its interval and a
one-line verdict for a recipe's baseline model on any audio (issue 18, the recipe command).

Usage (``neurosel.bin.shift``)::

    python -m neurosel.bin.shift fit <work-dir>
    python -m neurosel.bin.shift score [--predictor P] <work-dir> <kaldi-data-dir | cuts.jsonl.gz> <out-dir>

``fit`` needs a recipe run through stage 5: the baseline ``exp/baseline/model.pt``, its features
``data/fbank/cuts_<set>.jsonl.gz`` and ``cmvn.npz``, the stage 4 decodes
``exp/decode/baseline/<set>/wer`` and the in-domain reference statistics of stage 5,
``exp/saliency/dev/stats.pt``. For ``dev``, ``test`` and every ``ood_<c>`` that has a decode with a
WER it measures the set-level shift signals (``neurosel.shift``: neuron signals against the dev
statistics, output signals of the posteriors), and judges leave-one-condition-out (the in-domain
sets are one condition, each ``ood_<c>`` its own) a WER predictor on each pooled signal alone
(among them confidence, ``max_posterior``, and ``frame_entropy``), on one neuron and one output
signal together (``PAIR``), on all of them combined (least squares, or ridge; a candidate that
cannot be fitted on a split, e.g. more signals than its fitting sets allow, is kept with the
reason) and ``search``: the one or two of every set-level signal (per FC layer too) with the lowest
leave-one-condition-out MAE, judged nested (``neurosel.shift.select``: for each held-out condition
the signals are picked on the other conditions only), beside the constant predictor (the mean WER
of the fitting sets) that a signal must beat. The candidate with the lowest held-out mean absolute
error is fitted on all the sets and saved; its own held-out numbers are then a little optimistic, as
it was chosen by them (least for ``search``, whose choice of signals is inside the held-out loop).
With ``--severity`` the severity sets (``neurosel.recipe.severity``) join, each in its condition. Writes into
``exp/shift/`` (or ``out_dir``):

- ``signals.tsv``: per set its condition, measured WER, utterances, frames and every signal;
- ``evaluation.json``: the sets, and per candidate its held-out predictions (each with the sets it
  was fitted on), Pearson r, MAE (WER points) and interval coverage, or why it could not be fitted;
  the constant predictor's MAE; per signal its utterance-level Spearman correlation with the
  utterances' WER over all the sets;
- ``predictor.json``: the chosen predictor (``WerPredictor.to_dict``), the in-domain WER of
  ``test`` that the verdict compares with, the predictor's signals on each ``test`` utterance (the
  in-domain reference of the plot), and SHA-256 digests of the model and statistics it belongs to.

The ``dev`` set is the reference of the neuron signals, so its neuron signals are lower than those
of unseen in-domain audio; ``test`` is the in-domain held-out set.

``score`` (``neurosel.recipe.shift_score``) reads a Kaldi data dir (``wav.scp``, optionally
``segments``; features computed on the fly with stage 1's settings) or a cut set
(``neurosel.recipe.shift_data``) and writes into ``<out-dir>``:

- ``utterances.tsv``: per utterance its frames (at the model's output rate), predicted WER and
  interval (of audio like it, not of its own WER), and every signal;
- ``summary.json``: the set's signals, predicted WER and interval, the verdict ("like the training
  data" or "shifted: predicted WER x, range [a, b]"; shifted when the whole interval lies above the
  in-domain WER), ``in_sample`` (true when the source is the cut set of a set the predictor was
  fitted on: its prediction is then in-sample, and ``evaluation.json`` has its held-out one), and
  what it was computed with;
- ``shift.png``: the per-utterance predicted WER and the predictor's first signal against those of
  the in-domain ``test`` utterances.

Each file is written atomically, ``summary.json`` last, and only after everything was computed.
``exp/shift/`` and the names of its files and of the output files are ``neurosel.recipe.layout``'s;
this module also reads ``data/fbank/features.yaml`` and ``data/manifests/prepare.yaml`` (the resolved configs
stages 1 and 0 save), ``exp/baseline/model.pt``, ``exp/saliency/dev/stats.pt`` and a decode dir's
``wer``/``errs.txt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet

from neurosel.errors import NeuroselError
from neurosel.fc import fc_widths
from neurosel.inference import log_posteriors
from neurosel.io import write_json, write_text
from neurosel.model import CnnCtcModel, load_model
from neurosel.recipe import layout
from neurosel.report.collect import read_utterance_counts, read_wer
from neurosel.saliency.stats import NeuronStats, load_stats
from neurosel.shift.select import nested_leave_one_condition_out, signal_lists
from neurosel.stage import clear, fingerprint, mark_done, status
from neurosel.shift import (NEURON_SIGNALS, OUTPUT_SIGNALS, LabelledSet, LocoScore, NeuronSignalConfig,
                            ShiftCollector, ShiftConfig, ShiftSignals, WerPredictor, fit_wer, layer_references,
                            leave_one_condition_out, loco_splits, utterance_spearman)
from neurosel.data.batches import load_cmvn

log = logging.getLogger(__name__)

SIGNALS_TSV, PREDICTOR_JSON, EVALUATION_JSON = layout.SHIFT_SIGNALS, layout.SHIFT_PREDICTOR, layout.SHIFT_EVALUATION
UTTERANCES_TSV, SUMMARY_JSON, PLOT_PNG = layout.SHIFT_UTTERANCES, layout.SHIFT_SUMMARY, layout.SHIFT_PLOT
IN_DOMAIN = "in_domain"  # the condition of dev and test
POOLED_SIGNALS = NEURON_SIGNALS + OUTPUT_SIGNALS
COMBINED = "combined"
# Two signals, one of each kind: the most a leave-one-condition-out split of a recipe with one
# in-domain and four OOD test sets can fit (4 fitting sets when the in-domain condition is held out).
PAIR = ("out_of_range_share", "max_posterior")
CPU = torch.device("cpu")
BLANK = 0  # the CTC blank of the recipe's model (neurosel.model.cnn)
# The signal search: every single signal and pair of signals (pooled and per layer), chosen by
# leave-one-condition-out MAE and judged nested.
SEARCH, SEARCH_SIZE = "search", 2
PREDICTED = "predicted_wer"  # the fitted predictor applied to each utterance


@dataclass(frozen=True)
class RecipeFiles:
    """Where a recipe run's inputs of the shift command are, under ``workdir``."""

    workdir: Path

    @property
    def fbank(self) -> Path:
        return self.workdir / "data" / "fbank"

    @property
    def exp(self) -> Path:
        return self.workdir / "exp"

    @property
    def model(self) -> Path:
        return layout.baseline_dir(self.exp) / "model.pt"

    @property
    def stats(self) -> Path:
        """Stage 5's statistics of the in-domain reference set ``dev``."""
        return layout.saliency_dir(self.exp) / layout.DEV / "stats.pt"

    @property
    def features_yaml(self) -> Path:
        return self.fbank / "features.yaml"

    @property
    def prepare_yaml(self) -> Path:
        return self.workdir / "data" / "manifests" / "prepare.yaml"

    @property
    def shift(self) -> Path:
        """``exp/shift``: what ``fit`` writes."""
        return layout.shift_dir(self.exp)

    def decode(self, set_name: str) -> Path:
        """The baseline's decode dir of ``set_name``: stage 4's, or the severity sets' for a
        ``sev_<c>.<level>``."""
        if layout.is_severity_set(set_name):
            return layout.severity_decode_dir(self.exp) / set_name
        return layout.decode_dir(self.exp, layout.BASELINE) / set_name

    def cuts(self, set_name: str) -> Path:
        """The cuts with features of ``set_name``: stage 1's, or the severity sets' for a
        ``sev_<c>.<level>``."""
        if layout.is_severity_set(set_name):
            return layout.cuts_path(layout.severity_data_dir(self.workdir) / "fbank", set_name)
        return layout.cuts_path(self.fbank, set_name)


@dataclass
class ShiftModel:
    """The baseline model, its CMVN and the in-domain reference statistics, checked to match."""

    model: CnnCtcModel
    cmvn: tuple[torch.Tensor, torch.Tensor]
    reference: NeuronStats
    digests: dict[str, str]  # {"model": sha256 of model.pt, "reference": sha256 of stats.pt}


def load_shift_model(files: RecipeFiles, device: torch.device = CPU) -> ShiftModel:
    """Load and check the inputs every signal needs, the model on ``device`` (the signals are
    accumulated on the CPU); ``NeuroselError`` naming the file for a missing work dir, model, CMVN
    or reference, and for a reference of another model."""
    if not files.workdir.is_dir():
        raise NeuroselError(f"{files.workdir}: no such recipe work dir")
    return open_shift_model(files.model, files.stats, layout.cmvn_path(files.fbank), device)


def open_shift_model(model_path: Path, stats_path: Path, cmvn_path: Path, device: torch.device = CPU) -> ShiftModel:
    """``load_shift_model`` from the three files themselves (e.g. stage 7's paths)."""
    if not stats_path.is_file():
        raise NeuroselError(f"{stats_path}: no such file (the in-domain reference statistics; run stage 5, "
                            "saliency)")
    model, _ = load_model(model_path)
    reference = load_stats(stats_path)
    spec = model.fc_spec()
    try:
        layer_references(reference, fc_widths(model, spec), spec.on_threshold, NeuronSignalConfig())
    except NeuroselError as e:
        raise NeuroselError(f"{stats_path} does not match the model {model_path}: {e}") from e
    return ShiftModel(model.to(device), load_cmvn(cmvn_path), reference,
                      {"model": _sha256(model_path), "reference": _sha256(stats_path)})


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def collect_signals(sm: ShiftModel, cuts: CutSet) -> ShiftSignals:
    """Per-utterance shift signals of ``cuts`` (with features) under ``sm``: one inference pass."""
    with ShiftCollector(sm.model, sm.model.fc_spec(), sm.reference, ShiftConfig(blank=BLANK)) as collector:
        for batch, log_probs, out_lens in log_posteriors(sm.model, cuts, sm.cmvn):
            collector.end_batch(batch.cut_ids, log_probs, lengths=out_lens)
    return collector.result()


# ---------------------------------------------------------------------------------------- fit


def labelled_set_names(files: RecipeFiles, severity: bool = False) -> list[str]:
    """``dev``, ``test`` and each ``ood_<c>`` of the run that has a stage 4 baseline WER; with
    ``severity``, also each severity set ``sev_<c>.<level>`` that has a decoded WER
    (``neurosel.recipe.severity``)."""
    names = [layout.DEV, layout.TEST] + [s for s in layout.test_sets(files.fbank) if layout.is_ood_set(s)]
    if severity:
        built = [s for s in layout.splits(layout.severity_data_dir(files.workdir) / "fbank")
                 if layout.is_severity_set(s)]
        if not built:
            raise NeuroselError(f"{layout.severity_data_dir(files.workdir) / 'fbank'}: no severity sets (build them "
                                "first: python -m neurosel.bin.shift severity <work-dir>)")
        names += built
    return [n for n in names if (files.decode(n) / "wer").is_file()]


def condition(set_name: str) -> str:
    """``in_domain`` for ``dev`` and ``test``, ``c`` for ``ood_<c>`` and for ``sev_<c>.<level>``
    (a condition's severity sets are held out with its test set)."""
    if layout.is_severity_set(set_name):
        return layout.severity_condition(set_name)
    return layout.condition_of(set_name) if layout.is_ood_set(set_name) else IN_DOMAIN


def measure_sets(files: RecipeFiles, sm: ShiftModel,
                 severity: bool = False) -> tuple[list[LabelledSet], dict[str, ShiftSignals]]:
    """The labelled sets (set-level signals and measured WER) and each set's per-utterance signals."""
    names = labelled_set_names(files, severity)
    if layout.TEST not in names:
        raise NeuroselError(f"{files.decode(layout.TEST) / 'wer'}: no such file (the in-domain WER; run stage 4)")
    sets, signals = [], {}
    for name in names:
        cuts = CutSet.from_file(_require(files.cuts(name))).to_eager()
        signals[name] = collect_signals(sm, cuts)
        wer = read_wer(files.decode(name) / "wer")[0]
        sets.append(LabelledSet(name, condition(name), signals[name].set_values(), wer))
        log.info("%s (%s): WER %.2f, %d utterances", name, condition(name), wer, len(cuts))
    return sets, signals


def _require(path: Path) -> Path:
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file")
    return path


@dataclass(frozen=True)
class Candidate:
    """A predictor judged leave-one-condition-out: its ``score``, or why it could not be fitted."""

    name: str
    signals: tuple[str, ...]
    score: LocoScore | None
    error: str | None = None
    picked: dict[str, tuple[str, ...]] | None = None  # SEARCH: the signals picked without each condition


def evaluate(sets: Sequence[LabelledSet], ridge: float, level: float) -> list[Candidate]:
    """Leave-one-condition-out for each pooled signal alone, for ``PAIR``, for all of them
    combined, and (``SEARCH``) for the choice of the best one or two of every set-level signal, per
    layer included, judged nested (``neurosel.shift.select``: the choice never sees the held-out
    condition)."""
    plan = {name: (name,) for name in POOLED_SIGNALS} | {"+".join(PAIR): PAIR, COMBINED: POOLED_SIGNALS}
    out = []
    for name, signals in plan.items():
        try:
            out.append(Candidate(name, signals, leave_one_condition_out(sets, signals, name, ridge, level)))
        except NeuroselError as e:
            log.warning("predictor %s: not judged (%s)", name, e)
            out.append(Candidate(name, signals, None, str(e)))
    lists = signal_lists(sorted(sets[0].signals), SEARCH_SIZE)
    try:
        score, picked = nested_leave_one_condition_out(sets, lists, SEARCH, ridge, level)
        out.append(Candidate(SEARCH, score.signals, score, picked=picked))
    except NeuroselError as e:
        log.warning("predictor %s: not judged (%s)", SEARCH, e)
        out.append(Candidate(SEARCH, (), None, str(e)))
    return out


def utterance_correlations(files: RecipeFiles, signals: dict[str, ShiftSignals],
                           predictor: WerPredictor | None = None) -> dict[str, float]:
    """Per signal (pooled and per layer), the Spearman correlation over the utterances of every
    labelled set between the signal and the utterance's WER (from the ``#csid`` line of its
    decode's ``errs.txt``; utterances without reference words have no WER and are left out); with
    ``predictor``, also (key ``PREDICTED``) that of its predicted WER of each utterance."""
    wer: dict[str, float] = {}
    for name in signals:
        ids, errors, refs = read_utterance_counts(_require(files.decode(name) / "errs.txt"))
        wer |= {u: 100.0 * e / r for u, e, r in zip(ids, errors, refs) if r > 0}
    pooled = ShiftSignals.concat(list(signals.values()))
    keep = np.array([u in wer for u in pooled.utt_ids])
    scored = ShiftSignals(tuple(u for u, k in zip(pooled.utt_ids, keep) if k), pooled.frames[keep],
                          {n: v[keep] for n, v in pooled.values.items()})
    out = {n: utterance_spearman(scored, n, wer) for n in scored.names}
    if predictor is not None:
        predicted = [predictor.predict({n: float(scored.values[n][i]) for n in predictor.signals}).wer
                     for i in range(len(scored.utt_ids))]
        out[PREDICTED] = utterance_spearman(
            ShiftSignals(scored.utt_ids, scored.frames, {PREDICTED: np.array(predicted)}), PREDICTED, wer)
    return out


def constant_mae(sets: Sequence[LabelledSet]) -> float:
    """Held-out MAE (WER points) of the mean WER of the fitting sets, leave-one-condition-out: what
    a predictor must beat for its signals to say anything."""
    errors = [abs(float(np.mean([s.wer for s in split.train])) - h.wer)
              for split in loco_splits(sets) for h in split.held_out]
    return float(np.mean(errors))


def best(candidates: Sequence[Candidate]) -> Candidate:
    """The judged candidate with the lowest held-out MAE (the first of equals)."""
    judged = [c for c in candidates if c.score is not None and math.isfinite(c.score.mae)]
    if not judged:
        raise NeuroselError("no WER predictor could be judged leave-one-condition-out: "
                            + "; ".join(f"{c.name}: {c.error}" for c in candidates[:1]))
    return min(judged, key=lambda c: c.score.mae)  # type: ignore[union-attr]


def fit_digest(files: RecipeFiles, ridge: float, level: float, severity: bool) -> str:
    """The marker hash of ``fit``: its options, the model, the reference statistics and each
    labelled set's cuts and scored decode."""
    names = labelled_set_names(files, severity)
    inputs = [files.model, files.stats] + [p for n in names for p in (files.cuts(n), files.decode(n) / "wer",
                                                                      files.decode(n) / "errs.txt")]
    return fingerprint({"ridge": ridge, "level": level, "severity": severity, "sets": names}, inputs)


def fit_status(workdir: str | Path, out_dir: str | Path | None = None, ridge: float = 0.0, level: float = 0.9,
               severity: bool = False) -> str:
    """``status`` of ``fit`` in ``out_dir``: done, stale or new (``neurosel.stage.status``)."""
    files = RecipeFiles(Path(workdir))
    if not files.workdir.is_dir():
        raise NeuroselError(f"{files.workdir}: no such recipe work dir")
    for path, stage in ((files.model, "3, train"), (files.stats, "5, saliency")):
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (run stage {stage})")
    out = Path(out_dir) if out_dir is not None else files.shift
    return status(out, fit_digest(files, ridge, level, severity))


def fit_recipe(workdir: str | Path, out_dir: str | Path | None = None, ridge: float = 0.0,
               level: float = 0.9, severity: bool = False, device: torch.device = CPU) -> dict[str, Any]:
    """Measure, judge and fit as the module docs say; write ``signals.tsv``, ``evaluation.json``
    and ``predictor.json`` into ``out_dir`` (default ``<workdir>/exp/shift``). With ``severity``
    the built severity sets join the recipe's sets (each in its condition). Returns the
    evaluation document."""
    files = RecipeFiles(Path(workdir))
    sm = load_shift_model(files, device)
    sets, signals = measure_sets(files, sm, severity)
    candidates = evaluate(sets, ridge, level)
    chosen = best(candidates)
    predictor = fit_wer(sets, chosen.signals, ridge)
    test = next(s for s in sets if s.name == layout.TEST)
    evaluation = {"level": level, "ridge": ridge, "severity": severity, "chosen": chosen.name,
                  "constant_mae": constant_mae(sets),
                  "utterance_spearman": utterance_correlations(files, signals, predictor),
                  "sets": [_set_row(s, signals[s.name]) for s in sets],
                  "candidates": [_candidate_doc(c) for c in candidates]}
    document = {"name": chosen.name, "chosen_by": "lowest leave-one-condition-out MAE", "level": level,
                "predictor": predictor.to_dict(), "in_domain": {
                    "set": layout.TEST, "wer": test.wer,
                    "utterances": {n: signals[layout.TEST].values[n].tolist() for n in predictor.signals}},
                "model": str(files.model), "reference": str(files.stats), "sha256": sm.digests}
    out = Path(out_dir) if out_dir is not None else files.shift
    clear(out)
    write_text(out / SIGNALS_TSV, _signals_tsv(sets, signals))
    write_json(out / EVALUATION_JSON, _finite(evaluation))
    write_json(out / PREDICTOR_JSON, document)
    mark_done(out, fit_digest(files, ridge, level, severity), stage="shift fit")
    return evaluation


def _set_row(s: LabelledSet, signals: ShiftSignals) -> dict[str, Any]:
    return {"set": s.name, "condition": s.condition, "wer": s.wer, "utterances": len(signals.utt_ids),
            "frames": int(signals.frames.sum()), "signals": {n: s.signals[n] for n in POOLED_SIGNALS}}


def _candidate_doc(c: Candidate) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": c.name, "signals": list(c.signals)}
    if c.score is None:
        return doc | {"error": c.error}
    if c.picked is not None:
        doc["picked_without"] = {cond: list(signals) for cond, signals in c.picked.items()}
    return doc | {"pearson": c.score.pearson, "mae": c.score.mae, "coverage": c.score.coverage, "held_out": [
        {"set": h.set.name, "condition": h.set.condition, "wer": h.set.wer, "predicted": h.prediction.wer,
         "low": h.prediction.low, "high": h.prediction.high, "fitted_on": list(h.fitted_on)}
        for h in c.score.held_out]}


def _finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float as None (JSON has no NaN; r of a constant is NaN)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


def _signals_tsv(sets: Sequence[LabelledSet], signals: dict[str, ShiftSignals]) -> str:
    names = list(sets[0].signals)
    lines = ["\t".join(["set", "condition", "wer", "utterances", "frames"] + names)]
    for s in sets:
        lines.append("\t".join([s.name, s.condition, f"{s.wer:.2f}", str(len(signals[s.name].utt_ids)),
                                str(int(signals[s.name].frames.sum()))] + [f"{s.signals[n]:.6g}" for n in names]))
    return "\n".join(lines) + "\n"


def evaluation_table(evaluation: dict[str, Any]) -> str:
    """Plain text: per candidate r, MAE and coverage, then the chosen one's held-out predictions."""
    lines = [f"{'predictor':<34}{'r':>8}{'MAE':>8}{'cover':>7}{'utt rho':>9}"]
    rho = evaluation["utterance_spearman"]
    for c in evaluation["candidates"]:
        if "error" in c:
            lines.append(f"{c['name']:<34}  not judged: {c['error']}")
        else:
            r = "-" if c["pearson"] is None else f"{c['pearson']:.3f}"
            utt = "" if c["name"] not in rho else "-" if rho[c["name"]] is None else f"{rho[c['name']]:.3f}"
            lines.append(f"{c['name']:<34}{r:>8}{c['mae']:>8.2f}{c['coverage']:>7.2f}{utt:>9}")
            if "picked_without" in c:
                lines.append(f"  {c['name']} on all sets: {'+'.join(c['signals'])}")
    lines.append(f"{'(constant)':<34}{'-':>8}{evaluation['constant_mae']:>8.2f}{'-':>7}  mean WER of the fitting sets")
    chosen = next(c for c in evaluation["candidates"] if c["name"] == evaluation["chosen"])
    lines.append(f"\nheld-out predictions of {chosen['name']} ({evaluation['level']:.0%} interval)")
    lines.append(f"{'set':<20}{'condition':<16}{'WER':>7}{'pred':>7}  range")
    for h in chosen["held_out"]:
        lines.append(f"{h['set']:<20}{h['condition']:<16}{h['wer']:>7.2f}{h['predicted']:>7.2f}  "
                     f"[{h['low']:.2f}, {h['high']:.2f}]")
    return "\n".join(lines)
