"""The CTC decoding graph TLG = T o min(det(L o G)) with kaldifst and kaldilm.

Built as icefall's ``local/prepare_lang_fst.py`` (the kaldifst path beside
``compile_hlg_using_openfst.py``) builds HLG, except where disambiguation symbols are removed:

* Labels are shifted by one so that 0 is epsilon: token ``i`` (piece id, blank = 0) has label
  ``i + 1``, which is what kaldi-decoder's ``DecodableCtc`` expects (it reads column
  ``label - 1`` of the log-probs). Token disambiguation symbol ``#k`` gets label
  ``num_tokens + k + 1``. Word labels are the ids of ``words.txt``.
* T is the standard CTC topology: one state per token, all final, state 0 (blank) the start; an
  arc from state i to state k reads token k and writes it, except the self-loop (i == k), which
  writes epsilon (a repeat), and every arc into blank writes epsilon.
* L spells each word with its pieces (plus its disambiguation symbol, see ``lexicon.py``), no
  optional silence; ``#0:#0`` self-loops let G's backoff arcs (``#0`` on input) through.
* G comes from the ARPA file via kaldilm's ``arpa2fst`` with ``#0`` on backoff arcs and ``<s>``,
  ``</s>`` turned into epsilon/final weights.
* LG = L o G, determinized (``determinize_star``) and minimized (``minimize_encoded``).
* T gets self-loops ``#k:#k`` on every state so that LG's disambiguation symbols pass through
  it; TLG = T o LG is determinized and minimized with them still on the input side, and only
  then are they replaced by epsilon (Kaldi's ``mkgraph.sh`` order: determinize, then
  ``fstrmsymbols``). icefall's ``prepare_lang_fst.py`` instead gives those loops an epsilon input,
  so that ``determinize_star`` removes the LM's backoff epsilons; measured here on a 466-word,
  300-piece, trigram setup that made TLG 1.1 M states / 5.0 M arcs (94 MB) against 11.9 k
  states / 72 k arcs (1.3 MB) this way, with the same decoding result and 2-4x faster decoding.
  The remaining epsilon arcs (LM backoff) are followed by the decoder without reading a frame.
"""

from __future__ import annotations

from pathlib import Path

import kaldifst
import kaldilm

from neurosel.errors import NeuroselError

from .lexicon import WORD_DISAMBIG
from .quiet import quiet_stderr


def ctc_topology(num_tokens: int) -> kaldifst.StdVectorFst:
    """T: the standard CTC topology over tokens 0..num_tokens-1 (labels shifted by one), with
    ``num_tokens ** 2`` arcs."""
    fst = kaldifst.StdVectorFst()
    for _ in range(num_tokens):
        fst.set_final(state=fst.add_state(), weight=0.0)
    fst.start = 0
    for i in range(num_tokens):
        for k in range(num_tokens):
            olabel = 0 if (k == i or k == 0) else k + 1
            fst.add_arc(state=i, arc=kaldifst.StdArc(ilabel=k + 1, olabel=olabel, weight=0.0,
                                                     nextstate=k))
    return fst


def lexicon_fst(entries: list[tuple[str, list[str]]], token_label: dict[str, int],
                word_ids: dict[str, int]) -> kaldifst.StdVectorFst:
    """L: a loop through state 0 spelling every ``(word, pieces)`` entry; the word is written on
    the first arc. ``token_label`` maps pieces and ``#k`` to their (shifted) labels."""
    fst = kaldifst.StdVectorFst()
    loop = fst.add_state()
    fst.start = loop
    fst.set_final(state=loop, weight=0.0)
    for word, pieces in entries:
        state = loop
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            nextstate = loop if last else fst.add_state()
            fst.add_arc(state=state, arc=kaldifst.StdArc(
                ilabel=token_label[piece], olabel=word_ids[word] if i == 0 else 0, weight=0.0,
                nextstate=nextstate))
            state = nextstate
    return fst


def grammar_fst(arpa_path: str | Path, words_txt: str | Path) -> kaldifst.StdVectorFst:
    """G from an ARPA file: word ids from ``words_txt``, ``#0`` on the backoff arcs."""
    try:
        with quiet_stderr():
            text = kaldilm.arpa2fst(str(arpa_path), disambig_symbol=WORD_DISAMBIG,
                                    read_symbol_table=str(words_txt))
    except RuntimeError as e:
        raise NeuroselError(f"{arpa_path}: cannot convert the ARPA LM to an FST ({e})") from e
    return kaldifst.compile(s=text, acceptor=False)


def compile_tlg(T: kaldifst.StdVectorFst, L: kaldifst.StdVectorFst, G: kaldifst.StdVectorFst,
                token_disambig: list[int], word_disambig0: int) -> kaldifst.StdVectorFst:
    """TLG from T, L and G (inputs are modified). ``token_disambig`` lists the labels of the
    token symbols ``#0, #1, ...``; ``word_disambig0`` is the id of ``#0`` in ``words.txt``."""
    kaldifst.add_self_loops(L, isyms=[token_disambig[0]], osyms=[word_disambig0])
    kaldifst.arcsort(L, sort_type="olabel")
    kaldifst.arcsort(G, sort_type="ilabel")
    LG = kaldifst.compose(L, G, connect=True)
    kaldifst.determinize_star(LG)
    kaldifst.minimize_encoded(LG)
    kaldifst.arcsort(LG, sort_type="ilabel")
    for state in range(T.num_states):
        for label in token_disambig:
            T.add_arc(state=state, arc=kaldifst.StdArc(ilabel=label, olabel=label, weight=0.0,
                                                       nextstate=state))
    kaldifst.arcsort(T, sort_type="olabel")
    TLG = kaldifst.compose(T, LG, connect=True)
    kaldifst.determinize_star(TLG)
    kaldifst.minimize_encoded(TLG)
    first_disambig = min(token_disambig)
    for state in kaldifst.StateIterator(TLG):
        for arc in kaldifst.ArcIterator(TLG, state):  # arcs are written back on assignment
            if arc.ilabel >= first_disambig:
                arc.ilabel = 0
    kaldifst.arcsort(TLG, sort_type="ilabel")
    return TLG


def num_arcs(fst: kaldifst.StdVectorFst) -> int:
    """Total number of arcs of ``fst``."""
    return sum(fst.num_arcs(s) for s in range(fst.num_states))
