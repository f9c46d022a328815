"""Test-time adaptation of a recipe's model on its test sets and on a stream of them (issue 19).

For each utterance, in order: ``steps`` updates of SUTA's objective on the parameters that
``moves`` names (``neurosel.adapt.tta``), then the recipe's search with the baseline's tuned
``decode.yaml``. ``moves`` is one of stage 7's (``all``, ``fc``, ``conv``, ``last``, ``lhuc``) or
a neuron set: ``selective`` (the hyper+hypo neurons: the top/bottom ``percent``% of each FC layer
by on-rate, from the running on-rates of what the run has seen so far including the current
utterance (``source: running``), or from stage 5's statistics of the utterance's condition's
adaptation audio (``source: condition``)) and ``random`` (as many random neurons per layer, drawn
from the seed). A neuron selection that changes is merged into the weights and opened again with a
fresh optimizer: every utterance in episodic mode, every ``reselect_every`` utterances or at a
change of condition in continual mode.

A run writes a decode dir like stage 4's, ``exp/decode/<system>/<set>/`` (``hyp.txt``,
``ref.txt``, ``errs.txt``, ``wer``), with system ``tta_<moves>_<mode>[_<source>][.s<seed>]`` and set
an ``ood_<c>``/``test`` or ``stream<segment>`` (the OOD test sets interleaved in segments of that
many utterances, seeded), plus ``progress.tsv`` (per utterance: id, CPU seconds of adaptation and
of search, seconds of audio, the objective before and after, the words) and ``state.pt`` (the
run's state every ``checkpoint_every`` utterances), from which a killed run resumes exactly.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from lhotse import CutSet
from torch import nn

from neurosel import config as C
from neurosel.adapt.tta import TtaAdapter, TtaConfig, interleave
from neurosel.decode import load_graph
from neurosel.decode.api import decode_log_probs
from neurosel.decode.run import DecodeStageConfig, load_cuts, references
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, fc_widths
from neurosel.inference import feature_batches
from neurosel.io import atomic_path, torch_load, torch_save, write_text
from neurosel.model import load_model
from neurosel.recipe import layout
from neurosel.recipe.adapt_systems import close_phase, open_phase, random_neurons
from neurosel.recipe.adapt_units import load_neurons
from neurosel.saliency.running import RunningOnRate
from neurosel.score import score
from neurosel.data.batches import load_cmvn

log = logging.getLogger(__name__)

MOVES = ("all", "fc", "conv", "last", "lhuc", "selective", "random")
NEURON_MOVES = ("selective", "random")


@dataclass
class TtaStageConfig:
    """``conf/tta.yaml``: the objective and optimiser (``TtaConfig``'s fields but the learning
    rate, which is per ``moves``), which neurons, the stream, and checkpointing."""

    steps: int = 10
    lr: dict[str, float] = field(default_factory=lambda: {m: 1e-4 for m in MOVES})
    em_coef: float = 0.3
    temperature: float = 2.5
    non_blank: bool = True
    slow_fast: bool = False
    buffer_size: int = 8
    drift_sigmas: float = 0.0
    drift_warmup: int = 10
    percent: float = 5.0
    memory_frames: float = 5000.0
    reselect_every: int = 20
    stream_seed: int = 0
    checkpoint_every: int = 20

    def adapter_config(self, moves: str, mode: Literal["episodic", "continual"]) -> TtaConfig:
        if moves not in self.lr:
            raise NeuroselError(f"tta config: lr has no entry for '{moves}' (has {', '.join(self.lr)})")
        return TtaConfig(steps=self.steps, lr=self.lr[moves], em_coef=self.em_coef, temperature=self.temperature,
                         non_blank=self.non_blank, mode=mode, slow_fast=self.slow_fast,
                         buffer_size=self.buffer_size, drift_sigmas=self.drift_sigmas,
                         drift_warmup=self.drift_warmup)


@dataclass(frozen=True)
class TtaRun:
    """One run: what moves, how, where its neurons come from, which seed, on what."""

    moves: str
    mode: Literal["episodic", "continual"]
    source: Literal["running", "condition"] = "running"
    seed: int = 0
    target: str = "stream20"  # an ood_<c> or test set, or stream<segment>

    def __post_init__(self) -> None:
        if self.moves not in MOVES:
            raise NeuroselError(f"tta: unknown moves '{self.moves}' (known: {', '.join(MOVES)})")
        if self.target.startswith("stream") and not self.target[len("stream"):].isdigit():
            raise NeuroselError(f"tta: target '{self.target}' is neither a set nor stream<segment>")

    @property
    def system(self) -> str:
        """``tta_<moves>_<mode>[_<source>][.s<seed>]``: the source only for ``selective``, the seed
        only for ``random`` (every other run is deterministic)."""
        name = f"tta_{self.moves}_{self.mode}" + (f"_{self.source}" if self.moves == "selective" else "")
        return layout.system_id(name, self.seed) if self.moves == "random" else name


def stream_items(fbank: Path, target: str, seed: int) -> list[tuple[str, Any]]:
    """``[(set, cut)]`` in the order a run sees them: one set as stored, or every OOD test set
    interleaved in segments (``stream<segment>``)."""
    if not target.startswith("stream"):
        cuts = load_cuts(fbank, target)
        return [(target, c) for c in sorted(cuts, key=lambda c: c.id)]
    sets = [s for s in layout.test_sets(fbank) if layout.is_ood_set(s)]
    if not sets:
        raise NeuroselError(f"{fbank}: no ood_<condition> test set to build a stream from")
    cuts = {s: {c.id: c for c in load_cuts(fbank, s)} for s in sets}
    order = interleave({s: sorted(ids) for s, ids in cuts.items()}, int(target[len("stream"):]), seed)
    return [(s, cuts[s][cut_id]) for s, cut_id in order]


def run_inputs(run: TtaRun, model: Path, lang: Path, fbank: Path, decode_yaml: Path,
               saliency: Path) -> list[Path]:
    """The files a run reads (its fingerprint's inputs), checked to exist: a missing one is a
    ``NeuroselError`` naming it, so that ``status`` stops a step before it launches the run."""
    if run.target.startswith("stream"):
        sets = [s for s in layout.test_sets(fbank) if layout.is_ood_set(s)]
        if not sets:
            raise NeuroselError(f"{fbank}: no ood_<condition> test set to build a stream from")
    else:
        sets = [run.target]
    inputs = [model, layout.decoding_graph(lang), lang / "words.txt", lang / "tokens.txt", decode_yaml,
              layout.cmvn_path(fbank), *(layout.cuts_path(fbank, s) for s in sets)]
    if run.moves == "selective" and run.source == "condition":
        inputs += [saliency / layout.adapt_set(layout.condition_of(s)) / "neurons.tsv"
                   for s in sets if layout.is_ood_set(s)]
    for path in inputs:
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (needed by tta {run.system} on {run.target})")
    return inputs


def subset_fbank(fbank: Path, out: Path, per_set: int, seed: int) -> list[str]:
    """A fixed, seeded subset of every split of ``fbank`` but train in ``out`` (``per_set``
    utterances of each, drawn from ``seed`` and the split's name, so the same for every system
    run on it and unchanged when other splits are added), with the same CMVN and features (a
    relative storage path, as stage 1 writes them, is made absolute from the current directory,
    so the subset reads the same features from anywhere). Returns the splits written."""
    if per_set < 1:
        raise NeuroselError(f"tta subset: --per-set must be >= 1, got {per_set}")
    names = [s for s in layout.splits(fbank) if s != "train"]
    if not names:
        raise NeuroselError(f"{fbank}: no cuts_<split>.jsonl.gz to take a subset of")
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        cuts = load_cuts(fbank, name)
        ids = sorted(cuts.ids)
        keep = set(random.Random(f"{seed}:{name}").sample(ids, min(per_set, len(ids))))
        with atomic_path(layout.cuts_path(out, name)) as tmp:
            kept = CutSet.from_cuts([c for c in sorted(cuts, key=lambda c: c.id) if c.id in keep])
            kept.with_features_path_prefix(Path.cwd()).to_file(tmp)  # an absolute path stays as it is
    with atomic_path(layout.cmvn_path(out)) as tmp:
        shutil.copyfile(layout.cmvn_path(fbank), tmp)
    return names


def _forward(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    feats, lens = batch
    log_probs, out_lens = model(feats, lens)
    return log_probs, torch.arange(log_probs.size(1), device=out_lens.device)[None, :] < out_lens[:, None]


class _Selection:
    """Which neurons move now, and the adapter over them; reopened when they change."""

    def __init__(self, model: nn.Module, spec: FcSpec, run: TtaRun, cfg: TtaStageConfig) -> None:
        self.model, self.spec, self.run, self.cfg = model, spec, run, cfg
        self.neurons: dict[int, torch.Tensor] | None = None
        self.adapter: TtaAdapter | None = None

    def open(self, neurons: dict[int, torch.Tensor]) -> TtaAdapter:
        """The adapter over ``neurons`` (or over ``run.moves`` when not a neuron set); reuses the
        current one if nothing changed."""
        same = self.neurons is not None and neurons.keys() == self.neurons.keys() and \
            all(torch.equal(neurons[k], self.neurons[k]) for k in neurons)
        if self.adapter is not None and (same or self.run.moves not in NEURON_MOVES):
            return self.adapter
        if self.adapter is not None:
            close_phase(self.model, self.spec, self.run.moves)
        moves = "selective" if self.run.moves in NEURON_MOVES else self.run.moves
        params, _ = open_phase(self.model, self.spec, moves, neurons, outgoing=False)
        self.neurons = neurons
        self.adapter = TtaAdapter(self.model, params, _forward, self.cfg.adapter_config(self.run.moves, self.run.mode))
        return self.adapter


def run_tta(run: TtaRun, cfg: TtaStageConfig, model_path: Path, lang: Path, fbank: Path, decode_yaml: Path,
            saliency: Path, out_dir: Path, device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Adapt and decode every utterance of ``run.target`` into ``out_dir`` (resuming from its
    ``state.pt``); returns the WER line and the costs (CPU seconds per second of audio). The model
    adapts on ``device``; the search runs on the CPU (on a GPU the costs count the host's CPU time
    only)."""
    torch.manual_seed(run.seed)
    search = C.resolve(DecodeStageConfig, decode_yaml, None, "decode", []).search()
    graph = load_graph(lang, with_tlg=search.method == "wfst")
    cmvn = load_cmvn(layout.cmvn_path(fbank))
    model, _ = load_model(model_path)
    model.to(device)
    spec = model.fc_spec()
    widths = fc_widths(model, spec)
    items = stream_items(fbank, run.target, cfg.stream_seed)
    counts = {layer: round(cfg.percent / 100 * w) * 2 for layer, w in enumerate(widths)}
    fixed = random_neurons(counts, widths, run.seed) if run.moves == "random" else {}
    selection = _Selection(model, spec, run, cfg)
    needs_running = run.moves == "selective" and run.source == "running"
    running = RunningOnRate(model, spec, cfg.memory_frames)
    out_dir.mkdir(parents=True, exist_ok=True)
    done, rows = _resume(out_dir, selection, running, run, cfg, fixed)
    for index in range(done, len(items)):
        set_name, cut = items[index]
        batch = next(iter(feature_batches(CutSet.from_cuts([cut]), cmvn)))
        pair = (batch.feats.to(device), batch.feat_lens.to(device))
        start = time.process_time()
        if needs_running:
            _observe(model, pair, running)
        adapter = selection.open(_neurons(run, cfg, index, set_name, running, fixed, saliency, widths, selection))
        try:
            scores = adapter.adapt(pair)  # (1, T', V): one utterance, no padding
        except NeuroselError as e:
            raise NeuroselError(f"{run.system}, utterance {index + 1} ({cut.id}): {e}") from e
        adapted = time.process_time()
        hyp = decode_log_probs(scores.detach().cpu(), torch.tensor([scores.size(1)]), graph, search)[0]
        searched = time.process_time()
        losses = adapter.history[-1].losses
        rows.append(f"{cut.id}\t{adapted - start:.4f}\t{searched - adapted:.4f}\t{cut.duration:.3f}\t"
                    f"{losses[0]:.5f}\t{losses[-1]:.5f}\t{' '.join(hyp.words)}\n")
        if (index + 1) % cfg.checkpoint_every == 0 or index + 1 == len(items):
            _checkpoint(out_dir, index + 1, rows, selection, running)
    return _score(out_dir, run, items, rows)


def _observe(model: nn.Module, pair: tuple[torch.Tensor, torch.Tensor], running: RunningOnRate) -> None:
    """Add the utterance to the running on-rates (a forward of the model as it is; part of the
    adaptation's cost)."""
    model.eval()
    with torch.no_grad(), running:
        model(*pair)


def _neurons(run: TtaRun, cfg: TtaStageConfig, index: int, set_name: str, running: RunningOnRate,
             fixed: dict[int, torch.Tensor], saliency: Path, widths: list[int],
             selection: _Selection) -> dict[int, torch.Tensor]:
    """The neurons that move for utterance ``index`` of ``set_name``."""
    if run.moves != "selective":
        return fixed
    if run.source == "condition":
        if set_name == layout.TEST:
            raise NeuroselError("tta: source 'condition' needs OOD sets (test has no adaptation audio)")
        reference = layout.adapt_set(layout.condition_of(set_name))
        return load_neurons(saliency / reference / "neurons.tsv", widths, ["hyper", "hypo"])
    if run.mode == "continual" and selection.neurons is not None and index % cfg.reselect_every:
        return selection.neurons
    return running.extremes(cfg.percent)


def _checkpoint(out_dir: Path, done: int, rows: list[str], selection: _Selection, running: RunningOnRate) -> None:
    """``progress.tsv`` and ``state.pt`` for ``done`` utterances (the state first: a kill between
    the two leaves a state at most as far as the progress, and the resume trusts the state)."""
    adapter = selection.adapter
    assert adapter is not None
    torch_save({"done": done, "adapter": adapter.state_dict(), "on": running.on, "frames": running.frames,
                "neurons": selection.neurons or {}}, out_dir / "state.pt")
    write_text(out_dir / "progress.tsv", "".join(rows[:done]))


def _resume(out_dir: Path, selection: _Selection, running: RunningOnRate, run: TtaRun, cfg: TtaStageConfig,
            fixed: dict[int, torch.Tensor]) -> tuple[int, list[str]]:
    """Continue from ``state.pt`` if there is one: the adapter, the running on-rates and the
    progress lines up to the state's utterance."""
    state_path = out_dir / "state.pt"
    if not state_path.is_file():
        return 0, []
    state = torch_load(state_path)
    rows = (out_dir / "progress.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    if len(rows) < state["done"]:
        raise NeuroselError(f"{out_dir}/progress.tsv: {len(rows)} lines, the state says {state['done']} done")
    running.on, running.frames = list(state["on"]), list(state["frames"])
    adapter = selection.open(dict(state["neurons"]) if run.moves == "selective" else fixed)
    adapter.load_state_dict(state["adapter"])
    log.info("%s: resuming after %d utterances", out_dir, state["done"])
    return int(state["done"]), rows[:state["done"]]


def _score(out_dir: Path, run: TtaRun, items: list[tuple[str, Any]], rows: list[str]) -> dict[str, Any]:
    hyps = {line.split("\t")[0]: line.rstrip("\n").split("\t")[6].split() for line in rows}
    refs = references(CutSet.from_cuts([c for _, c in items]))
    result = score(refs, hyps, out_dir)
    adapt_cpu = sum(float(line.split("\t")[1]) for line in rows)
    search_cpu = sum(float(line.split("\t")[2]) for line in rows)
    audio = sum(float(line.split("\t")[3]) for line in rows)
    summary = {"run": asdict(run), "system": run.system, "wer": result.line(), "utterances": len(rows),
               "audio_seconds": audio, "adapt_cpu_per_audio_second": adapt_cpu / audio,
               "search_cpu_per_audio_second": search_cpu / audio}
    log.info("%s: %s; adaptation %.3f CPU-s per audio second", out_dir, result.line(), adapt_cpu / audio)
    return summary
