"""``score`` of the shift command: a fitted predictor's signals, predicted WER and verdict on any
audio, with its plot; the files and the rest of the command are described in
``neurosel.recipe.shift``, which fits the predictor."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from lhotse import CutSet

from neurosel.errors import NeuroselError
from neurosel.io import atomic_path, write_json, write_text
from neurosel.recipe.shift import (CPU, EVALUATION_JSON, PLOT_PNG, PREDICTOR_JSON, SUMMARY_JSON, UTTERANCES_TSV,
                                   RecipeFiles, _finite, collect_signals, load_shift_model)
from neurosel.recipe.shift_data import load_audio
from neurosel.shift import ShiftSignals, WerPrediction, WerPredictor, verdict

log = logging.getLogger(__name__)


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
