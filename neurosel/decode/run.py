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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from lhotse import CutSet, load_manifest

from neurosel.decode.api import decode_log_probs
from neurosel.decode.graph import DecodingGraph
from neurosel.decode.types import DecodeConfig, Hypothesis
from neurosel.errors import NeuroselError
from neurosel.inference import log_posteriors
from neurosel.io import write_text
from neurosel.score import WerResult, score

log = logging.getLogger(__name__)


@dataclass
class DecodeStageConfig:
    """``conf/decode.yaml``: the search (see ``DecodeConfig``), the LM-weight grid searched on
    ``tune_set`` (a development set, never a test set; empty grid: keep ``lm_weight``), and the
    batch size in seconds of audio."""

    method: Literal["greedy", "wfst"] = "wfst"
    lm_weight: float = 1.0
    beam: float = 10.0
    max_active: int = 1000
    min_active: int = 20
    lm_weights: list[float] = field(default_factory=list)
    tune_set: str = "dev"
    max_duration: float = 200.0

    def search(self, lm_weight: float | None = None) -> DecodeConfig:
        """The ``DecodeConfig`` of this stage config, optionally with another LM weight."""
        return DecodeConfig(method=self.method, lm_weight=self.lm_weight if lm_weight is None else lm_weight,
                            beam=self.beam, max_active=self.max_active, min_active=self.min_active)


def load_cuts(fbank_dir: str | Path, name: str) -> CutSet:
    """``<fbank-dir>/cuts_<name>.jsonl.gz``, eagerly."""
    path = Path(fbank_dir) / f"cuts_{name}.jsonl.gz"
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
                graph: DecodingGraph, cfg: DecodeConfig, max_duration: float = 200.0) -> dict[str, Hypothesis]:
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


def tune_lm_weight(model: torch.nn.Module, cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                   graph: DecodingGraph, cfg: DecodeConfig, weights: list[float],
                   out_dir: Path, max_duration: float = 200.0) -> float:
    """Decode ``cuts`` once per LM weight, score each into ``out_dir/lmwt_<w>/`` and return the
    weight of the lowest WER (ties: the smaller weight). The posteriors are computed once."""
    posteriors = [(b.cut_ids, lp.clone(), ol.clone()) for b, lp, ol in log_posteriors(model, cuts, cmvn, max_duration)]
    refs = references(cuts)
    table = []
    for w in sorted(weights):
        wcfg = DecodeConfig(method="wfst", lm_weight=w, beam=cfg.beam, max_active=cfg.max_active,
                            min_active=cfg.min_active)
        hyp: dict[str, list[str]] = {}
        for ids, lp, ol in posteriors:
            for u, h in zip(ids, decode_log_probs(lp, ol, graph, wcfg)):
                hyp[u] = h.words
        result = score(refs, hyp, out_dir / f"lmwt_{w:g}")
        table.append((w, result.wer))
        log.info("lm_weight %g: %s", w, result.line())
    best = min(table, key=lambda t: (t[1], t[0]))[0]
    write_text(out_dir / "lm_weights.tsv", "lm_weight\twer\n" + "".join(f"{w:g}\t{e:.2f}\n" for w, e in table))
    return best
