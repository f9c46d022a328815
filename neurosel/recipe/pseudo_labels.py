"""Pseudo-labels for unsupervised adaptation: read them from a first-pass decode dir, keep or
weight utterances by confidence (or keep the least shifted by a per-utterance shift score), report
what was kept, and build CTC batches whose targets are the pseudo-label token ids.

A first-pass decode dir (``steps/decode.sh`` of the baseline on ``ood_adapt_<c>``) holds
``tokens.txt`` (``utt-id id id ...``, the best path's BPE ids, possibly none) and
``confidence.txt`` (``utt-id confidence``, the mean frame posterior of the best path).
Nothing here reads a cut's supervision text: ``PseudoCtcDataset`` takes its targets from the
pseudo-label table only. The decode dir's ``ref.txt``/``hyp.txt`` are read by
``pseudo_label_report`` to state the pseudo-label WER of what was kept, for the report only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import kaldialign
import torch
from lhotse import CutSet
from lhotse.dataset.collation import collate_features

from neurosel.data.kaldi_dir import read_table
from neurosel.errors import NeuroselError
from neurosel.score import read_text
from neurosel.data.batches import Batch, apply_cmvn


@dataclass
class PseudoLabelConfig:
    """Which utterances adaptation trains on: ``keep`` = ``all``; ``top_fraction`` (the
    ``top_fraction`` most confident); ``threshold`` (confidence >= ``threshold``); ``weight``
    (all, each utterance's loss weighted by its confidence). ``by``: what ``top_fraction`` ranks by,
    ``confidence`` (most confident first) or ``shift`` (least shifted first, by a per-utterance
    shift score of the first pass; ``threshold`` and ``weight`` are by confidence only).
    Utterances with an empty pseudo-label are always dropped (CTC has nothing to learn from them)
    and counted."""

    keep: Literal["all", "top_fraction", "threshold", "weight"] = "all"
    top_fraction: float = 0.8
    threshold: float = 0.0
    by: Literal["confidence", "shift"] = "confidence"

    def __post_init__(self) -> None:
        if not 0.0 < self.top_fraction <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        if self.by not in ("confidence", "shift"):
            raise ValueError(f"by must be 'confidence' or 'shift', got '{self.by}'")
        if self.by == "shift" and self.keep not in ("all", "top_fraction"):
            raise ValueError(f"keep: {self.keep} is by confidence; by: shift keeps all or the top_fraction")


@dataclass
class PseudoLabels:
    """Per utterance the pseudo-label token ids and the confidence of the first pass."""

    tokens: dict[str, list[int]]
    confidence: dict[str, float]


@dataclass
class KeptLabels:
    """The utterances adaptation trains on: their token ids and optional loss weights."""

    tokens: dict[str, list[int]]
    weights: dict[str, float] | None
    dropped_empty: int
    dropped_confidence: int  # dropped by the ranking (confidence, or shift with ``by: shift``)


def read_pseudo_labels(decode_dir: str | Path) -> PseudoLabels:
    """``<decode_dir>/tokens.txt`` and ``confidence.txt`` -> ``PseudoLabels`` (same utterances)."""
    decode_dir = Path(decode_dir)
    tok_path, conf_path = decode_dir / "tokens.txt", decode_dir / "confidence.txt"
    for path in (tok_path, conf_path):
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (decode the adaptation set with the baseline first)")
    tokens: dict[str, list[int]] = {}
    for utt, value in read_table(tok_path, allow_empty_value=True, must_sort=False).items():
        try:
            tokens[utt] = [int(t) for t in value.split()]
        except ValueError as e:
            raise NeuroselError(f"{tok_path}: utterance {utt}: token ids must be integers ({e})") from e
    confidence: dict[str, float] = {}
    for utt, value in read_table(conf_path, must_sort=False).items():
        try:
            confidence[utt] = float(value)
        except ValueError as e:
            raise NeuroselError(f"{conf_path}: utterance {utt}: confidence must be a number ({e})") from e
        if not 0.0 <= confidence[utt] <= 1.0:
            raise NeuroselError(f"{conf_path}: utterance {utt}: confidence {value} is not in [0, 1]")
    if set(tokens) != set(confidence):
        odd = sorted(set(tokens) ^ set(confidence))[0]
        raise NeuroselError(f"{decode_dir}: utterance {odd} is in only one of tokens.txt and confidence.txt")
    return PseudoLabels(tokens, confidence)


def merge_pseudo_labels(parts: list[PseudoLabels]) -> PseudoLabels:
    """Several sets' pseudo-labels as one (pooled adaptation); utterance ids must be distinct."""
    tokens: dict[str, list[int]] = {}
    confidence: dict[str, float] = {}
    for part in parts:
        clash = set(tokens) & set(part.tokens)
        if clash:
            raise NeuroselError(f"utterance {sorted(clash)[0]} has pseudo-labels in two adaptation sets")
        tokens.update(part.tokens)
        confidence.update(part.confidence)
    return PseudoLabels(tokens, confidence)


def select_pseudo_labels(labels: PseudoLabels, cfg: PseudoLabelConfig,
                         shift: dict[str, float] | None = None) -> KeptLabels:
    """Drop empty pseudo-labels, then keep or weight as ``cfg`` says. Ranking for ``top_fraction``
    is by confidence (highest first) or, with ``by: shift``, by ``shift`` (per utterance, higher =
    more shifted; lowest first), ties by utterance id; the count kept is ceil(fraction * n) of the
    usable utterances."""
    usable = {u: t for u, t in labels.tokens.items() if t}
    dropped_empty = len(labels.tokens) - len(usable)
    keep = set(usable)
    if cfg.by == "shift":
        if shift is None:
            raise NeuroselError("by: shift needs a shift score per utterance")
        missing = sorted(set(usable) - set(shift))
        if missing:
            raise NeuroselError(f"utterance {missing[0]} has no shift score ({len(missing)} missing)")
    if cfg.keep == "top_fraction":
        scores = shift if cfg.by == "shift" and shift is not None else {u: -c for u, c in labels.confidence.items()}
        ranked = sorted(usable, key=lambda u: (scores[u], u))
        keep = set(ranked[:math.ceil(cfg.top_fraction * len(ranked))])
    elif cfg.keep == "threshold":
        keep = {u for u in usable if labels.confidence[u] >= cfg.threshold}
    weights = {u: labels.confidence[u] for u in keep} if cfg.keep == "weight" else None
    return KeptLabels({u: usable[u] for u in sorted(keep)}, weights, dropped_empty, len(usable) - len(keep))


def pseudo_label_report(labels: PseudoLabels, kept: KeptLabels, cuts: CutSet,
                        decode_dirs: list[Path]) -> dict:
    """What adaptation trains on: utterance counts (total, kept, dropped empty / by confidence),
    hours and mean confidence of the kept ones, and the pseudo-label WER of all and of the kept
    utterances, from the decode dirs' ``ref.txt``/``hyp.txt`` (for the report only)."""
    ref: dict[str, list[str]] = {}
    hyp: dict[str, list[str]] = {}
    for d in decode_dirs:
        ref.update(read_text(d / "ref.txt"))
        hyp.update(read_text(d / "hyp.txt"))
    durations = {c.id: c.duration for c in cuts}
    kept_ids = sorted(kept.tokens)
    return {
        "utterances": len(labels.tokens),
        "kept": len(kept_ids),
        "dropped_empty": kept.dropped_empty,
        "dropped_confidence": kept.dropped_confidence,
        "weighted": kept.weights is not None,
        "hours_kept": sum(durations.get(u, 0.0) for u in kept_ids) / 3600.0,
        "mean_confidence_kept": (sum(labels.confidence[u] for u in kept_ids) / len(kept_ids)) if kept_ids else None,
        "pseudo_wer_all": word_error_rate(ref, hyp, sorted(labels.tokens)),
        "pseudo_wer_kept": word_error_rate(ref, hyp, kept_ids),
    }


def word_error_rate(ref: dict[str, list[str]], hyp: dict[str, list[str]], utts: list[str]) -> float | None:
    """WER in percent of ``hyp`` against ``ref`` over ``utts`` (None without reference words)."""
    errors = words = 0
    for u in utts:
        if u not in ref:
            continue
        counts = kaldialign.edit_distance(ref[u], hyp.get(u, []))
        errors += counts["total"]
        words += len(ref[u])
    return 100.0 * errors / words if words else None


class PseudoCtcDataset(torch.utils.data.Dataset):
    """Map-style Lhotse dataset: a CutSet -> ``Batch`` with CMVN'd features and the cuts'
    pseudo-label targets (``tokens[cut.id]``), weighted by ``weights[cut.id]`` when given.
    Cut supervisions are never read."""

    def __init__(self, tokens: dict[str, list[int]], cmvn: tuple[torch.Tensor, torch.Tensor],
                 weights: dict[str, float] | None = None) -> None:
        self.tokens = tokens
        self.cmvn = cmvn
        self.weights = weights

    def __getitem__(self, cuts: CutSet) -> Batch:
        """Load and normalise the cuts' features; targets from the pseudo-label table."""
        ids = [cut.id for cut in cuts]
        for cut in cuts:
            if not self.tokens.get(cut.id):
                raise NeuroselError(f"cut {cut.id}: has no (non-empty) pseudo-label")
            if not cut.has_features:
                raise NeuroselError(f"cut {cut.id}: has no features")
        feats, feat_lens = collate_features(cuts)
        seqs = [self.tokens[u] for u in ids]
        return Batch(
            feats=apply_cmvn(feats, self.cmvn),
            feat_lens=feat_lens.long(),
            targets=torch.tensor([t for seq in seqs for t in seq], dtype=torch.long),
            target_lens=torch.tensor([len(seq) for seq in seqs], dtype=torch.long),
            cut_ids=ids,
            weights=None if self.weights is None else torch.tensor([self.weights[u] for u in ids]),
        )
