"""Stage 7's per-utterance shift scores: what the ``<system>_shift<NN>`` systems
(``neurosel.recipe.adapt_systems.selection_variant``) rank each adaptation set's utterances by,
keeping the NN% least shifted (issue 18 part 4).

For an adaptation set ``ood_adapt_<c>``, one pass of the baseline over its features
(``neurosel.recipe.shift.collect_signals``: stage 5's activation taps against the in-domain
reference statistics ``<saliency-dir>/dev/stats.pt``, and the output posteriors) gives every shift
signal of every utterance without reading a transcript. The configured ``shift_score`` is one of
them (pooled, or ``<signal>.layer<l>``), or ``predicted_wer``: the shift command's fitted predictor
(``exp/shift/predictor.json`` beside stage 7's ``exp/adapt``) applied to each utterance's signals.
The predictor was fitted on the measured WER of the recipe's labelled sets, its OOD test sets
among them: ranking by it is not as blind to the test sets as ranking by a signal.

The score is oriented so that higher means more shifted: signals that a shift lowers
(``LOWER_WHEN_SHIFTED``: the on/off entropy of saturated neurons, the output's confidence and
top-1 minus top-2 gap) are negated. ``layout.adapt_shift_scores_path`` holds, under a header
``utterance <score> shift``, each utterance's raw score and the oriented one; its marker covers
the score's name and the model, statistics, CMVN and cuts it was computed from (and the predictor
for ``predicted_wer``). A unit of a ``*_shift<NN>`` system lists the file among its marker's
inputs, so that new scores make it stale, and refuses scores that are not up to date.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurosel.decode.run import load_cuts
from neurosel.errors import NeuroselError
from neurosel.io import write_text
from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import AdaptConfig, selection_variant
from neurosel.recipe.shift import PREDICTED, PREDICTOR_JSON, collect_signals, open_shift_model
from neurosel.shift import ShiftSignals
from neurosel.stage import fingerprint, run_once, status

if TYPE_CHECKING:  # adapt_units imports this module
    from neurosel.recipe.adapt_units import StagePaths

# signals that fall when audio moves away from the training data (neurosel.shift's definitions)
LOWER_WHEN_SHIFTED = ("window_entropy", "max_posterior", "top_gap")


def higher_when_shifted(score: str) -> bool:
    """Whether a larger value of ``score`` (a signal, per layer or pooled, or ``predicted_wer``)
    means more shifted audio."""
    return score.split(".layer")[0] not in LOWER_WHEN_SHIFTED


def shift_sets(systems: list[str], adapt_sets: list[str]) -> list[str]:
    """The adaptation sets that need scores: all of ``adapt_sets`` when a ``*_shift<NN>`` system is
    among ``systems``, none otherwise."""
    if any((v := selection_variant(s)) is not None and v.by == "shift" for s in systems):
        return list(adapt_sets)
    return []


def stats_path(saliency: Path) -> Path:
    """Stage 5's in-domain reference statistics: ``<saliency-dir>/dev/stats.pt``."""
    return saliency / layout.DEV / "stats.pt"


def predictor_path(adapt_root: Path) -> Path:
    """The shift command's predictor of the run that ``adapt_root`` (``exp/adapt``) belongs to."""
    return layout.shift_dir(adapt_root.parent) / PREDICTOR_JSON


def scores_inputs(set_name: str, paths: StagePaths, cfg: AdaptConfig) -> list[Path]:
    """What a set's scores are computed from (their marker's inputs)."""
    inputs = [paths.model, stats_path(paths.saliency), layout.cmvn_path(paths.fbank),
              layout.cuts_path(paths.fbank, set_name)]
    return inputs + ([predictor_path(paths.adapt)] if cfg.shift_score == PREDICTED else [])


def scores_config(cfg: AdaptConfig) -> dict:
    """What the scores depend on besides their input files."""
    return {"shift_score": cfg.shift_score, "higher_when_shifted": higher_when_shifted(cfg.shift_score)}


def scores_done(set_name: str, paths: StagePaths, cfg: AdaptConfig) -> bool:
    """True when the set's scores are written and up to date."""
    digest = fingerprint(scores_config(cfg), scores_inputs(set_name, paths, cfg))
    return status(layout.adapt_shift_scores_path(paths.adapt, set_name).parent, digest) == "done"


def run_scores(set_name: str, paths: StagePaths, cfg: AdaptConfig, force: bool = False) -> bool:
    """Compute and write the set's scores unless up to date; True when it ran."""
    out = layout.adapt_shift_scores_path(paths.adapt, set_name)
    return run_once(f"shift scores ({cfg.shift_score}) of {set_name}", out.parent, scores_config(cfg),
                    scores_inputs(set_name, paths, cfg),
                    lambda: write_scores(out, compute_scores(set_name, paths, cfg), cfg.shift_score), force=force)


def compute_scores(set_name: str, paths: StagePaths, cfg: AdaptConfig) -> dict[str, float]:
    """``{utterance: raw score}`` of the set's cuts (features only; no supervision is read)."""
    sm = open_shift_model(paths.model, stats_path(paths.saliency), layout.cmvn_path(paths.fbank), paths.device)
    signals = collect_signals(sm, load_cuts(paths.fbank, set_name))
    if cfg.shift_score == PREDICTED:
        return predicted_wer(signals, predictor_path(paths.adapt), sm.digests)
    if cfg.shift_score not in signals.values:
        raise NeuroselError(f"shift_score: unknown signal '{cfg.shift_score}' (known: {PREDICTED}, "
                            f"{', '.join(signals.names)})")
    return {u: float(v) for u, v in zip(signals.utt_ids, signals.values[cfg.shift_score])}


def predicted_wer(signals: ShiftSignals, path: Path, digests: dict[str, str]) -> dict[str, float]:
    """Each utterance's WER predicted by the shift command's predictor at ``path``, which must
    belong to the same model and statistics."""
    from neurosel.recipe.shift_score import read_predictor

    fitted = read_predictor(path)
    for what, digest in digests.items():
        if fitted.digests.get(what) != digest:
            raise NeuroselError(f"{path} was fitted with another {what} than stage 7's; fit it again")
    return {u: fitted.predictor.predict({n: float(signals.values[n][i]) for n in fitted.predictor.signals}).wer
            for i, u in enumerate(signals.utt_ids)}


def write_scores(path: Path, scores: dict[str, float], score: str) -> None:
    """The scores file: a header, then per utterance (sorted) its raw score and the oriented one."""
    sign = 1.0 if higher_when_shifted(score) else -1.0
    lines = [f"utterance\t{score}\tshift"] + [f"{u}\t{v:.9g}\t{sign * v:.9g}" for u, v in sorted(scores.items())]
    write_text(path, "\n".join(lines) + "\n")


def read_scores(set_name: str, paths: StagePaths, cfg: AdaptConfig) -> dict[str, float]:
    """``{utterance: shift}`` (higher = more shifted) of an up-to-date scores file; ``NeuroselError``
    naming the file when it is missing, stale or malformed."""
    path = layout.adapt_shift_scores_path(paths.adapt, set_name)
    if not scores_done(set_name, paths, cfg):
        raise NeuroselError(f"{path}: missing or not up to date (compute it first: python -m neurosel.bin.adapt "
                            "scores)")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or lines[0] != f"utterance\t{cfg.shift_score}\tshift":
        raise NeuroselError(f"{path}: not the {cfg.shift_score} scores stage 7 writes")
    out: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split("\t")
        try:
            value = float(parts[2])
        except (IndexError, ValueError):
            raise NeuroselError(f"{path}:{number}: expected 'utterance score shift'") from None
        if len(parts) != 3 or not np.isfinite(value) or parts[0] in out:
            raise NeuroselError(f"{path}:{number}: a bad or repeated line")
        out[parts[0]] = value
    return out
