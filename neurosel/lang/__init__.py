"""Stage 2 (lang): BPE units, lexicon, n-gram LM and the CTC decoding graph TLG."""

from .bpe import BLANK_ID, load_bpe, train_bpe
from .kneser_ney import NgramModel, estimate_kneser_ney, write_arpa
from .prepare import LangConfig, prepare_lang, read_transcripts

__all__ = ["BLANK_ID", "LangConfig", "NgramModel", "estimate_kneser_ney", "load_bpe",
           "prepare_lang", "read_transcripts", "train_bpe", "write_arpa"]
