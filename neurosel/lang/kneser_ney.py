"""Interpolated modified Kneser-Ney n-gram estimation (Chen and Goodman 1998), written as ARPA.

No maintained estimator installs here (the ``kenlm`` wheel has no ``lmplz``), so this is our own,
following what ``lmplz`` and SRILM's ``-kndiscount -interpolate`` compute:

* Sentences are padded as ``<s> w1 ... wk </s>`` with one ``<s>``, so n-grams at the start of a
  sentence are shorter than the model order (``<s> w1`` is a bigram only).
* The highest order uses raw counts. A lower-order n-gram ``g`` uses its continuation count, the
  number of distinct words ``v`` such that ``v g`` occurs; an n-gram that starts with ``<s>`` has
  no left extension and keeps its raw count.
* Order n has three discounts from the count-of-counts ``t_k`` of its adjusted counts:
  ``Y = t1 / (t1 + 2 t2)``, ``D_k = k - (k + 1) Y t_{k+1} / t_k`` for k = 1, 2, 3 (3 = "3 or more").
  A tiny corpus can make a count-of-counts zero or a discount fall outside ``(0, k)``; that
  discount then takes the default ``DEFAULT_DISCOUNT * k``, clipped into range (``lmplz`` would
  stop with an error instead).
* ``p(w | h) = max(c(h w) - D(c(h w)), 0) / c(h) + gamma(h) p(w | h')`` with
  ``gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3 N3+(h .)) / c(h)``, where ``c(h)`` is the sum of the
  adjusted counts of the n-grams ``h v`` and ``N_k(h .)`` counts those with adjusted count k.
  Unigrams interpolate with the uniform distribution over the vocabulary (every word and
  ``</s>``; ``<s>`` is never predicted). The vocabulary is closed: there is no ``<unk>``.
* In the ARPA file an n-gram's probability is the interpolated one and the backoff weight of a
  context ``h`` is ``gamma(h)``: for an unseen ``h w`` the interpolated model gives exactly
  ``gamma(h) p(w | h')``, which is the backoff rule.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from neurosel.errors import NeuroselError
from neurosel.io import atomic_path

BOS = "<s>"
EOS = "</s>"
DEFAULT_DISCOUNT = 0.5
Ngram = tuple[str, ...]


@dataclass
class NgramModel:
    """An estimated back-off model, natural (not log) values. ``prob[n - 1][g]`` is
    p(last word of g | rest of g) for every n-gram g of length n = 1..order that has a count;
    ``backoff[n - 1][h]`` is the backoff weight gamma(h) of a context h of length n = 1..order-1;
    ``discounts[n - 1]`` holds (D1, D2, D3+) of order n."""

    order: int
    vocab: list[str]
    prob: list[dict[Ngram, float]]
    backoff: list[dict[Ngram, float]]
    discounts: list[tuple[float, float, float]]


def count_ngrams(sentences: Iterable[Sequence[str]], order: int) -> list[Counter[Ngram]]:
    """Raw counts of every n-gram (n = 1..order) in the padded sentences: list of ``order``
    Counters, index n - 1 for length n. ``<s>`` alone is counted as a unigram context."""
    counts: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        tokens = (BOS, *sentence, EOS)
        for end in range(1, len(tokens) + 1):
            for n in range(1, min(order, end) + 1):
                counts[n - 1][tokens[end - n:end]] += 1
    return counts


def adjusted_counts(raw: list[Counter[Ngram]]) -> list[Counter[Ngram]]:
    """Kneser-Ney counts: raw counts at the highest order and for n-grams starting with ``<s>``,
    continuation counts (distinct left extensions) for the rest. The unigram ``<s>`` is dropped
    (it is a context only, never predicted)."""
    order = len(raw)
    adjusted = [Counter() for _ in range(order)]
    adjusted[-1] = Counter(raw[-1])
    for n in range(order - 1, 0, -1):
        continuation: Counter[Ngram] = Counter(g[1:] for g in raw[n])
        for g, c in raw[n - 1].items():
            adjusted[n - 1][g] = c if g[0] == BOS else continuation[g]
    adjusted[0].pop((BOS,), None)
    return adjusted


def discounts(counts: Counter[Ngram]) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts (D1, D2, D3+) from one order's count-of-counts."""
    t = Counter(c for c in counts.values() if c <= 4)
    y = t[1] / (t[1] + 2 * t[2]) if t[1] + 2 * t[2] > 0 else 0.0
    result = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * t[k + 1] / t[k] if t[k] > 0 and y > 0 else -1.0
        if not 0.0 < d < k:
            d = DEFAULT_DISCOUNT * k
        result.append(d)
    return result[0], result[1], result[2]


def estimate_kneser_ney(sentences: Iterable[Sequence[str]], order: int = 3) -> NgramModel:
    """Estimate an interpolated modified Kneser-Ney model of ``order`` from word sequences."""
    if order < 1:
        raise NeuroselError(f"LM order must be at least 1, got {order}")
    sentences = [list(s) for s in sentences]
    if not sentences:
        raise NeuroselError("no sentences to estimate a language model from")
    for i, s in enumerate(sentences):
        if BOS in s or EOS in s:
            raise NeuroselError(f"sentence {i + 1} contains the reserved word {BOS} or {EOS}")
    counts = adjusted_counts(count_ngrams(sentences, order))
    vocab = sorted({w for s in sentences for w in s} | {EOS})
    prob: list[dict[Ngram, float]] = []
    backoff: list[dict[Ngram, float]] = []
    all_discounts = []
    for n in range(1, order + 1):
        d = discounts(counts[n - 1])
        all_discounts.append(d)
        totals: dict[Ngram, float] = defaultdict(float)
        kinds: dict[Ngram, list[int]] = defaultdict(lambda: [0, 0, 0])
        for g, c in counts[n - 1].items():
            totals[g[:-1]] += c
            kinds[g[:-1]][min(c, 3) - 1] += 1
        gamma = {h: sum(di * ki for di, ki in zip(d, kinds[h])) / totals[h] for h in totals}
        p: dict[Ngram, float] = {}
        for g, c in counts[n - 1].items():
            h = g[:-1]
            # g[1:] always has a count: every occurrence of g contains one of g[1:]
            lower = 1.0 / len(vocab) if n == 1 else prob[n - 2][g[1:]]
            p[g] = max(c - d[min(c, 3) - 1], 0.0) / totals[h] + gamma[h] * lower
        prob.append(p)
        if n > 1:
            backoff.append(gamma)
    return NgramModel(order, vocab, prob, backoff, all_discounts)


def write_arpa(model: NgramModel, path: str | Path) -> None:
    """Write ``model`` as an ARPA file (log10 values, n-grams sorted), atomically. ``<s>`` is a
    unigram with log10 probability -99 and a backoff weight, as SRILM and KenLM write it."""
    sections: list[list[str]] = []
    for n in range(1, model.order + 1):
        rows = dict(model.prob[n - 1])
        if n == 1:
            rows[(BOS,)] = 0.0
        lines = []
        for g in sorted(rows):
            logp = -99.0 if g == (BOS,) else math.log10(rows[g])
            line = f"{logp:.7f}\t{' '.join(g)}"
            if n < model.order:
                bow = model.backoff[n - 1].get(g)
                if bow is not None and bow > 0.0:
                    line += f"\t{math.log10(bow):.7f}"
            lines.append(line)
        sections.append(lines)
    header = ["", "\\data\\"] + [f"ngram {n}={len(s)}" for n, s in enumerate(sections, start=1)]
    body = []
    for n, lines in enumerate(sections, start=1):
        body += ["", f"\\{n}-grams:", *lines]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(header + body + ["", "\\end\\", ""]), encoding="utf-8")
