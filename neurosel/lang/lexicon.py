"""Word and token symbol tables and the BPE lexicon (each word -> its sentencepiece pieces).

Files, as icefall's ``lang_bpe`` dirs and k2 expect them:

* ``tokens.txt``: ``piece id`` for every sentencepiece piece, id 0 = ``<blk>``. Disambiguation
  symbols are not in it (its line count is the CTC output dimension); the graph gives ``#k`` the
  token id ``num_pieces + k``.
* ``words.txt``: ``<eps> 0``, the words sorted by code point from 1, then ``#0``, ``<s>``, ``</s>``.
* ``lexicon.txt``: ``word piece piece ...``; ``lexicon_disambig.txt`` adds ``#k`` where Kaldi's
  ``add_lex_disambig.pl`` would: after a spelling that is a proper prefix of another word's
  spelling or that two words share, so that L o G stays determinizable.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import sentencepiece as spm

from neurosel.errors import NeuroselError
from neurosel.io import write_text

from .bpe import UNK_ID

EPS = "<eps>"
WORD_DISAMBIG = "#0"
SPECIAL_WORDS = (EPS, WORD_DISAMBIG, "<s>", "</s>")

Lexicon = dict[str, list[str]]


def build_lexicon(words: Iterable[str], sp: spm.SentencePieceProcessor) -> Lexicon:
    """Spell each word with ``sp``: ``{word: [piece, ...]}``, sorted by word. A word that needs
    ``<unk>`` (a character the BPE model never saw) or collides with a reserved symbol is an
    error naming it."""
    lexicon: Lexicon = {}
    for word in sorted(set(words)):
        if word in SPECIAL_WORDS or word.startswith("#"):
            raise NeuroselError(f"word '{word}' is reserved in words.txt; remove it from the text")
        ids = sp.encode(word, out_type=int)
        if not ids or UNK_ID in ids:
            raise NeuroselError(f"word '{word}' cannot be spelled with the BPE model "
                                "(unknown character); train the BPE model on text containing it")
        lexicon[word] = [sp.id_to_piece(i) for i in ids]
    return lexicon


def add_disambig(lexicon: Lexicon) -> tuple[list[tuple[str, list[str]]], int]:
    """Kaldi's ``add_lex_disambig.pl`` for one spelling per word: returns ``[(word, pieces +
    maybe [#k])]`` and the number of disambiguation symbols including ``#0`` (used by G)."""
    spellings = Counter(tuple(p) for p in lexicon.values())
    prefixes = {tuple(p[:i]) for p in lexicon.values() for i in range(1, len(p))}
    next_index: dict[tuple[str, ...], int] = {}
    max_index = 0
    out = []
    for word, pieces in lexicon.items():
        key = tuple(pieces)
        if key in prefixes or spellings[key] > 1:
            next_index[key] = next_index.get(key, 0) + 1
            max_index = max(max_index, next_index[key])
            out.append((word, pieces + [f"#{next_index[key]}"]))
        else:
            out.append((word, list(pieces)))
    return out, max_index + 1


def word_table(lexicon: Lexicon) -> dict[str, int]:
    """``words.txt`` as a dict: ``<eps>`` 0, the words from 1, then ``#0``, ``<s>``, ``</s>``."""
    table = {EPS: 0}
    for word in lexicon:
        table[word] = len(table)
    for special in SPECIAL_WORDS[1:]:
        table[special] = len(table)
    return table


def write_symbol_table(path: str | Path, table: dict[str, int]) -> None:
    """Write ``symbol id`` lines in id order, atomically."""
    write_text(path, "".join(f"{s} {i}\n" for s, i in sorted(table.items(), key=lambda x: x[1])))


def read_symbol_table(path: str | Path) -> dict[str, int]:
    """Read a ``symbol id`` file; malformed or duplicate lines raise an error naming the line."""
    path = Path(path)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file")
    table: dict[str, int] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise NeuroselError(f"{path}:{n}: expected 'symbol id', got '{line}'")
        if parts[0] in table:
            raise NeuroselError(f"{path}:{n}: duplicate symbol '{parts[0]}'")
        table[parts[0]] = int(parts[1])
    return table


def token_table(sp: spm.SentencePieceProcessor) -> dict[str, int]:
    """``tokens.txt`` as a dict: every piece and its id."""
    return {sp.id_to_piece(i): i for i in range(sp.get_piece_size())}


def write_lexicon(path: str | Path, entries: Iterable[tuple[str, list[str]]]) -> None:
    """Write ``word piece piece ...`` lines, atomically."""
    write_text(path, "".join(f"{w} {' '.join(p)}\n" for w, p in entries))
