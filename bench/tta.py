"""Test-time adaptation: CPU seconds per second of audio of per-utterance TTA (``neurosel.adapt.tta``)
on one core, for 1, 5 and 10 steps, and the share of the forward passes, the backward passes
(with the optimiser step) and the search.

Timed over the same OOD test utterances, one at a time as a deployed model meets them, one torch
thread: the whole adapt-then-decode per utterance (``TtaAdapter.adapt`` in episodic mode, which
runs ``steps`` forward+backward passes and one last forward, then the WFST search of the run's
tuned ``decode.yaml``) for each step count and for two parameter sets (every parameter; the
hyper/hypo neurons' rows, 5% per layer at each end by the on-rate of the utterances seen so far);
and the parts alone: one forward, one forward+backward with the optimiser step, the search.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from lhotse import CutSet

from bench.common import Metric, Section, fmt, interleaved
from bench.inputs import Workdir, load_cuts, take_seconds, total_seconds
from neurosel import config as C
from neurosel.adapt import Selection, apply_selection, merge_selection
from neurosel.adapt.tta import TtaAdapter, TtaConfig, suta_objective
from neurosel.decode import decode_log_probs, load_graph
from neurosel.decode.run import DecodeStageConfig
from neurosel.inference import feature_batches
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.saliency.running import RunningOnRate
from neurosel.data.batches import load_cmvn

TARGET = 0.1  # CPU-s per audio second for 10 steps (issue 19)
STEPS = (1, 5, 10)


def _forward(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    log_probs, out_lens = model(*batch)
    return log_probs, torch.arange(log_probs.size(1))[None, :] < out_lens[:, None]


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the TTA section."""
    section = Section("tta", "Test-time adaptation (beyond stage 7)")
    start = time.perf_counter()
    torch.set_num_threads(1)
    search = C.resolve(DecodeStageConfig, work.decode_config, None, "decode", []).search()
    graph = load_graph(work.lang)
    cmvn = load_cmvn(layout.cmvn_path(work.fbank))
    ood = [s for s in layout.test_sets(work.fbank) if layout.is_ood_set(s)]
    cuts = take_seconds(load_cuts(layout.cuts_path(work.fbank, ood[0] if ood else layout.TEST)),
                        15.0 if quick else 60.0)
    seconds = total_seconds(cuts)
    batches = [(b.feats, b.feat_lens) for c in cuts for b in feature_batches(CutSet.from_cuts([c]), cmvn)]
    model, _ = load_model(work.model)
    spec = model.fc_spec()
    with RunningOnRate(model, spec) as running, torch.no_grad():
        for b in batches:
            model(*b)
    neurons = running.extremes(5.0)

    def adapt_and_decode(steps: int, moves: str) -> None:
        params = apply_selection(model, spec, Selection(prefixes=("",)) if moves == "all"
                                 else Selection(neurons=neurons))
        adapter = TtaAdapter(model, params, _forward, TtaConfig(steps=steps, lr=1e-4))
        for b in batches:
            scores = adapter.adapt(b)  # (1, T', V), one utterance
            decode_log_probs(scores, torch.tensor([scores.size(1)]), graph, search)
        merge_selection(model)

    def forward_only() -> None:
        with torch.no_grad():
            for b in batches:
                _forward(model, b)

    def forward_backward(moves: str) -> None:
        params = apply_selection(model, spec, Selection(prefixes=("",)) if moves == "all"
                                 else Selection(neurons=neurons))
        optimizer = torch.optim.AdamW(params, lr=0.0)
        for b in batches:
            optimizer.zero_grad(set_to_none=True)
            scores, mask = _forward(model, b)
            suta_objective(scores, mask, TtaConfig()).backward()
            optimizer.step()
        merge_selection(model)

    with torch.no_grad():
        posteriors = [model(*b)[0] for b in batches]

    def search_only() -> None:
        for lp in posteriors:
            decode_log_probs(lp, torch.tensor([lp.size(1)]), graph, search)

    runs = {"one forward": forward_only,
            "one forward + backward + optimiser step, all": lambda: forward_backward("all"),
            "one forward + backward + optimiser step, selective": lambda: forward_backward("selective"),
            "search (WFST with the LM)": search_only}
    for steps in STEPS:
        for moves in ("all", "selective"):
            runs[f"TTA {steps} steps, {moves}"] = lambda s=steps, m=moves: adapt_and_decode(s, m)
    timings = interleaved(runs, repeats=2 if quick else 3)
    per_second = {name: t.median_cpu / seconds for name, t in timings.items()}
    fwd, srch = per_second["one forward"], per_second["search (WFST with the LM)"]
    section.metrics = [
        Metric("TTA, 10 steps, hyper/hypo neurons: CPU-s per audio second, one core",
               per_second["TTA 10 steps, selective"], "", f"<= {TARGET:g}", "tta.selective_10"),
        Metric("TTA, 10 steps, every parameter: CPU-s per audio second, one core",
               per_second["TTA 10 steps, all"], "", f"<= {TARGET:g}", "tta.all_10"),
    ]
    section.table_header = ["what", "CPU-s per audio s", "forward share", "backward share", "search share"]
    section.table = [[name, fmt(per_second[name]), "", "", ""] for name in runs if not name.startswith("TTA")]
    for steps in STEPS:
        for moves in ("all", "selective"):
            total = per_second[f"TTA {steps} steps, {moves}"]
            step = per_second[f"one forward + backward + optimiser step, {moves}"]
            forwards, backwards = (steps + 1) * fwd, steps * (step - fwd)
            section.table.append([f"TTA {steps} steps, {moves}", fmt(total), f"{forwards / total:.0%}",
                                  f"{backwards / total:.0%}", f"{srch / total:.0%}"])
    section.notes = [
        f"{len(batches)} utterances of `{ood[0] if ood else 'test'}`, {seconds:.1f} s of audio, one at a time; one torch "
        "thread; medians of CPU time over interleaved repeats. The shares of a TTA row are estimated from the parts "
        "timed alone (steps + 1 forwards, steps backward passes with the optimiser step of the same parameter "
        "set, one search) and need not add up to 100%: the rest is the objective, the parametrisation and Python.",
    ]
    section.seconds = time.perf_counter() - start
    return section
