"""Word error rate with kaldialign, written as Kaldi/icefall decode dirs hold it.

``score(ref, hyp, out_dir)`` writes, each atomically:

* ``ref.txt``, ``hyp.txt``: Kaldi ``text`` (``utt-id word word ...``), sorted by id in byte
  order (``LC_ALL=C``); an empty transcript is the id alone.
* ``errs.txt``: the ``%WER`` line, the reference utterances that had no hypothesis (if any),
  then per utterance the four lines of Kaldi's ``wer_per_utt_details.txt``::

      utt1 ref   turn  on  the kitchen light
      utt1 hyp   turn  *** the kitchen lights
      utt1 op    C     D   C   C       S
      utt1 #csid 3 1 0 1

  (``C`` correct, ``S`` substitution, ``I`` insertion, ``D`` deletion; ``***`` marks the gap).
* ``wer``: one line ``%WER 12.34 [ 123 / 997, 10 ins, 20 del, 93 sub ]``.

An utterance of ``ref`` missing from ``hyp`` counts as all deletions and is listed in
``errs.txt``; an utterance of ``hyp`` missing from ``ref`` is an error (it cannot be scored).
With no reference words at all, the WER is ``100 * errors`` (errors over one word) rather than
a division by zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import kaldialign

from neurosel.data.kaldi_dir import read_table
from neurosel.errors import NeuroselError
from neurosel.io import write_text

log = logging.getLogger(__name__)

_EPS = "<eps>"
_GAP = "***"


@dataclass
class WerResult:
    """Corpus-level counts; ``wer`` in percent. ``missing`` lists reference utterances that had
    no hypothesis (counted as deletions)."""

    errors: int
    insertions: int
    deletions: int
    substitutions: int
    ref_words: int
    wer: float
    missing: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The Kaldi ``%WER`` line."""
        return (f"%WER {self.wer:.2f} [ {self.errors} / {self.ref_words}, {self.insertions} ins, "
                f"{self.deletions} del, {self.substitutions} sub ]")


def read_text(path: str | Path) -> dict[str, list[str]]:
    """A Kaldi ``text`` file as ``{utt_id: words}``; lines may have no words. Bad UTF-8 or a
    duplicate id raises an error naming the file and line."""
    return {k: v.split() for k, v in read_table(Path(path), allow_empty_value=True,
                                                must_sort=False).items()}


def score(ref: dict[str, list[str]], hyp: dict[str, list[str]], out_dir: str | Path) -> WerResult:
    """Align every utterance of ``ref`` with its hypothesis, write the four files to ``out_dir``
    and return the totals."""
    extra = sorted(set(hyp) - set(ref), key=str.encode)
    if extra:
        raise NeuroselError(f"hypothesis for utterance '{extra[0]}' has no reference "
                            f"({len(extra)} such utterances)")
    ids = sorted(ref, key=str.encode)
    missing = [u for u in ids if u not in hyp]
    totals = {"ins": 0, "del": 0, "sub": 0}
    details = []
    for utt in ids:
        r, h = ref[utt], hyp.get(utt, [])
        counts = kaldialign.edit_distance(r, h)
        for k in totals:
            totals[k] += counts[k]
        details += _utterance_details(utt, r, h, counts)
    ref_words = sum(len(ref[u]) for u in ids)
    errors = sum(totals.values())
    result = WerResult(errors=errors, insertions=totals["ins"], deletions=totals["del"],
                       substitutions=totals["sub"], ref_words=ref_words,
                       wer=100.0 * errors / max(ref_words, 1), missing=missing)
    out_dir = Path(out_dir)
    write_text(out_dir / "ref.txt", _kaldi_text(ref, ids))
    write_text(out_dir / "hyp.txt", _kaldi_text(hyp, sorted(hyp, key=str.encode)))
    header = [result.line()]
    if missing:
        log.warning("%d of %d utterances have no hypothesis (counted as deletions), e.g. %s",
                    len(missing), len(ids), missing[0])
        header.append(f"# {len(missing)} reference utterances have no hypothesis and count as "
                      f"deletions: {' '.join(missing)}")
    write_text(out_dir / "errs.txt", "\n".join(header + [""] + details) + "\n")
    write_text(out_dir / "wer", result.line() + "\n")
    return result


def _kaldi_text(table: dict[str, list[str]], ids: list[str]) -> str:
    return "".join(" ".join([u, *table[u]]) + "\n" for u in ids)


def _utterance_details(utt: str, ref: list[str], hyp: list[str], counts: dict) -> list[str]:
    """Kaldi's per-utterance ``ref``/``hyp``/``op``/``#csid`` lines, columns aligned."""
    pairs = kaldialign.align(ref, hyp, _EPS)
    rows: list[list[str]] = [[], [], []]
    for r, h in pairs:
        op = "I" if r == _EPS else "D" if h == _EPS else "C" if r == h else "S"
        r, h = (_GAP if r == _EPS else r), (_GAP if h == _EPS else h)
        width = max(len(r), len(h))
        rows[0].append(r.ljust(width))
        rows[1].append(h.ljust(width))
        rows[2].append(op.ljust(width))
    correct = sum(r == h for r, h in pairs)
    lines = [f"{utt} {tag:<5} {' '.join(row)}".rstrip() for tag, row in zip(("ref", "hyp", "op"), rows)]
    lines.append(f"{utt} #csid {correct} {counts['sub']} {counts['ins']} {counts['del']}")
    return lines
