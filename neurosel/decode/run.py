"""Decoding a model over cut sets, as stage 4 (and the pruned and adapted systems) does it.

A decode dir ``<decode-dir>/<set>/`` holds what DESIGN.md names (``hyp.txt``, ``ref.txt``,
``errs.txt``, ``wer``) plus ``tokens.txt`` (the best paths' BPE ids, ``utt-id id id ...``) and
``confidence.txt`` (``utt-id confidence``), which the adaptation stage reads as pseudo-labels.

Work fans out Kaldi-style: job ``j`` of ``n`` decodes its share of every set into
``<set>/parts/<j>.tsv``; ``merge_and_score`` joins the parts and scores against the references.
The references are read only for scoring; nothing here feeds them to a model.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
from lhotse import CutSet, load_manifest

from neurosel.decode.api import decode_log_probs
from neurosel.decode.graph import DecodingGraph
from neurosel.decode.types import DecodeConfig, Hypothesis
from neurosel.errors import NeuroselError
from neurosel.inference import INFERENCE_BATCH_SECONDS, log_posteriors
from neurosel.io import write_text
from neurosel.recipe import layout
from neurosel.score import WerResult, score

log = logging.getLogger(__name__)


@dataclass
class DecodeStageConfig:
    """``conf/decode.yaml``: the search (see ``DecodeConfig``), the LM-weight and blank-penalty
    grids searched on ``tune_set`` (a development set, never a test set; an empty grid keeps
    ``lm_weight``/``blank_penalty``), the batch size in seconds of audio, and
    ``weak_baseline_wer``: the baseline's ``tune_set`` WER (percent) above which stage 4 and the
    report warn that the model is too weak for stages 5-8 to mean anything
    (``neurosel.decode.baseline_check``; no decode depends on it, so it is not in any marker)."""

    method: Literal["greedy", "wfst"] = "wfst"
    lm_weight: float = 1.0
    beam: float = 10.0
    max_active: int = 1000
    min_active: int = 20
    blank_penalty: float = 0.0
    lm_weights: list[float] = field(default_factory=list)
    blank_penalties: list[float] = field(default_factory=list)
    tune_set: str = "dev"
    max_duration: float = INFERENCE_BATCH_SECONDS
    weak_baseline_wer: float = 40.0

    def hashed(self) -> dict:
        """The config as a marker's hash sees it: without ``weak_baseline_wer``, which changes
        no decode."""
        return {k: v for k, v in asdict(self).items() if k != "weak_baseline_wer"}

    def search(self, lm_weight: float | None = None, blank_penalty: float | None = None) -> DecodeConfig:
        """The ``DecodeConfig`` of this stage config, optionally with another LM weight and
        blank penalty."""
        return DecodeConfig(method=self.method, lm_weight=self.lm_weight if lm_weight is None else lm_weight,
                            beam=self.beam, max_active=self.max_active, min_active=self.min_active,
                            blank_penalty=self.blank_penalty if blank_penalty is None else blank_penalty)


def load_cuts(fbank_dir: str | Path, name: str) -> CutSet:
    """``<fbank-dir>/cuts_<name>.jsonl.gz``, eagerly."""
    path = layout.cuts_path(fbank_dir, name)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file (is '{name}' a split of this recipe?)")
    return load_manifest(path, CutSet).to_eager()


def job_share(cuts: CutSet, job: int, num_jobs: int) -> CutSet:
    """The cuts job ``job`` (1-based) of ``num_jobs`` decodes: every ``num_jobs``-th cut by id."""
    if not 1 <= job <= num_jobs:
        raise NeuroselError(f"job {job} is not in 1..{num_jobs}")
    ids = sorted(cuts.ids)
    return cuts.subset(cut_ids=ids[job - 1 :: num_jobs])


def decode_cuts(model: torch.nn.Module, cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                graph: DecodingGraph, cfg: DecodeConfig, max_duration: float = INFERENCE_BATCH_SECONDS) -> dict[str, Hypothesis]:
    """``{cut_id: Hypothesis}`` for every cut."""
    out: dict[str, Hypothesis] = {}
    for batch, log_probs, out_lens in log_posteriors(model, cuts, cmvn, max_duration):
        for cut_id, hyp in zip(batch.cut_ids, decode_log_probs(log_probs, out_lens, graph, cfg)):
            out[cut_id] = hyp
    return out


def write_part(hyps: dict[str, Hypothesis], path: Path) -> None:
    """One job's results: ``utt<TAB>confidence<TAB>token ids<TAB>words`` per line, sorted."""
    lines = [f"{u}\t{h.confidence:.6f}\t{' '.join(map(str, h.tokens))}\t{' '.join(h.words)}\n"
             for u, h in sorted(hyps.items())]
    write_text(path, "".join(lines))


def read_parts(set_dir: Path, num_jobs: int) -> dict[str, tuple[float, list[int], list[str]]]:
    """Join ``parts/1..n.tsv`` -> ``{utt: (confidence, tokens, words)}``; a missing part is an error."""
    rows: dict[str, tuple[float, list[int], list[str]]] = {}
    for j in range(1, num_jobs + 1):
        part = set_dir / "parts" / f"{j}.tsv"
        if not part.is_file():
            raise NeuroselError(f"{part}: missing (decode job {j} of {num_jobs} did not finish)")
        for line in part.read_text(encoding="utf-8").splitlines():
            utt, conf, tokens, words = line.split("\t")
            rows[utt] = (float(conf), [int(t) for t in tokens.split()], words.split())
    return rows


def references(cuts: CutSet) -> dict[str, list[str]]:
    """``{cut_id: reference words}`` for scoring (and only for scoring)."""
    return {c.id: (c.supervisions[0].text or "").split() for c in cuts}


def merge_and_score(set_dir: Path, cuts: CutSet, num_jobs: int) -> WerResult:
    """Merge the parts of one set into ``tokens.txt``, ``confidence.txt`` and score it."""
    rows = read_parts(set_dir, num_jobs)
    missing = sorted(set(cuts.ids) - set(rows))
    if missing:
        raise NeuroselError(f"{set_dir}: no hypothesis for {len(missing)} cuts (e.g. {missing[0]})")
    write_text(set_dir / "tokens.txt", "".join(f"{u} {' '.join(map(str, r[1]))}\n" for u, r in sorted(rows.items())))
    write_text(set_dir / "confidence.txt", "".join(f"{u} {r[0]:.6f}\n" for u, r in sorted(rows.items())))
    result = score(references(cuts), {u: r[2] for u, r in rows.items()}, set_dir)
    log.info("%s: %s", set_dir, result.line())
    return result


def tune_search(model: torch.nn.Module, cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                graph: DecodingGraph, cfg: DecodeStageConfig, out_dir: Path) -> tuple[float, float]:
    """Choose ``(lm_weight, blank_penalty)`` from ``cfg.lm_weights`` x ``cfg.blank_penalties``
    (an empty grid stands for the configured value) by the WER of ``cuts`` (a development set).

    Coordinate search: the penalty at the configured LM weight, then the LM weight at the best
    penalty, and so on until neither moves (ties: the smaller value). Each pair is decoded once,
    scored into ``out_dir/lmwt_<w>_bp_<p>/`` and listed in ``out_dir/search.tsv``; the
    posteriors are computed once.
    """
    posteriors = [(b.cut_ids, lp.clone(), ol.clone())
                  for b, lp, ol in log_posteriors(model, cuts, cmvn, cfg.max_duration)]
    refs = references(cuts)
    weights = sorted(cfg.lm_weights or [cfg.lm_weight])
    penalties = sorted(cfg.blank_penalties or [cfg.blank_penalty])
    wer: dict[tuple[float, float], float] = {}

    def evaluate(w: float, p: float) -> float:
        if (w, p) not in wer:
            hyp: dict[str, list[str]] = {}
            for ids, lp, ol in posteriors:
                for u, h in zip(ids, decode_log_probs(lp, ol, graph, cfg.search(w, p))):
                    hyp[u] = h.words
            result = score(refs, hyp, out_dir / f"lmwt_{w:g}_bp_{p:g}")
            wer[(w, p)] = result.wer
            log.info("lm_weight %g, blank_penalty %g: %s", w, p, result.line())
        return wer[(w, p)]

    w = min(weights, key=lambda x: abs(x - cfg.lm_weight))
    p = min(penalties, key=lambda x: abs(x - cfg.blank_penalty))
    visited: set[tuple[float, float]] = set()
    while (w, p) not in visited:  # the WER never rises, so this ends at a fixed point (or a tie cycle)
        visited.add((w, p))
        p = min(penalties, key=lambda x: (evaluate(w, x), x))
        w = min(weights, key=lambda x: (evaluate(x, p), x))
    write_text(out_dir / "search.tsv", "lm_weight\tblank_penalty\twer\n"
               + "".join(f"{a:g}\t{b:g}\t{e:.2f}\n" for (a, b), e in sorted(wer.items())))
    return w, p
