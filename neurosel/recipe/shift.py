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

``score`` reads a Kaldi data dir (``wav.scp``, optionally ``segments``; features computed on the fly
with stage 1's settings) or a cut set (``neurosel.recipe.shift_data``) and writes into ``<out-dir>``:

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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet

from neurosel.errors import NeuroselError
from neurosel.fc import fc_widths
from neurosel.inference import log_posteriors
from neurosel.io import atomic_path, write_json, write_text
from neurosel.model import CnnCtcModel, load_model
from neurosel.recipe import layout
from neurosel.recipe.shift_data import load_audio
from neurosel.report.collect import read_utterance_counts, read_wer
from neurosel.saliency.stats import NeuronStats, load_stats
from neurosel.shift.select import nested_leave_one_condition_out, signal_lists
from neurosel.stage import clear, fingerprint, mark_done, status
from neurosel.shift import (NEURON_SIGNALS, OUTPUT_SIGNALS, LabelledSet, LocoScore, NeuronSignalConfig,
                            ShiftCollector, ShiftConfig, ShiftSignals, WerPrediction, WerPredictor, fit_wer,
                            layer_references, leave_one_condition_out, loco_splits, utterance_spearman,
                            verdict)
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
    if not files.stats.is_file():
        raise NeuroselError(f"{files.stats}: no such file (the in-domain reference statistics; run stage 5, "
                            "saliency)")
    model, _ = load_model(files.model)
    reference = load_stats(files.stats)
    spec = model.fc_spec()
    try:
        layer_references(reference, fc_widths(model, spec), spec.on_threshold, NeuronSignalConfig())
    except NeuroselError as e:
        raise NeuroselError(f"{files.stats} does not match the model {files.model}: {e}") from e
    return ShiftModel(model.to(device), load_cmvn(layout.cmvn_path(files.fbank)), reference,
                      {"model": _sha256(files.model), "reference": _sha256(files.stats)})


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


# -------------------------------------------------------------------------------------- score


@dataclass(frozen=True)
class FittedPredictor:
    """``predictor.json``: the predictor, its interval level, the in-domain WER and reference
    utterances' signals, and the digests of the model and statistics it was fitted with."""

    name: str
    predictor: WerPredictor
    level: float
    in_domain_wer: float
    in_domain_signals: dict[str, np.ndarray]
    digests: dict[str, str]


def read_predictor(path: Path) -> FittedPredictor:
    """``NeuroselError`` naming ``path`` when it is missing or not a predictor ``fit`` wrote."""
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file (fit a predictor first: python -m neurosel.bin.shift fit "
                            "<work-dir>)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        predictor = WerPredictor.from_dict(doc["predictor"], str(path))
        return FittedPredictor(str(doc["name"]), predictor, float(doc["level"]), float(doc["in_domain"]["wer"]),
                               {n: np.array(doc["in_domain"]["utterances"][n], dtype=np.float64)
                                for n in predictor.signals}, {k: str(v) for k, v in doc["sha256"].items()})
    except (ValueError, KeyError, TypeError) as e:
        raise NeuroselError(f"{path}: not a shift predictor ({e!r})") from e


def score_audio(workdir: str | Path, source: str | Path, out_dir: str | Path,
                predictor_path: str | Path | None = None, device: torch.device = CPU) -> dict[str, Any]:
    """Signals, predicted WER and verdict of the audio at ``source`` (module docs); writes
    ``utterances.tsv``, ``shift.png`` and ``summary.json`` into ``out_dir``. Returns the summary."""
    files = RecipeFiles(Path(workdir))
    path = Path(predictor_path) if predictor_path is not None else files.shift / PREDICTOR_JSON
    fitted = read_predictor(path)
    sm = load_shift_model(files, device)
    for what, digest in sm.digests.items():
        if fitted.digests.get(what) != digest:
            raise NeuroselError(f"{path} was fitted with another {what} than "
                                f"{files.model if what == 'model' else files.stats}; fit it again")
    with tempfile.TemporaryDirectory(prefix="shift_feats.") as scratch:
        cuts = load_audio(Path(source), files.features_yaml, files.prepare_yaml, Path(scratch))
        _check_features(cuts, sm.model.cfg.num_features, Path(source))
        signals = collect_signals(sm, cuts)
    per_utt = [fitted.predictor.predict({n: float(signals.values[n][i]) for n in signals.names}, fitted.level)
               for i in range(len(signals.utt_ids))]
    whole = fitted.predictor.predict(signals.set_values(), fitted.level)
    judged = verdict(whole, fitted.in_domain_wer)
    in_domain = fitted.in_domain_signals
    reference = [fitted.predictor.predict({n: float(v[i]) for n, v in in_domain.items()}, fitted.level).wer
                 for i in range(len(in_domain[fitted.predictor.signals[0]]))]
    in_sample = [n for n in fitted.predictor.fitted_on
                 if Path(source).resolve() == files.cuts(n).resolve()]
    if in_sample:
        log.warning("%s is set %s, which the predictor was fitted on: its prediction is in-sample (%s has "
                    "its held-out one)", source, in_sample[0], EVALUATION_JSON)
    summary = {"source": str(source), "predictor": str(path), "predictor_name": fitted.name,
               "in_sample": bool(in_sample),
               "model": str(files.model), "reference": str(files.stats), "utterances": len(signals.utt_ids),
               "frames": int(signals.frames.sum()), "signals": signals.set_values(),
               "prediction": {"wer": whole.wer, "low": whole.low, "high": whole.high, "level": whole.level},
               "in_domain_wer": fitted.in_domain_wer, "shifted": judged.shifted, "verdict": judged.line}
    first = fitted.predictor.signals[0]
    png = plot_shift(np.array([p.wer for p in per_utt]), np.array(reference), whole, fitted.in_domain_wer,
                     (first, signals.values[first], in_domain[first]), f"{Path(source).name}: {judged.line}")
    out = Path(out_dir)
    write_text(out / UTTERANCES_TSV, _utterances_tsv(signals, per_utt))
    with atomic_path(out / PLOT_PNG) as tmp:
        tmp.write_bytes(png)
    write_json(out / SUMMARY_JSON, _finite(summary))
    return summary


def _check_features(cuts: CutSet, num_features: int, source: Path) -> None:
    bad = next((c for c in cuts if c.num_features != num_features), None)
    if bad is not None:
        raise NeuroselError(f"{source}: cut '{bad.id}' has {bad.num_features} features per frame, the model takes "
                            f"{num_features}")


def _utterances_tsv(signals: ShiftSignals, predictions: Sequence[WerPrediction]) -> str:
    lines = ["\t".join(["utterance", "frames", "predicted_wer", "low", "high"] + list(signals.names))]
    for i, (utt, p) in enumerate(zip(signals.utt_ids, predictions)):
        lines.append("\t".join([utt, str(int(signals.frames[i])), f"{p.wer:.2f}", f"{p.low:.2f}", f"{p.high:.2f}"]
                               + [f"{signals.values[n][i]:.6g}" for n in signals.names]))
    return "\n".join(lines) + "\n"


def plot_shift(predicted: np.ndarray, reference: np.ndarray, whole: WerPrediction, in_domain_wer: float,
               signal: tuple[str, np.ndarray, np.ndarray], title: str) -> bytes:
    """A PNG of two histograms, the scored audio against the in-domain reference utterances:
    predicted WER (U,) against (R,), with the set's prediction, its interval and the in-domain WER
    marked; and ``signal`` = (name, (U,) values, (R,) reference values)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    name, values, reference_values = signal
    for ax, (ours, theirs), label in ((left, (predicted, reference), "predicted WER (%)"),
                                      (right, (values, reference_values), name)):
        bins = np.histogram_bin_edges(np.r_[ours, theirs], bins=20)
        ax.hist(theirs, bins=bins, alpha=0.5, density=True, label=f"in-domain test ({len(theirs)} utt.)")
        ax.hist(ours, bins=bins, alpha=0.5, density=True, label=f"scored audio ({len(ours)} utt.)")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    left.axvspan(whole.low, whole.high, color="C1", alpha=0.15, label=f"set: {whole.level:.0%} interval")
    left.axvline(whole.wer, color="C1", label=f"set: predicted {whole.wer:.1f}")
    left.axvline(in_domain_wer, color="k", linestyle="--", label=f"in-domain WER {in_domain_wer:.1f}")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()
