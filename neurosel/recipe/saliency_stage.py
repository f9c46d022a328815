"""Stage 5 (saliency) of a recipe: neuron statistics of the baseline model on every reference
set, hyper/hypo classes, every pruning criterion's scores, the criteria study and the overlap of
the selections made from different reference sets.

Reference sets: ``dev`` (in-domain), each ``ood_adapt_<c>`` (OOD adaptation audio; no transcript
is read) and ``pooled`` (all ``ood_adapt_*`` sets together, the exact merge of their statistics).
The Taylor criteria need a loss, so they are measured once on labelled in-domain data (a seeded
subset of ``taylor_set``, default ``train``) and the same Taylor scores go into every reference
set's table. Our CNN runs its FC stack on valid frames only, so activation hooks never see a padded
frame and every batch is collected with frame mask ``None``.

Writes, per reference set ``<saliency-dir>/<ref>/``: ``stats.pt`` (raw statistics),
``neurons.tsv``, ``classes.json`` (per-layer counts), ``criteria.json`` (the criteria study at a
budget of hyper+hypo neurons), ``config.yaml`` and PNG plots; and ``<saliency-dir>/overlap.json``
and ``overlap.tsv`` (per-layer Jaccard of the hyper+hypo selections of dev and each OOD set).
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from lhotse import CutSet

from neurosel import config as C
from neurosel.errors import NeuroselError
from neurosel.inference import INFERENCE_BATCH_SECONDS, FeatureBatch, feature_batches, model_device
from neurosel.io import write_json, write_text
from neurosel.model import CnnCtcModel
from neurosel.recipe import layout, saliency_plots
from neurosel.recipe.layout import DEV, POOLED
from neurosel.recipe.neuron_table import read_neurons_tsv, write_neurons_tsv
from neurosel.saliency.classify import ClassifyConfig, class_counts, classify, neurons_of
from neurosel.saliency.compare import compare_criteria, selection_jaccard
from neurosel.saliency.criteria import CRITERIA, CriterionInputs, score_all
from neurosel.saliency.stats import NeuronStats, StatsConfig, collect_stats, load_stats, merge, save_stats
from neurosel.saliency.taylor import TaylorConfig, TaylorStats, collect_taylor
from neurosel.data.batches import Batch, CtcDataset, make_sampler
from neurosel.train.loop import ctc_loss_sum

TAYLOR_CRITERIA = ("taylor1", "taylor2")
INPUT_NORM_CRITERIA = ("wanda",)  # read NeuronStats.input_norms


@dataclass
class SaliencyStageConfig:
    """``conf/saliency.yaml``.

    ``hist_max`` is the upper edge of the stored activation histogram per FC activation kind
    (values above it land in the overflow bin); ``criteria`` the columns of ``neurons.tsv``
    (``mean_act`` and ``entropy`` are the fixed columns); ``compare_scope`` whether the criteria
    study's budget is per layer or global; ``taylor_utterances`` of ``taylor_set`` (chosen with
    ``seed``) give the Taylor scores; ``seed`` also seeds the random criterion.
    """

    hist_bins: int = 50
    hist_min: float = 0.0
    hist_max: dict[str, float] = field(default_factory=lambda: {"sigmoid": 1.0, "relu": 10.0})
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    criteria: list[str] = field(default_factory=lambda: list(CRITERIA))
    compare_scope: Literal["layer", "global"] = "layer"
    outgoing_norm: Literal["l2", "l1"] = "l2"
    taylor: TaylorConfig = field(default_factory=TaylorConfig)
    taylor_set: str = "train"
    taylor_utterances: int = 200
    taylor_max_duration: float = 60.0
    max_duration: float = INFERENCE_BATCH_SECONDS
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = [c for c in self.criteria if c not in CRITERIA]
        if unknown:
            raise ValueError(f"unknown criterion '{unknown[0]}' (known: {', '.join(CRITERIA)})")
        if self.taylor_utterances < 1:
            raise ValueError(f"taylor_utterances must be >= 1, got {self.taylor_utterances}")

    def stats_config(self, activation: str) -> StatsConfig:
        """The histogram settings for a model whose FC activation is ``activation``; the FC inputs'
        norms too when a configured criterion reads them (``wanda``), so that ``stats.pt`` of a
        configuration without it stays as it was."""
        if activation not in self.hist_max:
            raise NeuroselError(f"saliency config: hist_max has no entry for activation '{activation}'")
        return StatsConfig(self.hist_bins, self.hist_min, self.hist_max[activation],
                           input_norms=any(c in INPUT_NORM_CRITERIA for c in self.criteria))

    def needs_taylor(self) -> bool:
        return any(c in TAYLOR_CRITERIA for c in self.criteria)


def reference_sets(fbank_dir: str | Path) -> list[str]:
    """The per-split reference sets: ``dev`` then every ``ood_adapt_<c>`` (``pooled`` is built
    from the latter by merging)."""
    return [DEV] + layout.adapt_sets(fbank_dir)


def _forward(model: torch.nn.Module, batch: FeatureBatch) -> Any:
    on_device = batch.to(model_device(model))
    return model(on_device.feats, on_device.feat_lens)


def reference_stats(model: CnnCtcModel, cuts: CutSet, cmvn: tuple[torch.Tensor, torch.Tensor],
                    cfg: SaliencyStageConfig) -> NeuronStats:
    """Statistics of every FC neuron over the frames of ``cuts`` (no transcripts read)."""
    spec = model.fc_spec()
    batches = ((b, None) for b in feature_batches(cuts, cmvn, cfg.max_duration))
    return collect_stats(model, spec, batches, cfg.stats_config(model.cfg.fc_activation), _forward)


def taylor_subset(cuts: CutSet, utterances: int, seed: int) -> CutSet:
    """A seeded choice of ``utterances`` cuts (all of them if there are fewer)."""
    ids = sorted(cuts.ids)
    chosen = sorted(random.Random(seed).sample(ids, min(utterances, len(ids))))
    return cuts.subset(cut_ids=chosen)


def _labelled_batches(cuts: CutSet, dataset: CtcDataset, max_duration: float,
                      device: torch.device) -> Iterator[tuple[Batch, None]]:
    for cut_batch in make_sampler(cuts, max_duration, shuffle=False):
        yield dataset[cut_batch].to(device), None


def taylor_stats(model: CnnCtcModel, cuts: CutSet, dataset: CtcDataset, cfg: SaliencyStageConfig) -> TaylorStats:
    """Taylor statistics of the summed CTC loss over the labelled ``cuts`` (in-domain only), on
    the model's device (the sums come back on the CPU)."""
    subset = taylor_subset(cuts, cfg.taylor_utterances, cfg.seed)
    batches = _labelled_batches(subset, dataset, cfg.taylor_max_duration, model_device(model))
    return collect_taylor(model, model.fc_spec(), batches,
                          lambda m, batch: ctc_loss_sum(m, batch)[0], cfg.taylor)


def analyse_reference(name: str, model: CnnCtcModel, stats: NeuronStats, taylor: TaylorStats | None,
                      cfg: SaliencyStageConfig, out_dir: str | Path) -> list[dict[str, Any]]:
    """Classify, score and compare the neurons of one reference set and write its outputs into
    ``out_dir`` (see the module docstring). Returns the criteria rows of ``criteria.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = classify(stats, cfg.classify)
    inputs = CriterionInputs(model, model.fc_spec(), stats=stats, taylor=taylor, seed=cfg.seed,
                             outgoing_norm=cfg.outgoing_norm)
    scores = score_all(inputs, cfg.criteria)
    comparison = compare_criteria(scores, classes, cfg.compare_scope)
    counts = class_counts(classes)
    save_stats(stats, out_dir / "stats.pt")
    write_neurons_tsv(out_dir / "neurons.tsv", stats, classes, scores)
    total = {c: sum(d[c] for d in counts) for c in ("hyper", "hypo", "normal")}
    frames = stats.layers[0].count
    # the on-rate thresholds' counts are kept beside a percentile selection, for the report
    threshold_counts = class_counts(classify(stats, dataclasses.replace(cfg.classify, mode="threshold")))
    definition = {"classify": dataclasses.asdict(cfg.classify), "threshold_counts": threshold_counts}
    write_json(out_dir / "classes.json", {"reference_set": name, "frames": frames, "widths": stats.widths,
                                          "counts": counts, "total": total, **definition})
    rows = [dataclasses.asdict(r) for r in comparison]
    write_json(out_dir / "criteria.json", {"reference_set": name, "budget": total["hyper"] + total["hypo"],
                                           "scope": cfg.compare_scope, "counts": counts, **definition,
                                           "rows": rows})
    C.save(cfg, out_dir / "config.yaml")
    saliency_plots.plot_on_rate_histograms(out_dir / "on_rate.png", stats.on_rate, classes, cfg.classify)
    saliency_plots.plot_mean_vs_entropy(out_dir / "mean_vs_entropy.png", stats.mean_act, stats.entropy, classes)
    saliency_plots.plot_criteria_overlap(out_dir / "criteria_overlap.png", comparison)
    saliency_plots.plot_class_counts(out_dir / "class_counts.png", classes)
    return rows


def pooled_stats(saliency_dir: str | Path, refs: list[str]) -> NeuronStats:
    """The exact merge of the ``stats.pt`` of the OOD adaptation sets among ``refs``."""
    parts = [load_stats(Path(saliency_dir) / r / "stats.pt") for r in refs if layout.is_adapt_set(r)]
    if not parts:
        raise NeuroselError(f"{saliency_dir}: no ood_adapt_* statistics to pool")
    out = parts[0]
    for part in parts[1:]:
        out = merge(out, part)
    return out


def selection_overlap(saliency_dir: str | Path, refs: list[str]) -> dict[str, Any]:
    """How the hyper+hypo selection of each OOD reference set overlaps the dev one (per-layer and
    overall Jaccard), and how many neurons are hyper under one condition and hypo under another
    (pooling such neurons can hide their saturation)."""
    saliency_dir = Path(saliency_dir)
    classes = {r: read_neurons_tsv(saliency_dir / r / "neurons.tsv").layer_classes() for r in refs}
    selections = {r: neurons_of(c) for r, c in classes.items()}
    if DEV not in selections:
        raise NeuroselError(f"{saliency_dir}: overlap needs the dev reference set")
    dev = selections[DEV]
    rows = []
    for ref in refs:
        if ref == DEV:
            continue
        sel = selections[ref]
        both = sum(np.intersect1d(dev[l].numpy(), sel[l].numpy()).size for l in dev)
        union = sum(dev[l].numel() for l in dev) + sum(sel[l].numel() for l in sel) - both
        rows.append({"reference_set": ref, "selected": [int(sel[l].numel()) for l in sorted(sel)],
                     "selected_dev": [int(dev[l].numel()) for l in sorted(dev)],
                     "jaccard_per_layer": selection_jaccard(dev, sel),
                     "jaccard": both / union if union else None})
    conds = [r for r in refs if layout.is_adapt_set(r)]
    opposite = []
    for layer in range(len(classes[DEV])):
        labels = np.stack([classes[r][layer] for r in conds]) if conds else np.empty((0, 0))
        flips = ((labels == "hyper").any(0) & (labels == "hypo").any(0)) if conds else np.zeros(0, bool)
        opposite.append(int(flips.sum()))
    return {"against": DEV, "rows": rows, "conditions": conds, "hyper_in_one_hypo_in_another": opposite}


def write_overlap(saliency_dir: str | Path, refs: list[str]) -> dict[str, Any]:
    """``selection_overlap`` written to ``overlap.json`` and a readable ``overlap.tsv``."""
    saliency_dir = Path(saliency_dir)
    doc = selection_overlap(saliency_dir, refs)
    write_json(saliency_dir / "overlap.json", doc)
    lines = ["reference_set\tselected\tselected_dev\tjaccard\tjaccard_per_layer"]
    for row in doc["rows"]:
        lines.append("\t".join([row["reference_set"], ",".join(map(str, row["selected"])),
                                ",".join(map(str, row["selected_dev"])), _fmt(row["jaccard"]),
                                ",".join(_fmt(j) for j in row["jaccard_per_layer"])]))
    write_text(saliency_dir / "overlap.tsv", "\n".join(lines) + "\n")
    return doc


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_table(saliency_dir: str | Path, refs: list[str]) -> str:
    """A plain-text table of hyper/hypo counts per reference set and of the criteria study."""
    saliency_dir = Path(saliency_dir)
    lines = [f"{'reference set':<26}{'hyper':>7}{'hypo':>7}{'normal':>8}  hyper/hypo per layer"]
    for ref in refs:
        doc = _read_json(saliency_dir / ref / "classes.json")
        t = doc["total"]
        per_layer = " ".join(f"{c['hyper']}/{c['hypo']}" for c in doc["counts"])
        lines.append(f"{ref:<26}{t['hyper']:>7}{t['hypo']:>7}{t['normal']:>8}  {per_layer}")
    for ref in refs:
        doc = _read_json(saliency_dir / ref / "criteria.json")
        lines.append(f"\ncriteria study on {ref} (budget {doc['budget']} neurons, {doc['scope']} scope)")
        lines.append(f"{'criterion':<12}{'hyper':>7}{'hypo':>7}{'normal':>8}{'prec':>7}{'recall':>7}{'jacc':>7}")
        for r in doc["rows"]:
            lines.append(f"{r['criterion']:<12}{_share(r['share_hyper']):>7}{_share(r['share_hypo']):>7}"
                         f"{_share(r['share_normal']):>8}{_share(r['precision']):>7}{_share(r['recall']):>7}"
                         f"{_share(r['jaccard']):>7}")
    return "\n".join(lines)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file (has stage 5 run for this reference set?)")
    return json.loads(path.read_text(encoding="utf-8"))
