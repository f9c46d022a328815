"""Stage 7 as units of work: one (system, seed, condition) adaptation each, independent of the
others so that a launcher can run them in parallel.

Layout (the recipe conventions for stages 5-8), with ``<name>`` = ``<system>.s<seed>`` per condition and
``<system>_pooled.s<seed>`` for the pooled adaptation on every condition's adaptation set:

    exp/adapt/<name>/adapted_<c>/{model.pt,adapt.json,config.yaml,.done}
    exp/adapt/<system>_pooled.s<seed>/{model.pt,adapt.json,config.yaml,.done}
    exp/decode/<name>/adapted_<c>/{ood_<c>,test}/   (decoded by the caller)
    exp/decode/<system>_pooled.s<seed>/{ood_<c>...,test}/

With ``lr_search: system`` the learning rates are chosen first, once per system, by a search
on the pooled adaptation sets with the first seed (the held-out slice, as in a unit):

    exp/adapt/lr/<system>/{rates.json,.done}

and every unit of the system reads its rates from there (an input of the unit's marker). With
``lr_search: fixed`` there is no search: a unit trains with its system's ``rates`` from the config.

Inputs: the baseline model, ``cuts_ood_adapt_<c>`` with features, the baseline's first-pass decode
dirs ``<pseudo-dir>/ood_adapt_<c>/`` (pseudo-labels), for neuron systems
``<saliency-dir>/<ref>/neurons.tsv`` (``ref`` = ``ood_adapt_<c>``, ``pooled`` for pooled units, or
the configured set), and for ``*_shift<NN>`` systems the adaptation sets' shift scores
(``neurosel.recipe.adapt_shift``, computed before the units). The adaptation sets' transcripts
are read only by ``transcript_labels``, for ``adapt_oracle``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from itertools import count
from pathlib import Path
from typing import Iterator

import torch
from lhotse import CutSet
from torch import nn

from neurosel import config as C
from neurosel.decode.run import load_cuts
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec
from neurosel.io import write_json
from neurosel.model import load_model, save_model
from neurosel.recipe import layout
from neurosel.recipe.adapt_shift import read_scores
from neurosel.recipe.adapt_systems import (NEURON_SYSTEMS, ORACLE, AdaptConfig, AdaptData, adapt_system, base_system,
                                           neuron_share, neuron_source)
from neurosel.recipe.layout import POOLED
from neurosel.recipe.neuron_table import read_neurons_tsv
from neurosel.recipe.pseudo_labels import (PseudoCtcDataset, merge_pseudo_labels, pseudo_label_report,
                                           read_pseudo_labels, select_pseudo_labels)
from neurosel.saliency.classify import neurons_of
from neurosel.stage import run_once
from neurosel.data.batches import load_bpe, load_cmvn, make_sampler

log = logging.getLogger("neurosel.adapt")



@dataclass(frozen=True)
class StagePaths:
    """Where stage 7 reads and writes."""

    model: Path
    lang: Path
    fbank: Path
    saliency: Path  # <saliency-dir>/<ref>/neurons.tsv
    pseudo: Path  # first-pass decode dir of the baseline (holds ood_adapt_<c>/)
    adapt: Path  # exp/adapt
    decode: Path  # exp/decode
    device: torch.device = torch.device("cpu")  # where the model adapts and decodes (not in any marker)


@dataclass(frozen=True)
class Unit:
    """One adaptation: ``system`` with ``seed`` on condition ``condition`` (or ``pooled``)."""

    system: str
    seed: int
    condition: str

    @property
    def name(self) -> str:
        """The system dir name: ``<system>.s<seed>`` or ``<system>_pooled.s<seed>``."""
        return layout.system_id(self.system, self.seed, pooled=self.condition == POOLED)

    def model_dir(self, adapt_root: Path) -> Path:
        """``exp/adapt/<name>/adapted_<c>`` or ``exp/adapt/<name>`` for a pooled unit."""
        return self._dir(adapt_root)

    def decode_dir(self, decode_root: Path) -> Path:
        """``exp/decode/<name>/adapted_<c>`` or ``exp/decode/<name>`` for a pooled unit."""
        return self._dir(decode_root)

    def _dir(self, root: Path) -> Path:
        return root / self.name if self.condition == POOLED else root / self.name / layout.adapted_name(self.condition)

    def adapt_sets(self, conditions: list[str]) -> list[str]:
        """The adaptation sets it trains on."""
        return [layout.adapt_set(c) for c in (conditions if self.condition == POOLED else [self.condition])]

    def test_sets(self, conditions: list[str]) -> list[str]:
        """The sets its model is decoded on: its condition's (or every) ``ood_<c>``, then ``test``."""
        conds = conditions if self.condition == POOLED else [self.condition]
        return [layout.ood_set(c) for c in conds] + [layout.TEST]


def list_units(cfg: AdaptConfig, conditions: list[str], seed: int) -> list[Unit]:
    """Every unit of the stage: systems x seeds x conditions, then the pooled systems x seeds."""
    seeds = [seed + i for i in range(cfg.num_seeds)]
    units = [Unit(s, k, c) for s in cfg.systems for k in seeds for c in conditions]
    return units + [Unit(s, k, POOLED) for s in cfg.pooled_systems for k in seeds]


def saliency_reference(unit: Unit, cfg: AdaptConfig) -> str:
    """The reference set whose ``neurons.tsv`` gives a unit's hyper/hypo neurons: a neuron-source
    variant's own set, else ``neurons_from``."""
    source = neuron_source(unit.system)
    if source is not None:
        return source[1]
    if cfg.neurons_from != "condition":
        return cfg.neurons_from
    return POOLED if unit.condition == POOLED else layout.adapt_set(unit.condition)


def load_neurons(path: Path, widths: list[int], classes: list[str],
                 percent: float | None = None) -> dict[int, torch.Tensor]:
    """The neurons of ``classes`` per FC layer from a ``neurons.tsv`` that must match ``widths``:
    the table's own classes, or with ``percent`` the top and bottom ``percent`` % of each layer by
    the table's on-rate (a neuron-share variant)."""
    table = read_neurons_tsv(path)
    layer_classes = table.layer_classes() if percent is None else table.classes_at_share(percent)
    if [len(c) for c in layer_classes] != widths:
        raise NeuroselError(f"{path}: layer widths {[len(c) for c in layer_classes]} do not match "
                            f"the model's FC widths {widths}")
    return neurons_of(layer_classes, tuple(classes))


def transcript_labels(cuts: CutSet, lang: Path) -> dict[str, list[int]]:
    """The TRUE transcripts as BPE ids, ``{cut_id: ids}`` (non-empty only). For ``adapt_oracle``,
    the upper bound, and nothing else."""
    sp = load_bpe(lang)
    out = {}
    for cut in cuts:
        if len(cut.supervisions) != 1 or cut.supervisions[0].text is None:
            raise NeuroselError(f"cut {cut.id}: the oracle needs exactly one supervision with text")
        ids = sp.encode(cut.supervisions[0].text, out_type=int)
        if ids:
            out[cut.id] = ids
    return out


def heldout_split(ids: list[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, held-out) utterance ids: the held-out slice is the ceil(fraction * n) ids first in
    SHA-1 order, the same for every system and seed. Needs at least two ids."""
    if len(ids) < 2:
        raise NeuroselError(f"only {len(ids)} usable adaptation utterance(s); need at least 2 "
                            "(one to train on, one held out to choose the learning rate)")
    ranked = sorted(ids, key=lambda u: hashlib.sha1(u.encode()).hexdigest())
    n = min(len(ids) - 1, max(1, math.ceil(fraction * len(ids))))
    return sorted(ranked[n:]), sorted(ranked[:n])


def make_data(cuts: CutSet, dataset: PseudoCtcDataset, train_ids: list[str], heldout_ids: list[str],
              max_duration: float, device: torch.device = torch.device("cpu")) -> AdaptData:
    """Endless seed-shuffled training batches over ``train_ids`` and fixed held-out batches, on
    ``device``."""
    train_cuts = cuts.subset(cut_ids=train_ids)
    heldout_cuts = sorted(cuts.subset(cut_ids=heldout_ids), key=lambda c: (-c.duration, c.id))

    def train(seed: int) -> Iterator:
        sampler = make_sampler(train_cuts, max_duration, shuffle=True, seed=seed)
        for epoch in count():
            sampler.set_epoch(epoch)
            for batch_cuts in sampler:
                yield dataset[batch_cuts].to(device)

    heldout, group, total = [], [], 0.0
    for cut in heldout_cuts + [None]:
        if group and (cut is None or total + cut.duration > max_duration):
            heldout.append(dataset[CutSet.from_cuts(group)].to(device))
            group, total = [], 0.0
        if cut is not None:
            group.append(cut)
            total += cut.duration
    return AdaptData(train=train, heldout=heldout)


def tune_units(cfg: AdaptConfig, seed: int) -> list[Unit]:
    """The learning-rate searches to run before the units (``lr_search: system``): one per system
    of ``systems`` and ``pooled_systems``, on the pooled adaptation sets with the first seed."""
    if cfg.lr_search != "system":
        return []
    return [Unit(s, seed, POOLED) for s in dict.fromkeys(cfg.systems + cfg.pooled_systems)]


def unit_inputs(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> list[Path]:
    """The files a unit's result depends on (for its ``.done`` marker)."""
    sets = unit.adapt_sets(conditions)
    inputs = [paths.model, layout.cmvn_path(paths.fbank)] + [layout.cuts_path(paths.fbank, s) for s in sets]
    if unit.system == ORACLE:
        inputs.append(layout.bpe_model(paths.lang))
    else:
        inputs += [paths.pseudo / s / name for s in sets for name in ("tokens.txt", "confidence.txt")]
    if base_system(unit.system) in NEURON_SYSTEMS:
        inputs.append(paths.saliency / saliency_reference(unit, cfg) / "neurons.tsv")
    if cfg.labels_of(unit.system).by == "shift":
        inputs += [layout.adapt_shift_scores_path(paths.adapt, s) for s in sets]
    return inputs


def unit_config(unit: Unit, cfg: AdaptConfig) -> dict:
    """What a unit's result depends on besides its input files (not the lists of other units): the
    pseudo-labels it keeps (without ``by`` when by confidence, as before ``by`` existed) and the
    shift score only for a ``*_shift<NN>`` system."""
    relevant = {k: v for k, v in C.to_dict(cfg).items()
                if k not in ("systems", "pooled_systems", "num_seeds", "num_threads", "rates", "shift_score")}
    labels = C.to_dict(cfg.labels_of(unit.system))
    if labels["by"] == "confidence":
        del labels["by"]
    else:
        relevant["shift_score"] = cfg.shift_score
    relevant["pseudo_labels"] = labels
    if cfg.lr_search == "fixed":  # its own system's rates only: another system's rates change nothing here
        relevant["rates"] = cfg.rates_of(unit.system)
    return {"unit": asdict(unit), "adapt": relevant}


def marker_inputs(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> list[Path]:
    """The inputs of a unit's marker: ``unit_inputs`` and, with ``lr_search: system``, its
    system's ``rates.json``."""
    extra = [layout.rates_path(paths.adapt, unit.system)] if cfg.lr_search == "system" else []
    return unit_inputs(unit, paths, cfg, conditions) + extra


def run_tune(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str], force: bool = False) -> bool:
    """Choose the learning rates of ``unit.system`` (a unit of ``tune_units``) and write them to
    ``layout.rates_path``, unless up to date. Returns True when it ran."""
    out = layout.rates_path(paths.adapt, unit.system).parent
    return run_once(f"choose the learning rates of {unit.system}", out, unit_config(unit, cfg),
                    unit_inputs(unit, paths, cfg, conditions), lambda: tune_unit(unit, paths, cfg, conditions),
                    force=force)


def run_unit(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str], force: bool = False) -> bool:
    """Adapt the baseline as ``unit`` says and write ``model.pt``, ``adapt.json`` and
    ``config.yaml`` to its model dir, unless up to date. Returns True when it ran."""
    out = unit.model_dir(paths.adapt)
    return run_once(f"adapt {unit.name} on {unit.condition}", out, unit_config(unit, cfg),
                    marker_inputs(unit, paths, cfg, conditions), lambda: adapt_unit(unit, paths, cfg, conditions),
                    force=force)


@dataclass
class UnitData:
    """What a unit (or a learning-rate search) trains from: the baseline, its FC spec, the
    neurons of neuron systems, the batches, and what the labels were."""

    model: nn.Module
    spec: FcSpec
    neurons: dict[int, torch.Tensor]
    data: AdaptData
    sets: list[str]
    labels: dict
    train_utterances: int
    heldout_utterances: int


def unit_data(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> UnitData:
    """Load the baseline, the labels (pseudo-labels; true transcripts for the oracle), the neurons
    and the train/held-out batches of ``unit``."""
    torch.set_num_threads(cfg.num_threads)
    model = load_model(paths.model)[0].to(paths.device)
    spec = model.fc_spec()
    sets = unit.adapt_sets(conditions)
    cuts = CutSet.from_cuts(c for s in sets for c in load_cuts(paths.fbank, s))
    report: dict
    if unit.system == ORACLE:
        tokens, weights = transcript_labels(cuts, paths.lang), None
        report = {"labels": "true transcripts (oracle upper bound)", "utterances": len(cuts), "kept": len(tokens)}
    else:
        labels = merge_pseudo_labels([read_pseudo_labels(paths.pseudo / s) for s in sets])
        missing = sorted(set(cuts.ids) - set(labels.tokens))
        if missing:
            raise NeuroselError(f"{paths.pseudo}: no pseudo-label for cut {missing[0]} ({len(missing)} missing)")
        selection = cfg.labels_of(unit.system)
        shift = ({u: v for s in sets for u, v in read_scores(s, paths, cfg).items()} if selection.by == "shift"
                 else None)
        kept = select_pseudo_labels(labels, selection, shift)
        tokens, weights = kept.tokens, kept.weights
        report = {"labels": "pseudo-labels",
                  **pseudo_label_report(labels, kept, cuts, [paths.pseudo / s for s in sets])}
        if selection is not cfg.pseudo_labels:  # a selection variant: what it kept by
            report["selection"] = C.to_dict(selection) | ({"shift_score": cfg.shift_score} if shift else {})
    neurons: dict[int, torch.Tensor] = {}
    if base_system(unit.system) in NEURON_SYSTEMS:
        tsv = paths.saliency / saliency_reference(unit, cfg) / "neurons.tsv"
        widths = [model.get_submodule(name).out_features for name in spec.linears]
        share = neuron_share(unit.system)
        neurons = load_neurons(tsv, widths, cfg.neuron_classes, None if share is None else share[1])
        log.info("%s: %d neurons selected from %s (per layer %s)", unit.name,
                 sum(int(v.numel()) for v in neurons.values()), tsv,
                 {str(k): int(v.numel()) for k, v in neurons.items()})
    train_ids, heldout_ids = heldout_split(sorted(tokens), cfg.heldout_fraction)
    data = make_data(cuts, PseudoCtcDataset(tokens, load_cmvn(layout.cmvn_path(paths.fbank)), weights),
                     train_ids, heldout_ids, cfg.max_duration, paths.device)
    return UnitData(model, spec, neurons, data, sets, report, len(train_ids), len(heldout_ids))


def read_rates(path: Path, system: str) -> list[float | None]:
    """The learning rate per phase of ``system`` from a ``rates.json`` of ``tune_unit``."""
    if not path.is_file():
        raise NeuroselError(f"{path}: no learning rates for {system} (lr_search: system runs the "
                            "searches first: neurosel.bin.adapt tune)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise NeuroselError(f"{path}: not JSON ({e})") from None
    rates = doc.get("rates") if isinstance(doc, dict) else None
    if not isinstance(rates, list) or doc.get("system") != system:
        raise NeuroselError(f"{path}: not the learning rates of {system}")
    return rates


def tune_unit(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> None:
    """The work of ``run_tune``: the system's phases with their grid searches on the pooled
    adaptation data; writes the chosen rate per phase (None for a skipped phase, which a unit
    that has neurons for it then searches itself) and the held-out loss of every rate tried."""
    start = time.perf_counter()
    d = unit_data(unit, paths, cfg, conditions)
    _, record = adapt_system(d.model, d.spec, unit.system, d.neurons, d.data, unit.seed, cfg)
    phases = [{k: p.get(k) for k in ("moves", "steps", "lr", "heldout_loss_by_lr", "skipped") if k in p}
              for p in record["phases"]]
    write_json(layout.rates_path(paths.adapt, unit.system),
               {"system": unit.system, "seed": unit.seed, "adaptation_sets": d.sets,
                "rates": [p.get("lr") for p in record["phases"]], "phases": phases,
                "seconds": round(time.perf_counter() - start, 2)})
    log.info("%s: learning rates %s chosen on %s in %.1f s", unit.system, [p.get("lr") for p in phases],
             ",".join(d.sets), time.perf_counter() - start)


def adapt_unit(unit: Unit, paths: StagePaths, cfg: AdaptConfig, conditions: list[str]) -> None:
    """The work of ``run_unit`` (no up-to-date check)."""
    start = time.perf_counter()
    rates = (read_rates(layout.rates_path(paths.adapt, unit.system), unit.system) if cfg.lr_search == "system"
             else list(cfg.rates_of(unit.system) or []) if cfg.lr_search == "fixed" else None)
    d = unit_data(unit, paths, cfg, conditions)
    adapted, record = adapt_system(d.model, d.spec, unit.system, d.neurons, d.data, unit.seed, cfg, rates=rates)
    out = unit.model_dir(paths.adapt)
    save_model(adapted.cpu(), out / "model.pt", adapt={"system": unit.system, "seed": unit.seed,
                                                   "condition": unit.condition})
    C.save(cfg, out / "config.yaml")
    record.update({"condition": unit.condition, "adaptation_sets": d.sets, "labels": d.labels,
                   "train_utterances": d.train_utterances, "heldout_utterances": d.heldout_utterances,
                   "saliency_reference": (saliency_reference(unit, cfg) if base_system(unit.system) in NEURON_SYSTEMS
                                          else None),
                   "lr_search": cfg.lr_search, "seconds": round(time.perf_counter() - start, 2)})
    write_json(out / "adapt.json", record)
    log.info("%s (%s): held-out loss %.4f -> %.4f in %.1f s", unit.name, unit.condition,
             record["heldout_loss_before"], record["heldout_loss_after"], record["seconds"])
