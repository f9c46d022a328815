"""The adaptation systems and how one is run: phases of steps on a restricted set of parameters,
each with its learning rate chosen from a grid by the loss on a held-out slice of the adaptation
data, a NEW optimizer per phase.

Systems (names from DESIGN.md; each phase gets ``share`` of the same step budget):

==========================  ===============================================================
``adapt_all``               every parameter
``adapt_fc``                the FC linears (not the output layer)
``adapt_conv``              the convolutional front end
``adapt_last``              the last FC linear and the output layer
``adapt_selective``         only the hyper+hypo neurons (incoming row + bias; outgoing column
                            with ``outgoing``), every other entry bit-identical
``adapt_selective_full``    selective phase, then every parameter
``adapt_random_full``       random neurons with the same per-layer counts, then every parameter
``adapt_lhuc``              one learned amplitude per FC neuron (LHUC), folded into the weights
``adapt_oracle``            every parameter, trained on the TRUE transcripts (upper bound)
``adapt_entropy``           every parameter, minimising the per-frame entropy of the output
                            posteriors (TENT/SUTA-style, no labels at all); not run by default
==========================  ===============================================================

Adaptation-data selection variants (issue 18 part 4; ``selection_variant``): ``<system>_conf<NN>``
trains ``<system>`` on the NN% of each unit's usable adaptation utterances with the most confident
first pass, ``<system>_shift<NN>`` on the NN% least shifted by the configured per-utterance shift
score (``shift_score``; ``neurosel.recipe.adapt_shift``), both whatever ``pseudo_labels`` says;
``<system>`` itself keeps what ``pseudo_labels`` keeps (everything by default). A variant trains
with its system's phases and, under ``lr_search: fixed``, its system's rates unless ``rates``
names the variant. Not for the oracle (true transcripts) or ``adapt_entropy`` (no labels).

Neuron-share variants (issue 16 part 3; ``neuron_share``): ``<system>_n<PP>`` for a system that
moves selected neurons (``adapt_selective``, ``adapt_selective_full``, ``adapt_random_full``)
selects the top and bottom PP% of each FC layer by on-rate in its reference ``neurons.tsv``
instead of that table's own classes (the recipe's 5%): the selection size as a sweep, chosen by
the held-out pseudo-label loss after adaptation (stage 8). Same phases, budget and (under
``lr_search: fixed``) rates as the system.

Neuron-source variants (issue 16 part 3; ``neuron_source``): ``<system>_from_<set>`` for a system
that moves selected neurons takes its hyper/hypo neurons from stage 5's statistics of ``<set>``
(e.g. ``dev``, in-domain audio) instead of ``neurons_from`` (each condition's own adaptation audio
by default): where the neurons are measured, as a system of its own. Same phases, budget and
(under ``lr_search: fixed``) rates as the system.

A neuron phase with no neuron to move (no hyper/hypo neuron found) is skipped and recorded as
such; a following phase then gets the whole budget and the seed of a first phase, so
``adapt_selective_full`` and ``adapt_random_full`` without hyper/hypo neurons are exactly
``adapt_all``, and ``adapt_selective`` is the unadapted model.

Learning-rate search, per phase in order: run the phase once per rate of the grid from the same
starting model with the same batches and the same dropout masks, score each result by the mean
CTC loss per token on the held-out slice (pseudo-labels; true transcripts for the oracle only),
keep the best (ties: the smaller rate). The kept model is the one trained on the training slice;
the held-out slice is never trained on. ``lr_search`` says where the search runs: ``unit`` in
every (system, seed, condition) run; ``system`` once per system, on the pooled adaptation sets
with the first seed (``neurosel.recipe.adapt_units``), whose rates every run of the system then trains
with (``adapt_system(..., rates=...)``): one run per unit instead of one per rate of the grid;
``fixed``: no search, the config's ``rates`` (per system, one per phase), as a recipe records the
rates an earlier ``system`` search chose on the same adaptation data (the units then train exactly
as after that search, without its cost).
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from itertools import islice
from typing import Callable, Iterator, Literal

import torch
from torch import nn

from neurosel.adapt.lhuc import add_lhuc, fold_lhuc
from neurosel.adapt.select import (Selection, apply_selection, blind_selection, merge_selection, selection_size,
                                   train_mode)
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec
from neurosel.recipe import layout
from neurosel.recipe.pseudo_labels import PseudoLabelConfig
from neurosel.data.batches import Batch
from neurosel.train.loop import evaluate, train_step

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Phase:
    """One phase of a system: what moves (``all``/``fc``/``conv``/``last``, ``selective``,
    ``random``, ``lhuc``), its share of the step budget (the shares of a system sum to 1;
    ``None`` = the configured ``selective_share``, the rest to the next phase) and what it
    minimises (``ctc``: CTC loss on the labels; ``entropy``: output entropy, labels unused)."""

    moves: str
    share: float | None = 1.0
    objective: Literal["ctc", "entropy"] = "ctc"


SYSTEMS: dict[str, tuple[Phase, ...]] = {
    "adapt_all": (Phase("all"),),
    "adapt_fc": (Phase("fc"),),
    "adapt_conv": (Phase("conv"),),
    "adapt_last": (Phase("last"),),
    "adapt_selective": (Phase("selective"),),
    "adapt_selective_full": (Phase("selective", None), Phase("all", None)),
    "adapt_random_full": (Phase("random", None), Phase("all", None)),
    "adapt_lhuc": (Phase("lhuc"),),
    "adapt_oracle": (Phase("all"),),
    "adapt_entropy": (Phase("all", objective="entropy"),),
}
DEFAULT_SYSTEMS = [s for s in SYSTEMS if s != "adapt_entropy"]
ORACLE = "adapt_oracle"  # the one system trained on true transcripts
_VARIANT = re.compile(r"^(?P<system>adapt_[a-z_]+?)_(?P<by>conf|shift)(?P<percent>[1-9][0-9]?)$")
SELECTION_BY = {"conf": "confidence", "shift": "shift"}
_NEURON_VARIANT = re.compile(r"^(?P<system>adapt_[a-z_]+?)_n(?P<percent>[1-9][0-9]?)$")
NEURON_SYSTEMS = ("adapt_selective", "adapt_selective_full", "adapt_random_full")  # they move selected neurons


@dataclass(frozen=True)
class SelectionVariant:
    """``<system>_<conf|shift><NN>``: ``system`` trained on the top ``fraction`` of the adaptation
    utterances ranked ``by`` first-pass confidence or shift score (module docs)."""

    system: str
    by: Literal["confidence", "shift"]
    fraction: float


def selection_variant(name: str) -> SelectionVariant | None:
    """The variant a system name stands for, or None for a system of ``SYSTEMS`` (or no system)."""
    m = _VARIANT.match(name)
    if m is None or m["system"] not in SYSTEMS or m["system"] in (ORACLE, "adapt_entropy"):
        return None
    return SelectionVariant(m["system"], SELECTION_BY[m["by"]], int(m["percent"]) / 100)  # type: ignore[arg-type]


def neuron_share(name: str) -> tuple[str, float] | None:
    """(system, percent per class and layer) of a neuron-share variant ``<system>_n<PP>``, or None."""
    m = _NEURON_VARIANT.match(name)
    if m is None or m["system"] not in NEURON_SYSTEMS:
        return None
    return m["system"], float(m["percent"])


def neuron_source(name: str) -> tuple[str, str] | None:
    """(system, stage 5 set) of a neuron-source variant ``<system>_from_<set>``, or None."""
    source = layout.selection_source(name) if name.startswith("adapt_") else None
    return source if source is not None and source[0] in NEURON_SYSTEMS else None


def base_system(name: str) -> str:
    """The system of ``SYSTEMS`` whose phases ``name`` runs (itself, or a variant's system)."""
    variant, share, source = selection_variant(name), neuron_share(name), neuron_source(name)
    return (variant.system if variant is not None else share[0] if share is not None
            else source[0] if source is not None else name)


def known_system(name: str) -> bool:
    """A system of ``SYSTEMS`` or a selection, neuron-share or neuron-source variant of one."""
    return (name in SYSTEMS or selection_variant(name) is not None or neuron_share(name) is not None
            or neuron_source(name) is not None)


@dataclass
class AdaptConfig:
    """``conf/adapt.yaml``: which systems run, the budget and the search (see module docstring)."""

    systems: list[str] = field(default_factory=lambda: list(DEFAULT_SYSTEMS))
    pooled_systems: list[str] = field(default_factory=lambda: ["adapt_all", "adapt_selective_full"])
    num_seeds: int = 3
    steps: int = 120  # the step budget of every system
    selective_share: float = 0.5  # share of the budget for the neuron phase of *_full systems
    max_duration: float = 30.0  # seconds of audio per batch
    heldout_fraction: float = 0.15
    lr_grid: list[float] = field(default_factory=lambda: [1e-4, 3e-4, 1e-3])
    lr_grid_by_phase: dict[str, list[float]] = field(
        default_factory=lambda: {"selective": [1e-3, 3e-3, 1e-2], "random": [1e-3, 3e-3, 1e-2],
                                 "lhuc": [3e-3, 1e-2, 3e-2]})
    weight_decay: float = 0.0  # Adam's (L2) weight decay; frozen entries never see it
    grad_clip: float = 5.0
    neurons_from: str = "condition"  # saliency reference: "condition" (ood_adapt_<c>), or a set name, e.g. dev
    neuron_classes: list[str] = field(default_factory=lambda: ["hyper", "hypo"])
    outgoing: bool = False  # also move the selected neurons' outgoing columns
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    # what ranks the utterances of *_shift<NN> variants: a per-utterance signal of neurosel.shift
    # (pooled or <signal>.layer<l>) of the baseline's first pass, or predicted_wer (the shift
    # command's fitted predictor, exp/shift/predictor.json); neurosel.recipe.adapt_shift
    shift_score: str = "out_of_range_share"
    lr_search: Literal["unit", "system", "fixed"] = "unit"  # where the learning rates are chosen (module docstring)
    rates: dict[str, list[float | None]] = field(default_factory=dict)  # lr_search: fixed: per system, per phase
    num_threads: int = 1

    def __post_init__(self) -> None:
        unknown = [s for s in self.systems + self.pooled_systems if not known_system(s)]
        if unknown:
            raise ValueError(f"unknown system '{unknown[0]}' (known: {', '.join(SYSTEMS)}, their selection "
                             "variants <system>_conf<NN> and <system>_shift<NN>, and the neuron-share and "
                             f"neuron-source variants <system>_n<PP> and <system>_from_<set> of "
                             f"{', '.join(NEURON_SYSTEMS)})")
        if ORACLE in self.pooled_systems:
            raise ValueError(f"{ORACLE} cannot be pooled")
        if self.steps < 1 or self.num_seeds < 1 or self.max_duration <= 0:
            raise ValueError("steps, num_seeds and max_duration must be positive")
        if not 0.0 < self.selective_share < 1.0 or not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError("selective_share and heldout_fraction must be in (0, 1)")
        if self.lr_search not in ("unit", "system", "fixed"):
            raise ValueError(f"lr_search must be 'unit', 'system' or 'fixed', got '{self.lr_search}'")
        if self.lr_search == "fixed":
            for system in dict.fromkeys(self.systems + self.pooled_systems):
                given, phases = self.rates_of(system), SYSTEMS[base_system(system)]
                if given is None:
                    raise ValueError(f"lr_search: fixed needs rates.{system} (one learning rate per phase: "
                                     f"{', '.join(p.moves for p in phases)})")
                if len(given) != len(phases) or any(lr is not None and lr <= 0 for lr in given):
                    raise ValueError(f"rates.{system}: {len(phases)} positive learning rate(s) expected, one per "
                                     f"phase ({', '.join(p.moves for p in phases)}), got {given}")
        unknown = sorted(s for s in self.rates if not known_system(s))
        if unknown:
            raise ValueError(f"rates: unknown system '{unknown[0]}' (known: {', '.join(SYSTEMS)})")
        if not self.lr_grid or any(lr <= 0 for grid in [self.lr_grid, *self.lr_grid_by_phase.values()] for lr in grid):
            raise ValueError("learning-rate grids must be non-empty lists of positive rates")

    def rates_of(self, system: str) -> list[float | None] | None:
        """The configured rates of ``system`` (``lr_search: fixed``): its own, or for a selection
        variant without its own those of its system."""
        return self.rates.get(system, self.rates.get(base_system(system)))

    def labels_of(self, system: str) -> PseudoLabelConfig:
        """Which pseudo-labels ``system`` trains on: ``pseudo_labels``, or for a selection variant
        its own top fraction by confidence or shift."""
        variant = selection_variant(system)
        if variant is None:
            return self.pseudo_labels
        return PseudoLabelConfig(keep="top_fraction", top_fraction=variant.fraction, by=variant.by)

    def grid(self, moves: str) -> list[float]:
        """The learning-rate grid of a phase that moves ``moves``."""
        return self.lr_grid_by_phase.get(moves, self.lr_grid)


@dataclass
class AdaptData:
    """The batches a run trains and scores on: ``train(seed)`` an endless, seed-shuffled stream of
    training-slice batches; ``heldout`` the fixed held-out batches."""

    train: Callable[[int], Iterator[Batch]]
    heldout: list[Batch]


def phase_steps(phases: tuple[Phase, ...], budget: int, selective_share: float) -> list[int]:
    """Steps per phase: shares of ``budget`` (None = ``selective_share`` for the first phase, the
    rest for the second), rounded so that they sum to ``budget``."""
    shares = [p.share if p.share is not None else (selective_share if i == 0 else 1.0 - selective_share)
              for i, p in enumerate(phases)]
    steps = [round(budget * s) for s in shares[:-1]]
    return steps + [budget - sum(steps)]


def random_neurons(counts: dict[int, int], widths: list[int], seed: int) -> dict[int, torch.Tensor]:
    """Per FC layer ``counts[layer]`` distinct random neuron indices out of ``widths[layer]``, sorted."""
    g = torch.Generator().manual_seed(seed)
    return {layer: torch.randperm(widths[layer], generator=g)[:n].sort().values
            for layer, n in sorted(counts.items()) if n}


def open_phase(model: nn.Module, spec: FcSpec, moves: str, neurons: dict[int, torch.Tensor],
               outgoing: bool) -> tuple[list[nn.Parameter], dict]:
    """Make only what ``moves`` names trainable; returns the parameters for a new optimizer and a
    description of what moves (``moving``/``total`` entries and per-tensor counts)."""
    if moves == "lhuc":
        params = add_lhuc(model, spec)
        total = sum(p.numel() for p in model.parameters() if not p.requires_grad)
        return params, {"moving": sum(p.numel() for p in params), "total": total, "tensors": {"lhuc": len(params)}}
    if moves in ("selective", "random"):
        selection = Selection(neurons={k: v for k, v in neurons.items() if v.numel()}, outgoing=outgoing)
    else:
        selection = blind_selection(moves, spec)
    params = apply_selection(model, spec, selection)
    size = selection_size(model)
    return params, {"moving": size.moving, "total": size.total, "tensors": size.tensors}


def close_phase(model: nn.Module, spec: FcSpec, moves: str) -> None:
    """Fold LHUC scales or selection deltas back into plain weights, in place."""
    if moves == "lhuc":
        fold_lhuc(model, spec)
    else:
        merge_selection(model)


def entropy_step(model: nn.Module, batch: Batch, params: list[nn.Parameter], optimizer: torch.optim.Optimizer,
                 grad_clip: float) -> float:
    """One update lowering the mean entropy (nats) of the output posteriors over the valid output
    frames of ``batch`` (its targets are not used). Returns that entropy before the update."""
    optimizer.zero_grad(set_to_none=True)
    log_probs, out_lens = model(batch.feats, batch.feat_lens)  # (B, T', V), (B,)
    valid = torch.arange(log_probs.size(1))[None, :] < out_lens[:, None]
    frames = log_probs[valid]
    loss = -(frames.exp() * frames).sum(-1).mean()
    loss.backward()
    norm = nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else float("inf"))
    if torch.isfinite(norm):
        optimizer.step()
    return float(loss.detach())


def train_phase(model: nn.Module, spec: FcSpec, phase: Phase, neurons: dict[int, torch.Tensor],
                batches: Iterator[Batch], steps: int, lr: float, cfg: AdaptConfig) -> tuple[list[float], dict]:
    """One phase in place: select, NEW Adam optimizer, ``train_mode``, ``steps`` updates, merge.
    Returns the per-step losses (of the phase's objective) and what moved."""
    params, moved = open_phase(model, spec, phase.moves, neurons, cfg.outgoing)
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=cfg.weight_decay)
    step = train_step if phase.objective == "ctc" else entropy_step
    train_mode(model)  # not model.train(): it would put frozen BatchNorm layers in train mode
    losses = [step(model, batch, params, optimizer, grad_clip=cfg.grad_clip) for batch in islice(batches, steps)]
    close_phase(model, spec, phase.moves)
    model.eval()
    return losses, moved


def search_phase(model: nn.Module, spec: FcSpec, phase: Phase, neurons: dict[int, torch.Tensor],
                 data: AdaptData, steps: int, seed: int, cfg: AdaptConfig,
                 grid: list[float]) -> tuple[nn.Module, dict]:
    """Train a copy of ``model`` per learning rate of ``grid``; returns the copy with the lowest
    held-out loss and the phase record (chosen lr, held-out loss per lr, losses, moved)."""
    tried = []
    for lr in grid:
        candidate = copy.deepcopy(model)
        torch.manual_seed(seed)  # same dropout masks for every rate
        losses, moved = train_phase(candidate, spec, phase, neurons, data.train(seed), steps, lr, cfg)
        heldout = evaluate(candidate, data.heldout)
        log.info("phase %s lr %g: train loss %.3f -> %.3f, held-out loss %.4f",
                 phase.moves, lr, losses[0], losses[-1], heldout)
        tried.append((heldout, lr, candidate, losses, moved))
    heldout, lr, best, losses, moved = min(tried, key=lambda t: (t[0], t[1]))
    record = {"moves": phase.moves, "objective": phase.objective, "steps": steps, "lr": lr, "heldout_loss": heldout,
              "heldout_loss_by_lr": {f"{t[1]:g}": t[0] for t in tried}, "losses": losses, "moved": moved}
    return best, record


def adapt_system(model: nn.Module, spec: FcSpec, system: str, neurons: dict[int, torch.Tensor],
                 data: AdaptData, seed: int, cfg: AdaptConfig,
                 rates: list[float | None] | None = None) -> tuple[nn.Module, dict]:
    """Run ``system`` from ``model`` (left unchanged): returns the adapted model and a record
    ``{"system", "seed", "heldout_loss_before", "phases": [...], "losses": {phase: [...]}}``.

    ``neurons``: the hyper+hypo neurons per FC layer (for ``selective``; their per-layer counts
    for ``random``, drawn with ``seed``). ``rates``: a learning rate per phase of the system chosen
    elsewhere (``lr_search: system``); a phase without one (None, or no ``rates``) searches its
    grid."""
    if not known_system(system):
        raise NeuroselError(f"unknown adaptation system '{system}' (known: {', '.join(SYSTEMS)})")
    phases = list(SYSTEMS[base_system(system)])
    if rates is not None and len(rates) != len(phases):
        raise NeuroselError(f"{system}: {len(rates)} learning rates for {len(phases)} phases")
    widths = [spec_width(model, name) for name in spec.linears]
    if base_system(system) == "adapt_random_full":
        neurons = random_neurons({k: int(v.numel()) for k, v in neurons.items()}, widths, seed)
    record: dict = {"system": system, "seed": seed, "phases": [],
                    "heldout_loss_before": evaluate(model, data.heldout),
                    "neurons": {str(k): v.tolist() for k, v in neurons.items() if v.numel()}}
    steps = phase_steps(tuple(phases), cfg.steps, cfg.selective_share)
    current = model
    for i, (phase, n) in enumerate(zip(phases, steps)):
        if phase.moves in ("selective", "random") and not any(v.numel() for v in neurons.values()):
            record["phases"].append({"moves": phase.moves, "steps": 0,
                                     "skipped": "no neurons selected; phase skipped"})
            if i + 1 < len(steps):
                steps[i + 1] += n  # the next phase gets the whole budget
            continue
        ran = sum("skipped" not in p for p in record["phases"])  # a skipped phase does not shift seeds
        chosen = rates[i] if rates is not None else None
        grid = [chosen] if chosen is not None else cfg.grid(phase.moves)
        current, phase_record = search_phase(current, spec, phase, neurons, data, n, seed + ran, cfg, grid)
        phase_record["lr_from"] = ("grid search" if chosen is None
                                   else "config (lr_search: fixed)" if cfg.lr_search == "fixed" else "system search")
        record["phases"].append(phase_record)
    if current is model:
        current = copy.deepcopy(model)
    record["losses"] = {f"{i}:{p['moves']}": p.get("losses", []) for i, p in enumerate(record["phases"])}
    record["heldout_loss_after"] = evaluate(current, data.heldout)
    return current, record


def spec_width(model: nn.Module, name: str) -> int:
    """Output width of the ``nn.Linear`` named ``name``."""
    return int(model.get_submodule(name).out_features)
