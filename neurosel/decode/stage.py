"""Decoding as a stage: the LM-weight tuning, the jobs, the merge and the up-to-date check of one
model on a list of sets, as ``neurosel.bin.decode`` runs them for stage 4 and the pruning and
adaptation stages run them in their own processes.

``<decode-dir>/<set>/`` gets a ``.done`` marker whose hash covers the resolved decode config, the
set's name, the model, the lang dir's ``TLG.fst`` and ``bpe.model`` and the set's cuts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from neurosel import config as C
from neurosel.decode.graph import load_graph
from neurosel.decode.run import (DecodeStageConfig, decode_cuts, job_share, load_cuts, merge_and_score, tune_search,
                                 write_part)
from neurosel.errors import NeuroselError
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.stage import fingerprint, mark_done, run_once, status
from neurosel.data.batches import load_cmvn

log = logging.getLogger("neurosel.decode")

CPU = torch.device("cpu")


def load_decode_config(path: str | Path) -> DecodeStageConfig:
    """A decode config file as it is (e.g. the baseline's tuned ``decode.yaml``)."""
    return C.resolve(DecodeStageConfig, path, None, "decode", [])


def set_digest(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, name: str) -> str:
    """The marker hash of the decode of set ``name``."""
    inputs = [model, layout.decoding_graph(lang), layout.bpe_model(lang), layout.cuts_path(fbank, name)]
    return fingerprint({"decode": cfg.hashed(), "set": name}, inputs)


def stale_sets(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path,
               sets: list[str]) -> list[str]:
    """The sets among ``sets`` whose decode is missing or not up to date."""
    return [s for s in sets if status(decode_dir / s, set_digest(cfg, model, lang, fbank, s)) != "done"]


def tune_inputs(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path) -> list[Path]:
    """What the LM-weight tuning reads (for its marker)."""
    return [model, layout.decoding_graph(lang), layout.cuts_path(fbank, cfg.tune_set)]


def tune_stale(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path) -> bool:
    """True if the LM-weight tuning in ``decode_dir`` is missing or not up to date."""
    digest = fingerprint(cfg.hashed(), tune_inputs(cfg, model, lang, fbank))
    return status(decode_dir / "tune", digest) != "done"


def tune(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path, force: bool = False,
         device: torch.device = CPU) -> None:
    """Choose the LM weight and blank penalty on ``cfg.tune_set``; write ``<decode_dir>/decode.yaml``
    (the config with the chosen values) and ``<decode_dir>/tune/search.tsv``, unless up to date.
    The forward pass runs on ``device``, the search on the CPU."""
    tune_dir = decode_dir / "tune"

    def work() -> None:
        loaded = load_model(model)[0].to(device)
        lm_weight, blank_penalty = tune_search(
            loaded, load_cuts(fbank, cfg.tune_set), load_cmvn(layout.cmvn_path(fbank)),
            load_graph(lang, with_tlg=True), cfg, tune_dir)
        log.info("chosen on %s: lm_weight %g, blank_penalty %g", cfg.tune_set, lm_weight, blank_penalty)
        C.save(DecodeStageConfig(**{**C.to_dict(cfg), "lm_weight": lm_weight, "blank_penalty": blank_penalty,
                                    "lm_weights": [], "blank_penalties": []}),
               decode_dir / "decode.yaml")

    run_once(f"LM-weight and blank-penalty tuning on {cfg.tune_set}", tune_dir, cfg.hashed(),
             tune_inputs(cfg, model, lang, fbank), work, force=force)


def decode_job(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path, sets: list[str],
               job: int, num_jobs: int, device: torch.device = CPU) -> None:
    """Job ``job`` of ``num_jobs``: decode its share of each set into ``<set>/parts/<job>.tsv``
    (the forward pass on ``device``, the search on the CPU)."""
    loaded = load_model(model)[0].to(device)
    cmvn = load_cmvn(layout.cmvn_path(fbank))
    graph = load_graph(lang, with_tlg=cfg.method == "wfst")
    for name in sets:
        share = job_share(load_cuts(fbank, name), job, num_jobs)
        hyps = decode_cuts(loaded, share, cmvn, graph, cfg.search(), cfg.max_duration)
        write_part(hyps, decode_dir / name / "parts" / f"{job}.tsv")


def merge(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path, sets: list[str],
          num_jobs: int) -> None:
    """Join the jobs' parts of each set, score it, save the config and write its marker."""
    for name in sets:
        set_dir = decode_dir / name
        merge_and_score(set_dir, load_cuts(fbank, name), num_jobs)
        C.save(cfg, set_dir / "decode.yaml")
        mark_done(set_dir, set_digest(cfg, model, lang, fbank, name), stage="decode", model=str(model))


def decode_here(cfg: DecodeStageConfig, model: Path, lang: Path, fbank: Path, decode_dir: Path, sets: list[str],
                force: bool = False, device: torch.device = CPU) -> bool:
    """Decode ``model`` on ``sets`` in this process (one job of one; the forward pass on
    ``device``), unless every set is up to date. Returns True when it decoded."""
    if not force and not stale_sets(cfg, model, lang, fbank, decode_dir, sets):
        return False
    decode_job(cfg, model, lang, fbank, decode_dir, sets, 1, 1, device)
    merge(cfg, model, lang, fbank, decode_dir, sets, 1)
    return True


def wer_line(set_dir: Path) -> str:
    """The ``%WER ...`` line of a scored decode dir."""
    path = set_dir / "wer"
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file (is {set_dir.name} decoded?)")
    return path.read_text(encoding="utf-8").strip()
