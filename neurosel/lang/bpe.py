"""sentencepiece BPE over the training transcripts, laid out for CTC.

As in icefall's ``lang_bpe`` recipes: piece 0 is ``<blk>`` (so the CTC blank is 0 and the model's
output dimension is ``sp.get_piece_size()``), piece 1 is ``<sos/eos>``, piece 2 is ``<unk>``, and
there are no BOS/EOS pieces. Normalisation is ``identity`` so that decoding pieces gives back the
words exactly as written in the transcripts (the WFST decoder outputs words from ``words.txt``;
greedy decoding must agree with it). Training runs on one thread with a fixed seed and the model
is taken from memory, so the same text and seed give the same bytes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import sentencepiece as spm

from neurosel.errors import NeuroselError
from neurosel.io import atomic_path

from .quiet import quiet_stderr

BLANK = "<blk>"
BLANK_ID = 0
UNK_ID = 2


def train_bpe(sentences: Sequence[str], model_path: str | Path, vocab_size: int, seed: int = 0,
              model_type: str = "bpe") -> None:
    """Train a sentencepiece model on ``sentences`` (one transcript each, words separated by
    spaces) and write it to ``model_path`` atomically."""
    if not sentences:
        raise NeuroselError(f"{model_path}: no sentences to train the BPE model on")
    spm.set_random_generator_seed(seed)
    model = io.BytesIO()
    try:
        with quiet_stderr():  # its progress log is long and says nothing we use
            spm.SentencePieceTrainer.train(
                sentence_iterator=iter(sentences),
                model_writer=model,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                normalization_rule_name="identity",
                user_defined_symbols=[BLANK, "<sos/eos>"],
                unk_id=UNK_ID,
                bos_id=-1,
                eos_id=-1,
                num_threads=1,
                input_sentence_size=100_000_000,
                shuffle_input_sentence=False,
            )
    except RuntimeError as e:
        # sentencepiece says e.g. "Vocabulary size too high (5000). Please set it to a value <= 612."
        raise NeuroselError(f"{model_path}: sentencepiece training failed: {str(e).strip()}") from e
    with atomic_path(model_path) as tmp:
        tmp.write_bytes(model.getvalue())


def unknown_characters(sp: spm.SentencePieceProcessor, text: str) -> list[str]:
    """The characters of ``text`` (each once, in order) that ``sp`` can only spell as ``<unk>``:
    a CTC model would learn ``<unk>`` for them and no decoding could give them back."""
    unk = sp.unk_id()
    if unk not in sp.encode(text, out_type=int):
        return []
    return [c for c in dict.fromkeys(text) if not c.isspace() and unk in sp.encode(c, out_type=int)]


def load_bpe(model_path: str | Path) -> spm.SentencePieceProcessor:
    """Load a sentencepiece model; check that piece 0 is the CTC blank."""
    model_path = Path(model_path)
    if not model_path.is_file():
        raise NeuroselError(f"{model_path}: no such BPE model (run stage 2, lang)")
    sp = spm.SentencePieceProcessor()
    try:
        sp.load(str(model_path))
    except (OSError, RuntimeError) as e:
        raise NeuroselError(f"{model_path}: not a sentencepiece model ({e})") from e
    if sp.id_to_piece(BLANK_ID) != BLANK:
        raise NeuroselError(f"{model_path}: piece {BLANK_ID} is '{sp.id_to_piece(BLANK_ID)}', "
                            f"expected the CTC blank '{BLANK}'")
    return sp
