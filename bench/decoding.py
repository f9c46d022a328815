"""Decoding: real-time factor on one core of WFST decoding with the LM (the run's TLG and its
tuned ``decode.yaml``) and of greedy decoding, each split into the acoustic model's forward and
the search.

RTF = CPU seconds / seconds of audio, one torch thread (a decode job's setting). Timed,
interleaved over the same ``test`` audio: the forward pass (``neurosel.inference.log_posteriors``
on features in memory), the WFST search and the greedy search (``decode_log_probs`` on the
log-posteriors it produced).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.common import Metric, Section, fmt, interleaved
from bench.inputs import Workdir, load_cuts, take_seconds, total_seconds
from neurosel import config as C
from neurosel.decode import DecodeConfig, decode_log_probs, load_graph
from neurosel.decode.run import DecodeStageConfig
from neurosel.inference import feature_batches
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.data.batches import load_cmvn

TARGET_RTF = 0.05


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Decoding section."""
    section = Section("decode", "Decoding (stage 4)")
    start = time.perf_counter()
    torch.set_num_threads(1)
    stage_cfg = C.resolve(DecodeStageConfig, work.decode_config, None, "decode", [])
    wfst_cfg = stage_cfg.search()
    if wfst_cfg.method != "wfst":
        wfst_cfg = DecodeConfig("wfst", wfst_cfg.lm_weight, wfst_cfg.beam, wfst_cfg.max_active, wfst_cfg.min_active)
    greedy_cfg = DecodeConfig("greedy")
    model, _ = load_model(work.model)
    graph = load_graph(work.lang)
    cmvn = load_cmvn(layout.cmvn_path(work.fbank))
    cuts = take_seconds(load_cuts(layout.cuts_path(work.fbank, "test")), 30.0 if quick else 120.0)
    seconds = total_seconds(cuts)
    batches = list(feature_batches(cuts, cmvn, stage_cfg.max_duration))
    with torch.inference_mode():
        posteriors = [model(b.feats, b.feat_lens) for b in batches]

    def forward() -> None:
        with torch.inference_mode():
            for b in batches:
                model(b.feats, b.feat_lens)

    def search(cfg: DecodeConfig) -> None:
        for log_probs, lens in posteriors:
            decode_log_probs(log_probs, lens, graph, cfg)

    timings = interleaved({
        "acoustic model forward": forward,
        "WFST search with the LM": lambda: search(wfst_cfg),
        "greedy search": lambda: search(greedy_cfg),
    }, repeats=3 if quick else 5)
    rtf = {name: t.median_cpu / seconds for name, t in timings.items()}
    forward_rtf = rtf["acoustic model forward"]
    section.metrics = [
        Metric("RTF of WFST decoding with the LM, one core (forward + search)",
               forward_rtf + rtf["WFST search with the LM"], "", f"<= {TARGET_RTF:g}", "decode.wfst_rtf"),
        Metric("RTF of the WFST search alone", rtf["WFST search with the LM"], "", None, "decode.wfst_search_rtf"),
        Metric("RTF of greedy decoding, one core (forward + search)", forward_rtf + rtf["greedy search"], "", None,
               "decode.greedy_rtf"),
    ]
    section.table_header = ["what", "RTF (CPU)", "RTF (wall)", "median CPU s", "spread"]
    section.table = [[name, fmt(rtf[name]), fmt(t.median_wall / seconds), fmt(t.median_cpu), f"{t.spread:.0%}"]
                     for name, t in timings.items()]
    tlg = graph.tlg
    section.notes = [
        f"{len(cuts)} utterances of `test`, {seconds:.1f} s of audio; TLG with {tlg.num_states} states; "
        f"search settings from {work.decode_config.name}: lm_weight {wfst_cfg.lm_weight:g}, beam {wfst_cfg.beam:g}, "
        f"max_active {wfst_cfg.max_active}; one torch thread; {len(timings['greedy search'].wall)} "
        "interleaved repeats, medians of CPU time.",
    ]
    section.seconds = time.perf_counter() - start
    return section
