"""Loading a lang dir (stage 2 output) once for decoding many utterances."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import kaldifst
import sentencepiece as spm

from neurosel.errors import NeuroselError
from neurosel.lang.bpe import load_bpe
from neurosel.lang.lexicon import read_symbol_table


@dataclass
class DecodingGraph:
    """What decoding needs from a lang dir: the BPE model, ``words.txt`` by id, and the TLG
    (``None`` when loaded for greedy decoding only)."""

    lang_dir: Path
    sp: spm.SentencePieceProcessor
    id_to_word: dict[int, str]
    tlg: kaldifst.StdVectorFst | None

    @property
    def num_tokens(self) -> int:
        """CTC output dimension V (blank = 0)."""
        return self.sp.get_piece_size()


def load_graph(lang_dir: str | Path, with_tlg: bool = True) -> DecodingGraph:
    """Load ``bpe.model``, ``words.txt`` and (if ``with_tlg``) ``TLG.fst`` from ``lang_dir``."""
    lang_dir = Path(lang_dir)
    sp = load_bpe(lang_dir / "bpe.model")
    id_to_word = {i: w for w, i in read_symbol_table(lang_dir / "words.txt").items()}
    tlg = None
    if with_tlg:
        path = lang_dir / "TLG.fst"
        if not path.is_file():
            raise NeuroselError(f"{path}: no such file (run stage 2, lang)")
        tlg = kaldifst.StdVectorFst.read(str(path))  # returns None on a bad file
        if tlg is None:
            raise NeuroselError(f"{path}: not an OpenFst vector FST (rebuild with stage 2, lang)")
    return DecodingGraph(lang_dir, sp, id_to_word, tlg)
