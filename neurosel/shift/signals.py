"""The shift signals of a set of utterances: one value per utterance and signal, and the set's
value of each signal (frame-weighted over its utterances)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from neurosel.errors import NeuroselError


@dataclass(frozen=True)
class ShiftSignals:
    """Per-utterance shift signals of U utterances.

    ``utt_ids`` (U,) distinct ids; ``frames`` (U,) int64 frame counts (at the model's output frame
    rate, all > 0); ``values`` signal name -> (U,) float64, finite.
    """

    utt_ids: tuple[str, ...]
    frames: np.ndarray
    values: dict[str, np.ndarray]

    def __post_init__(self) -> None:
        u = len(self.utt_ids)
        if u == 0:
            raise NeuroselError("shift signals: the set has no utterances")
        if len(set(self.utt_ids)) != u:
            dup = next(i for i in self.utt_ids if self.utt_ids.count(i) > 1)
            raise NeuroselError(f"shift signals: utterance {dup!r} appears twice")
        if self.frames.shape != (u,) or bool((self.frames <= 0).any()):
            raise NeuroselError(f"shift signals: need {u} positive frame counts, got {self.frames!r}")
        for name, column in self.values.items():
            if column.shape != (u,) or not np.isfinite(column).all():
                raise NeuroselError(f"shift signals: {name!r} needs {u} finite values, got {column!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.values)

    def set_values(self) -> dict[str, float]:
        """Signal name -> the set's value: the frame-weighted mean over its utterances (for a
        frame average such as ``max_posterior``, the average over all the set's frames)."""
        weights = self.frames / self.frames.sum()
        return {name: float(np.dot(weights, column)) for name, column in self.values.items()}

    def with_values(self, extra: Mapping[str, Mapping[str, float]]) -> ShiftSignals:
        """A copy with more signals supplied by the caller, e.g. ``{"decoder_cost": {utt_id:
        cost per frame}}``; each needs a finite value for every utterance, and a new name."""
        values = dict(self.values)
        for name, per_utt in extra.items():
            if name in values:
                raise NeuroselError(f"shift signals: {name!r} is already a signal")
            missing = [u for u in self.utt_ids if u not in per_utt]
            if missing:
                raise NeuroselError(f"shift signals: {name!r} has no value for utterance {missing[0]!r} "
                                    f"({len(missing)} of {len(self.utt_ids)} missing)")
            column = np.array([float(per_utt[u]) for u in self.utt_ids], dtype=np.float64)
            bad = [u for u, v in zip(self.utt_ids, column) if not math.isfinite(v)]
            if bad:
                raise NeuroselError(f"shift signals: {name!r} of utterance {bad[0]!r} is not finite")
            values[name] = column
        return ShiftSignals(self.utt_ids, self.frames, values)

    @classmethod
    def concat(cls, parts: Sequence[ShiftSignals]) -> ShiftSignals:
        """The utterances of several parts (e.g. the jobs of one set) as one; all parts need the
        same signal names, and no utterance may be in two."""
        if not parts:
            raise NeuroselError("shift signals: nothing to concatenate")
        names = parts[0].names
        for part in parts[1:]:
            if part.names != names:
                raise NeuroselError(f"shift signals: parts have signals {names} and {part.names}")
        return cls(tuple(u for p in parts for u in p.utt_ids), np.concatenate([p.frames for p in parts]),
                   {n: np.concatenate([p.values[n] for p in parts]) for n in names})
