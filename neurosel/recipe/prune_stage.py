"""Stage 6 (prune) of a recipe: physically pruned copies of the baseline model, one per system.

Neurons are selected from one reference set's ``neurons.tsv`` (stage 5). ``reference_set: auto``
takes ``pooled`` (OOD adaptation audio, no transcripts) if it has any hyper/hypo neuron, else
``dev``; the choice and the reason are written into every ``prune.json``. Systems:

- ``prune_hyper``, ``prune_hypo``, ``prune_hyper_hypo``: the neurons of those classes;
- ``prune_random.s<seed>``: random neurons, the same count per layer as hyper+hypo;
- ``prune_<criterion>``: each criterion's lowest-scored neurons, the same count per layer;
- ``<system>_nofold``: the same removal without folding the removed neurons' mean output into
  the consumer's bias (folding is the default);
- ``curve_<order>_<pct>[.s<seed>]``: ``pct`` % of every FC layer removed, most extreme on-rate
  first (order ``hyper_hypo``: largest |on_rate - 0.5|), at random, or smallest incoming weight
  norm first (``magnitude``);
- ``sweep_hyper_hypo_<p>`` and ``sweep_random_<p>.s<seed>`` (opt-in, ``sweep_percents``): the selection
  size as a sweep (issue 16 part 3): the top and bottom ``p`` % of each layer by the reference
  set's on-rate (the recipe's percentile rule at another share), and random neurons of the same
  per-layer counts (once per ``random_seeds``); ``sweep_hyper_hypo_thr`` and
  ``sweep_random_thr.s<seed>`` (``sweep_threshold``) the fixed on-rate thresholds
  ``sweep_thresholds`` instead. They are decoded on ``dev`` too, so that the report can choose
  the size on dev WER (no test data);
- ``condprune_<selection>[.s<seed>]`` (opt-in, ``per_condition``): removal as unsupervised
  adaptation. For each OOD condition ``c`` the selection is made on ``ood_adapt_<c>``'s own
  ``neurons.tsv`` (unlabelled audio: stage 5 reads no transcript) by the same rule and per-layer
  counts as above (random: that table's hyper+hypo count per layer), folding that table's mean
  activations; one model per condition in ``condprune_<selection>/adapted_<c>/``, decoded on
  ``ood_<c>`` and in-domain ``test`` only, like stage 7's adapted systems;
- ``prune_hyper_hypo_from_<set>`` (opt-in, ``hyper_hypo_from``): the hyper+hypo removal with its
  neurons chosen from stage 5's statistics of ``<set>`` (e.g. ``dev``: in-domain audio) instead
  of the stage's one reference set, folding that set's mean activations: where the neurons are
  measured, against ``condprune_hyper_hypo`` (each condition's own audio).

A selection never empties a layer (the least extreme neuron of a fully selected layer is kept,
with a note). An empty selection (e.g. no hyper/hypo neuron in the reference set) still gives a
system: the unpruned model, with a note saying so.

Each system dir holds ``model.pt`` (with its ``index_map``: per FC layer the original indices of
the kept neurons), ``removed.tsv`` (layer, neuron of every removed neuron) and ``prune.json``
(counts, parameters, measured speed: median over repeats of the forward time of the pruned and
the unpruned model, whole and FC stack alone, over the same preloaded feature batches,
interleaved in the same process; feature loading is not timed; ``speed.device`` and
``speed.clock`` say where it ran: process CPU time on the CPU, synchronised wall time on a GPU).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import torch
from torch import Tensor, nn

from neurosel import config as C
from neurosel.errors import NeuroselError
from neurosel.fc import count_parameters, fc_widths
from neurosel.inference import INFERENCE_BATCH_SECONDS, FeatureBatch
from neurosel.io import write_json, write_text
from neurosel.model import load_model, save_model
from neurosel.prune.remove import remove_neurons
from neurosel.recipe import layout
from neurosel.recipe.neuron_table import NeuronTable, read_neurons_tsv
from neurosel.saliency.classify import ClassifyConfig, neurons_of
from neurosel.saliency.compare import select_lowest
from neurosel.saliency.criteria import magnitude_scores, random_scores

if TYPE_CHECKING:
    from neurosel.fc import FcSpec

CLASS_SELECTIONS = {"hyper": ("hyper",), "hypo": ("hypo",), "hyper_hypo": ("hyper", "hypo")}
CURVE_ORDERS = ("hyper_hypo", "random", "magnitude")
# PruneStageConfig keys that only choose which systems the stage builds
SYSTEM_CHOICE = ("random_seeds", "criteria", "nofold", "curve_fractions", "curve_orders", "curve_seeds",
                 "per_condition", "hyper_hypo_from", "sweep_percents", "sweep_threshold", "sweep_thresholds")
SWEEP_SELECTIONS = ("hyper_hypo", "random")


@dataclass
class PruneStageConfig:
    """``conf/prune.yaml``.

    ``criteria``: the ``prune_<criterion>`` systems (empty: every criterion column of the
    reference ``neurons.tsv`` but ``random``, which is ``prune_random``); ``nofold``: the
    selections (``hyper``, ``hypo``, ``hyper_hypo``, ``random`` or a criterion) also pruned
    without folding; ``curve_fractions`` of every FC layer removed for each of ``curve_orders``
    (random ones once per ``curve_seeds``); speed measured on the first ``speed_utterances`` cuts
    (by id) of ``speed_set``, median of ``speed_repeats`` runs. ``per_condition``: the selections
    (``hyper``, ``hypo``, ``hyper_hypo``, ``random`` with each of ``random_seeds``, or a criterion)
    also made from each condition's own ``ood_adapt_<c>`` statistics, the ``condprune_*`` systems
    (default none: not in the default run); ``hyper_hypo_from``: stage 5 sets whose statistics also
    choose a hyper+hypo removal, ``prune_hyper_hypo_from_<set>`` (default none). ``sweep_percents`` (whole percentages per class and
    layer) and ``sweep_threshold`` (the on-rate limits ``sweep_thresholds``: hyper, hypo): the
    ``sweep_*`` systems (default none).
    """

    reference_set: str = "auto"
    random_seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    criteria: list[str] = field(default_factory=list)
    nofold: list[str] = field(default_factory=lambda: ["hyper", "hypo", "hyper_hypo", "random"])
    curve_fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5])
    curve_orders: list[Literal["hyper_hypo", "random", "magnitude"]] = field(
        default_factory=lambda: list(CURVE_ORDERS))
    curve_seeds: list[int] = field(default_factory=lambda: [1])
    speed_set: str = "dev"
    speed_utterances: int = 20
    speed_repeats: int = 5
    max_duration: float = INFERENCE_BATCH_SECONDS
    per_condition: list[str] = field(default_factory=list)
    hyper_hypo_from: list[str] = field(default_factory=list)
    sweep_percents: list[float] = field(default_factory=list)
    sweep_threshold: bool = False
    sweep_thresholds: list[float] = field(default_factory=lambda: [0.95, 0.05])

    def __post_init__(self) -> None:
        if any(not (0 < p < 50 and float(p).is_integer()) for p in self.sweep_percents) \
                or len(set(self.sweep_percents)) != len(self.sweep_percents):
            raise ValueError(f"sweep_percents must be distinct whole percentages in (0, 50), got {self.sweep_percents}")
        if len(self.sweep_thresholds) != 2 or not 0 <= self.sweep_thresholds[1] < self.sweep_thresholds[0] <= 1:
            raise ValueError("sweep_thresholds is [hyper on-rate limit, hypo on-rate limit] with 0 <= hypo < hyper <= 1, "
                             f"got {self.sweep_thresholds}")
        if not self.random_seeds or not self.curve_seeds:
            raise ValueError("random_seeds and curve_seeds need at least one seed")
        bad = [f for f in self.curve_fractions if not 0.0 < f < 1.0]
        if bad:
            raise ValueError(f"curve_fractions must lie in (0, 1), got {bad[0]}")
        pcts = [round(100 * f) for f in self.curve_fractions]
        if len(set(pcts)) != len(pcts) or any(abs(100 * f - p) > 1e-9 for f, p in zip(self.curve_fractions, pcts)):
            raise ValueError("curve_fractions must be distinct whole percentages (0.05, 0.1, ...)")
        if self.speed_utterances < 1 or self.speed_repeats < 1:
            raise ValueError("speed_utterances and speed_repeats must be >= 1")

    def build_settings(self) -> dict[str, Any]:
        """The settings that change how a system is built, for its marker: not the keys that only
        choose which systems the stage has (each system's plan says its own selection, seed and
        fraction), so that a study adding systems (``conf/study_full.yaml``) or a run with fewer
        leaves every other system up to date."""
        return {k: v for k, v in C.to_dict(self).items() if k not in SYSTEM_CHOICE}


@dataclass(frozen=True)
class SystemPlan:
    """One pruned system: its id ``name``; ``selection`` is a class selection (``hyper``,
    ``hypo``, ``hyper_hypo``), ``random``, a criterion name, ``curve:<order>``, or
    ``sweep:<hyper_hypo|random>`` (``fraction``: the share per class and layer, or ``thresholds``:
    the on-rate limits); ``condition``: the OOD condition whose ``ood_adapt_<c>`` statistics select
    the neurons, ``reference``: the stage 5 set whose statistics do (both None: stage 6's one
    reference set)."""

    name: str
    selection: str
    fold: bool
    seed: int | None = None
    fraction: float | None = None
    condition: str | None = None
    thresholds: tuple[float, float] | None = None
    reference: str | None = None

    @property
    def source(self) -> str | None:
        """What chooses its neurons: None (stage 6's one reference set), the condition ``c``
        (``ood_adapt_<c>``) or ``set:<name>`` (``reference``)."""
        return self.condition if self.reference is None else f"set:{self.reference}"

    @property
    def folder(self) -> str:
        """The system's folder under the prune and decode roots: ``name``, or for a model of
        condition ``c`` ``name/adapted_<c>``."""
        return self.name if self.condition is None else f"{self.name}/{layout.adapted_name(self.condition)}"

    def hashed(self) -> dict:
        """The plan for its marker; ``condition``, ``thresholds`` and ``reference`` only when set, so
        that the markers of the systems made before they existed stay valid."""
        return C.hashed(self, "condition", "thresholds", "reference")


def decode_sets(plan: SystemPlan, sets: list[str]) -> list[str]:
    """The sets a pruned system is decoded on: all of ``sets``, except for a point of the pruning
    curve, which is plotted over the OOD sets only and so is decoded on the ``ood_*`` ones (all of
    ``sets`` when there are none), and for a model of condition ``c``, which is decoded on
    ``ood_<c>`` and in-domain ``test`` (those of ``sets``), as stage 7's adapted models are, and for
    a point of the size sweep, which is decoded on ``dev`` first (its size is chosen on dev WER)."""
    if plan.condition is not None:
        return layout.condition_sets(plan.condition, sets)
    if plan.selection.startswith("sweep:"):
        return [layout.DEV] + [s for s in sets if s != layout.DEV]
    ood = [s for s in sets if layout.is_ood_set(s)]
    return ood if plan.selection.startswith("curve:") and ood else list(sets)


def plan_systems(cfg: PruneStageConfig, table_criteria: list[str],
                 conditions: list[str] | None = None) -> list[SystemPlan]:
    """Every system of the stage, in a fixed order; ``table_criteria`` are the criterion columns
    of the reference ``neurons.tsv``; ``conditions`` the OOD conditions of the ``condprune_*``
    systems (one model per condition for each of ``cfg.per_condition``)."""
    criteria = cfg.criteria or [c for c in table_criteria if c != "random"]
    missing = [c for c in criteria + cfg.nofold + cfg.per_condition
               if c not in table_criteria and c not in CLASS_SELECTIONS and c != "random"]
    if missing:
        raise NeuroselError(f"prune config names '{missing[0]}', which is neither a neuron class selection "
                            f"nor a criterion column of neurons.tsv ({', '.join(table_criteria)})")
    plans = []
    for fold in (True, False):
        suffix = "" if fold else "_nofold"
        for sel in [*CLASS_SELECTIONS, "random", *criteria]:
            if not fold and sel not in cfg.nofold:
                continue
            if sel == "random":
                plans += [SystemPlan(layout.system_id(f"prune_random{suffix}", s), "random", fold, seed=s)
                          for s in cfg.random_seeds]
            else:
                plans.append(SystemPlan(f"prune_{sel}{suffix}", sel, fold))
    for order in cfg.curve_orders:
        for f in cfg.curve_fractions:
            name = f"curve_{order}_{round(100 * f)}"
            seeds = cfg.curve_seeds if order == "random" else [None]
            plans += [SystemPlan(layout.system_id(name, s), f"curve:{order}", True, s, f)
                      for s in seeds]
    points = [(f"{round(p)}", p / 100, None) for p in cfg.sweep_percents]
    if cfg.sweep_threshold:
        points.append(("thr", None, (float(cfg.sweep_thresholds[0]), float(cfg.sweep_thresholds[1]))))
    for tag, fraction, thresholds in points:
        for sel in SWEEP_SELECTIONS:
            plans += [SystemPlan(layout.system_id(f"sweep_{sel}_{tag}", seed), f"sweep:{sel}", True, seed,
                                 fraction, thresholds=thresholds)
                      for seed in (cfg.random_seeds if sel == "random" else [None])]
    plans += [SystemPlan(layout.selected_from("prune_hyper_hypo", ref), "hyper_hypo", True, reference=ref)
              for ref in cfg.hyper_hypo_from]
    for sel in cfg.per_condition:
        name = layout.condition_pruned(sel)
        for seed in cfg.random_seeds if sel == "random" else [None]:
            plans += [SystemPlan(layout.system_id(name, seed), sel, True, seed=seed, condition=c)
                      for c in conditions or []]
    return plans


def choose_reference(saliency_dir: str | Path, setting: str) -> tuple[str, str]:
    """(reference set, why): ``setting`` itself, or for ``auto`` pooled if it has hyper/hypo
    neurons, else dev."""
    saliency_dir = Path(saliency_dir)
    if setting != "auto":
        if not (saliency_dir / setting / "neurons.tsv").is_file():
            raise NeuroselError(f"{saliency_dir / setting / 'neurons.tsv'}: no such file (reference_set "
                                f"'{setting}' has no stage 5 output)")
        return setting, "reference_set in the config"
    pooled = saliency_dir / "pooled" / "neurons.tsv"
    if pooled.is_file():
        n = int((read_neurons_tsv(pooled).classes != "normal").sum())
        if n:
            return "pooled", f"auto: the pooled OOD adaptation statistics have {n} hyper/hypo neurons"
        return "dev", "auto: the pooled OOD adaptation statistics have no hyper/hypo neuron, so dev"
    return "dev", "auto: no pooled OOD statistics, so dev"


def set_reference(saliency_dir: str | Path, name: str) -> tuple[str, str]:
    """(reference set, why) of a ``prune_hyper_hypo_from_<name>`` system: stage 5's ``name``."""
    if not (Path(saliency_dir) / name / "neurons.tsv").is_file():
        raise NeuroselError(f"{Path(saliency_dir) / name / 'neurons.tsv'}: no such file (hyper_hypo_from names "
                            f"'{name}', which stage 5 did not measure)")
    return name, f"hyper_hypo_from: stage 5's statistics of {name}"


def condition_reference(saliency_dir: str | Path, condition: str) -> tuple[str, str]:
    """(reference set, why) of the ``condprune_*`` models of ``condition``: its own adaptation set."""
    name = layout.adapt_set(condition)
    if not (Path(saliency_dir) / name / "neurons.tsv").is_file():
        raise NeuroselError(f"{Path(saliency_dir) / name / 'neurons.tsv'}: no such file (per_condition needs "
                            f"stage 5's statistics of every adaptation set)")
    return name, f"per_condition: condition {condition}'s own unlabelled adaptation audio"


def _leave_one(remove: dict[int, Tensor], on_rate: list[Tensor], widths: list[int], notes: list[str]) -> None:
    """Keep the least extreme neuron of any layer that ``remove`` would empty (in place)."""
    for layer, idx in remove.items():
        if idx.numel() >= widths[layer]:
            keep = int(idx[torch.argmin((on_rate[layer][idx] - 0.5).abs())])
            remove[layer] = idx[idx != keep]
            notes.append(f"layer {layer}: all {widths[layer]} neurons selected; kept neuron {keep} "
                         "(least extreme on-rate) so that the layer is not emptied")


def select_neurons(plan: SystemPlan, table: NeuronTable, model: nn.Module) -> tuple[dict[int, Tensor], list[str]]:
    """Per FC layer the indices ``plan`` removes from ``model`` (the baseline), and notes."""
    spec = model.fc_spec()
    widths = fc_widths(model, spec)
    on_rate = [torch.from_numpy(v.copy()) for v in table.by_layer(table.on_rate)]
    if [v.numel() for v in on_rate] != widths:
        raise NeuroselError(f"neurons.tsv has layer widths {[v.numel() for v in on_rate]}, the model {widths}")
    notes: list[str] = []
    hyper_hypo = neurons_of(table.layer_classes(), CLASS_SELECTIONS["hyper_hypo"])
    _leave_one(hyper_hypo, on_rate, widths, notes)
    counts = [hyper_hypo[layer].numel() for layer in range(len(widths))]
    if plan.selection in CLASS_SELECTIONS:
        remove = neurons_of(table.layer_classes(), CLASS_SELECTIONS[plan.selection])
        _leave_one(remove, on_rate, widths, notes)
    elif plan.selection.startswith("sweep:"):
        classes = (table.classes_at_share(100 * (plan.fraction or 0.0)) if plan.thresholds is None else
                   table.classes_by(ClassifyConfig(mode="threshold", hyper_on_rate=plan.thresholds[0],
                                                   hypo_on_rate=plan.thresholds[1])))
        remove = neurons_of(classes, CLASS_SELECTIONS["hyper_hypo"])
        _leave_one(remove, on_rate, widths, notes)
        if plan.selection == "sweep:random":
            remove = select_lowest(random_scores(widths, plan.seed or 0), [remove[i].numel() for i in range(len(widths))])
    elif plan.selection == "random":
        remove = select_lowest(random_scores(widths, plan.seed or 0), counts)
    elif plan.selection.startswith("curve:"):
        counts = [min(round((plan.fraction or 0.0) * d), d - 1) for d in widths]
        order = plan.selection.split(":", 1)[1]
        scores = {"hyper_hypo": lambda: [-(p - 0.5).abs() for p in on_rate],
                  "random": lambda: random_scores(widths, plan.seed or 0),
                  "magnitude": lambda: magnitude_scores(model, spec)}[order]()
        remove = select_lowest(scores, counts)
    else:
        remove = select_lowest(table.criterion_scores()[plan.selection], counts)
    return remove, notes


def median_seconds(runs: list[Callable[[], object]], repeats: int,
                   device: torch.device = torch.device("cpu")) -> list[float]:
    """Median time of each callable; they run interleaved (order alternating between repeats, so
    that both see the same machine load) after one untimed warm-up run each.
    On the CPU, CPU time of this process, not wall time: the stage runs two jobs side by side on two
    cores, and the wall time of a single-threaded job then measured the other job as much as the
    model (pruned models smaller by 7% came out 0.89x-1.01x as fast in wall time). On a GPU, wall
    time up to the end of the device's work (the host's CPU time would measure only the launches)."""
    times: list[list[float]] = [[] for _ in runs]
    order = list(range(len(runs)))
    cuda = device.type == "cuda"
    clock = time.perf_counter if cuda else time.process_time
    for repeat in range(repeats + 1):
        for i in order if repeat % 2 == 0 else order[::-1]:
            start = clock()
            runs[i]()
            if cuda:
                torch.cuda.synchronize(device)
            if repeat:
                times[i].append(clock() - start)
    return [statistics.median(t) for t in times]


def fc_inputs(model: nn.Module, batches: list[FeatureBatch]) -> list[Tensor]:
    """Per batch the (frames, in) input of the first FC layer (the same for any pruning)."""
    captured: list[Tensor] = []
    first = model.get_submodule(model.fc_spec().linears[0])
    handle = first.register_forward_pre_hook(lambda module, args: captured.append(args[0].detach()))
    try:
        with torch.inference_mode():
            for b in batches:
                model(b.feats, b.feat_lens)
    finally:
        handle.remove()
    return captured


def run_fc_stack(model: nn.Module, spec: FcSpec, x: Tensor) -> Tensor:
    """The FC stack and its output layer alone: (frames, in) -> (frames, out); assumes what
    ``FcSpec`` describes, linear -> activation -> next linear (norms folded)."""
    for linear, act in zip(spec.linears, spec.activations):
        x = model.get_submodule(act)(model.get_submodule(linear)(x))
    return model.get_submodule(spec.consumers[-1])(x)


@torch.inference_mode()
def measure_speed(baseline: nn.Module, pruned: nn.Module, batches: list[FeatureBatch], repeats: int,
                  device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Forward time of the whole model and of its FC stack alone, pruned vs baseline (medians),
    both models and the batches on ``device`` (named in the result with the clock used)."""
    if not batches:
        raise NeuroselError("speed measurement: no feature batches (is the speed_set empty?)")
    models = [baseline.to(device).eval(), pruned.to(device).eval()]
    on_device = [b.to(device) for b in batches]
    inputs = fc_inputs(baseline, on_device)
    full = median_seconds([lambda m=m: [m(b.feats, b.feat_lens) for b in on_device] for m in models], repeats,
                          device)
    fc = median_seconds([lambda m=m: [run_fc_stack(m, m.fc_spec(), x) for x in inputs] for m in models], repeats,
                        device)
    return {"seconds": full[1], "seconds_baseline": full[0], "speedup": full[0] / full[1],
            "fc_seconds": fc[1], "fc_seconds_baseline": fc[0], "fc_speedup": fc[0] / fc[1],
            "repeats": repeats, "utterances": sum(len(b.cut_ids) for b in batches),
            "frames": int(sum(int(b.feat_lens.sum()) for b in batches)),
            "device": str(device), "clock": "wall (CUDA synchronised)" if device.type == "cuda" else "process CPU"}


def build_system(plan: SystemPlan, baseline_path: str | Path, reference: tuple[str, str],
                 table: NeuronTable, speed_batches: list[FeatureBatch], repeats: int,
                 out_dir: str | Path, device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Prune a copy of the baseline as ``plan`` says and write ``model.pt``, ``removed.tsv`` and
    ``prune.json`` into ``out_dir``; returns the ``prune.json`` content.

    ``model.pt`` keeps ``index_map`` ({FC layer: (kept,) original indices}) so that the pruned
    checkpoint alone says which baseline neuron each of its rows is: a user looking up a kept
    neuron's row of ``neurons.tsv``, or comparing its activations with the baseline's, needs it,
    and the checkpoint may travel without its prune dir. Nothing in the recipe reads it back."""
    out_dir = Path(out_dir)
    baseline, _ = load_model(baseline_path)
    model, _ = load_model(baseline_path)
    spec = model.fc_spec()
    widths_before = fc_widths(model, spec)
    remove, notes = select_neurons(plan, table, model)
    removed = [int(remove.get(layer, torch.empty(0)).numel()) for layer in range(len(widths_before))]
    if sum(removed) == 0:
        notes.append(f"no neuron selected ({plan.selection} on reference set '{reference[0]}' is empty): "
                     "this system is the unpruned model")
    fold_mean = ({layer: torch.from_numpy(m.copy()) for layer, m in enumerate(table.by_layer(table.mean_act))}
                 if plan.fold else None)
    model, spec, index_map = remove_neurons(model, spec, remove, fold_mean)
    save_model(model, out_dir / "model.pt", index_map=index_map)
    rows = ["layer\tneuron"] + [f"{layer}\t{int(j)}" for layer in sorted(remove) for j in remove[layer]]
    write_text(out_dir / "removed.tsv", "\n".join(rows) + "\n")
    params, base_params = count_parameters(model), count_parameters(baseline)
    info = {
        "system": plan.name, "plan": dataclasses.asdict(plan),
        "reference_set": reference[0], "reference_choice": reference[1],
        "removed": sum(removed), "removed_per_layer": removed,
        "widths_before": widths_before, "widths_after": fc_widths(model, spec),
        "parameters": params, "parameters_baseline": base_params, "parameter_ratio": params / base_params,
        "speed": measure_speed(baseline, model, speed_batches, repeats, device),
        "notes": notes,
    }
    write_json(out_dir / "prune.json", info)
    return info


SUMMARY_HEADER = ["system", "removed", "widths_after", "parameters", "parameter_ratio", "speedup", "fc_speedup",
                  "notes"]


def summary_rows(prune_dir: str | Path, plans: list[SystemPlan]) -> list[list[str]]:
    """One row (``SUMMARY_HEADER`` fields) per system, from its ``prune.json``."""
    rows = []
    for plan in plans:
        path = Path(prune_dir) / plan.folder / "prune.json"
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (did every prune job finish?)")
        info = json.loads(path.read_text(encoding="utf-8"))
        rows.append([plan.folder, str(info["removed"]), ",".join(map(str, info["widths_after"])),
                     str(info["parameters"]), f"{info['parameter_ratio']:.3f}",
                     f"{info['speed']['speedup']:.2f}", f"{info['speed']['fc_speedup']:.2f}", "; ".join(info["notes"]) or "-"])
    return rows


def format_rows(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned plain-text columns (the last column unpadded)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    return "\n".join("  ".join([c.ljust(w) for c, w in zip(r, widths)] + [r[-1]]) for r in [header, *rows])
