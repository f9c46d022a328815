"""``neurons.tsv``: one row per FC neuron, tab separated, header
``layer neuron class on_rate mean_act entropy`` then one column per pruning criterion score.

``layer`` is the FC layer index (0 = input side), ``neuron`` the output index in that layer's
weight matrix. The ``mean_act`` and ``entropy`` criteria score a neuron by the statistic of the
same name, so their scores are the fixed columns and are not written twice; reading a table
gives them back as criterion scores. Floats are written with Python's shortest round-trip repr, so reading the table
back gives the same float64 values and the same statistics give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from neurosel.errors import NeuroselError
from neurosel.io import write_text
from neurosel.saliency.classify import CLASSES, ClassifyConfig, classify_values
from neurosel.saliency.stats import NeuronStats

FIXED_COLUMNS = ("layer", "neuron", "class", "on_rate", "mean_act", "entropy")


@dataclass
class NeuronTable:
    """The columns of ``neurons.tsv`` over all N neurons (arrays of shape (N,)), in file order;
    ``scores`` holds the criterion columns plus ``mean_act`` and ``entropy``."""

    layer: np.ndarray
    neuron: np.ndarray
    classes: np.ndarray
    on_rate: np.ndarray
    mean_act: np.ndarray
    entropy: np.ndarray
    scores: dict[str, np.ndarray]

    def by_layer(self, column: np.ndarray) -> list[np.ndarray]:
        """Split an (N,) column into per-layer arrays (D_l,)."""
        return [column[self.layer == layer] for layer in range(int(self.layer.max()) + 1)]

    def layer_classes(self) -> list[np.ndarray]:
        """Per layer the class array, as ``classify`` returns it."""
        return self.by_layer(self.classes)

    def classes_by(self, rule: ClassifyConfig) -> list[np.ndarray]:
        """Per layer the class array that ``rule`` gives on this table's on-rates and mean
        activations (another share or the fixed thresholds instead of the table's own classes)."""
        as_tensors = lambda col: [torch.from_numpy(v.copy()) for v in self.by_layer(col)]  # noqa: E731
        return classify_values(as_tensors(self.on_rate), as_tensors(self.mean_act), rule)

    def classes_at_share(self, percent: float) -> list[np.ndarray]:
        """Per layer the classes of the recipe's percentile rule at another share: the top and
        bottom ``percent`` % of each layer by on-rate are hyper and hypo (the size sweeps)."""
        return self.classes_by(ClassifyConfig(mode="percentile", percent=percent, percentile_by="on_rate",
                                              scope="layer"))

    def criterion_scores(self) -> dict[str, list[Tensor]]:
        """Per criterion the per-layer float64 score tensors, as ``score_all`` returns them (the
        criterion columns, then ``mean_act`` and ``entropy`` from the fixed columns)."""
        return {name: [torch.from_numpy(v.copy()) for v in self.by_layer(col)]
                for name, col in self.scores.items()}


def write_neurons_tsv(path: str | Path, stats: NeuronStats, classes: list[np.ndarray],
                      scores: dict[str, list[Tensor]]) -> None:
    """Write ``neurons.tsv`` atomically from statistics, classes and criterion scores (per layer
    (D_l,) each; criteria in the given order)."""
    widths = stats.widths
    for name, values in {"class": classes, **scores}.items():
        if [len(v) for v in values] != widths:
            raise NeuroselError(f"{path}: column '{name}' has per-layer lengths "
                                f"{[len(v) for v in values]}, layers have {widths}")
    fixed = {"on_rate": stats.on_rate, "mean_act": stats.mean_act, "entropy": stats.entropy}
    for name in set(scores) & set(FIXED_COLUMNS):
        if name not in fixed or not all(torch.equal(a.to(torch.float64), b)
                                        for a, b in zip(scores[name], fixed[name])):
            raise NeuroselError(f"{path}: criterion '{name}' differs from the fixed column of that name")
    extra = {name: values for name, values in scores.items() if name not in FIXED_COLUMNS}
    lines = ["\t".join((*FIXED_COLUMNS, *extra))]
    columns = [*fixed.values(), *extra.values()]
    for layer, width in enumerate(widths):
        floats = [col[layer].tolist() for col in columns]
        for j in range(width):
            lines.append("\t".join([str(layer), str(j), str(classes[layer][j]),
                                    *(repr(float(col[j])) for col in floats)]))
    write_text(path, "\n".join(lines) + "\n")


def read_neurons_tsv(path: str | Path) -> NeuronTable:
    """Read and check a ``neurons.tsv``; ``NeuroselError`` names the file and line of a fault."""
    path = Path(path)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file")
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines or tuple(lines[0].split("\t")[:len(FIXED_COLUMNS)]) != FIXED_COLUMNS:
        raise NeuroselError(f"{path}:1: header must start with {' '.join(FIXED_COLUMNS)}")
    header = lines[0].split("\t")
    criteria = header[len(FIXED_COLUMNS):]
    if len(set(header)) != len(header):
        raise NeuroselError(f"{path}:1: a column name appears twice")
    rows = []
    expected = (0, 0)
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(header):
            raise NeuroselError(f"{path}:{number}: {len(fields)} fields, header has {len(header)}")
        try:
            layer, neuron = int(fields[0]), int(fields[1])
            values = [float(x) for x in fields[3:]]
        except ValueError as e:
            raise NeuroselError(f"{path}:{number}: {e}") from e
        if fields[2] not in CLASSES:
            raise NeuroselError(f"{path}:{number}: unknown class '{fields[2]}'")
        if not ((layer, neuron) == expected or rows and (layer, neuron) == (expected[0] + 1, 0)):
            raise NeuroselError(f"{path}:{number}: neuron ({layer}, {neuron}) out of order")
        expected = (layer, neuron + 1)
        rows.append((layer, neuron, fields[2], values))
    if not rows:
        raise NeuroselError(f"{path}: no neuron rows")
    floats = np.array([r[3] for r in rows], dtype=np.float64)
    return NeuronTable(
        np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=np.int64),
        np.array([r[2] for r in rows], dtype="<U6"), floats[:, 0], floats[:, 1], floats[:, 2],
        {**{name: floats[:, 3 + i] for i, name in enumerate(criteria)},
         "mean_act": floats[:, 1], "entropy": floats[:, 2]})
