"""Stage 2: from training transcripts to a lang dir with everything decoding and training need.

``prepare_lang(text_files, lang_dir, cfg)`` writes, each file atomically:

=======================  ==============================================================
``bpe.model``            sentencepiece BPE, piece 0 = ``<blk>`` (see ``bpe.py``)
``tokens.txt``           ``piece id``
``words.txt``            ``<eps> 0``, words, ``#0``, ``<s>``, ``</s>``
``lexicon.txt``          ``word piece ...``; ``lexicon_disambig.txt`` with ``#k`` added
``lm.arpa``              interpolated modified Kneser-Ney n-gram (``kneser_ney.py``)
``G.fst``, ``TLG.fst``   OpenFst binaries (``graph.py``); TLG is the decoding graph
``lang.yaml``            the resolved configuration
=======================  ==============================================================

The work is split in steps (bpe, lexicon, lm, graph). Each step records a hash of its config
and input files in ``.steps.json`` after its outputs are in place, so a rerun after a crash or a
config change redoes only the steps whose hash changed or whose outputs are missing.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import kaldifst

from neurosel import config as C
from neurosel.data.kaldi_dir import read_table
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path, write_json
from neurosel.stage import fingerprint

from .bpe import load_bpe, train_bpe
from .graph import compile_tlg, ctc_topology, grammar_fst, lexicon_fst, num_arcs
from .kneser_ney import estimate_kneser_ney, write_arpa
from .lexicon import (SPECIAL_WORDS, add_disambig, build_lexicon, read_symbol_table, token_table, word_table,
                      write_lexicon, write_symbol_table)

log = logging.getLogger(__name__)

STEPS_FILE = ".steps.json"


@dataclass
class LangConfig:
    """Stage 2 configuration (``conf/lang.yaml``). ``vocab_size`` is the number of
    sentencepiece pieces including ``<blk>``, ``<sos/eos>`` and ``<unk>`` (the CTC output
    dimension); ``lm_order`` the n-gram order of the LM in the decoding graph."""

    vocab_size: int = 300
    model_type: Literal["bpe", "unigram"] = "bpe"
    lm_order: int = 3
    seed: int = 0
    # another lang dir whose bpe.model to use as it is instead of training one (vocab_size and
    # model_type then do not apply): a model trained with it (stage 3's init) keeps its output units;
    # the lexicon, LM and graph are built over this recipe's text with it
    bpe_from: str = ""

    def __post_init__(self) -> None:
        if self.vocab_size < 4:
            raise ValueError(f"vocab_size must be at least 4, got {self.vocab_size}")
        if self.lm_order < 1:
            raise ValueError(f"lm_order must be at least 1, got {self.lm_order}")


def read_transcripts(text_files: Sequence[str | Path]) -> list[str]:
    """Transcripts (words only) of Kaldi ``text`` files, in file order. A line without words,
    or with bytes that are not UTF-8, raises an error naming the file and line; a word that is
    a symbol of ``words.txt`` (``<eps>``, ``<s>``, ``</s>``, ``#...``) one naming the utterance."""
    sentences = []
    for path in text_files:
        table = read_table(Path(path), must_sort=False)
        for utt, transcript in table.items():
            words = transcript.split()
            reserved = [w for w in words if w in SPECIAL_WORDS or w.startswith("#")]
            if reserved:
                raise NeuroselError(f"{path}: utterance '{utt}': '{reserved[0]}' is a reserved "
                                    "symbol, not a word")
            sentences.append(" ".join(words))
    if not sentences:
        raise NeuroselError(f"{', '.join(map(str, text_files))}: no transcripts")
    return sentences


def prepare_lang(text_files: str | Path | Sequence[str | Path], lang_dir: str | Path,
                 cfg: LangConfig) -> dict[str, int]:
    """Build the lang dir from the transcripts of ``text_files``; returns sizes (pieces, words,
    states and arcs of G and TLG) for logging."""
    files = [Path(text_files)] if isinstance(text_files, (str, Path)) else [Path(p) for p in text_files]
    lang_dir = Path(lang_dir)
    lang_dir.mkdir(parents=True, exist_ok=True)
    sentences = read_transcripts(files)
    steps = _Steps(lang_dir)
    d = lang_dir

    if cfg.bpe_from:
        source = Path(cfg.bpe_from) / "bpe.model"
        steps.run("bpe", {"bpe_from": str(source)}, [source], [d / "bpe.model"],
                  lambda: copy_bpe(source, d / "bpe.model"))
    else:
        steps.run("bpe", {"vocab_size": cfg.vocab_size, "model_type": cfg.model_type, "seed": cfg.seed},
                  files, [d / "bpe.model"],
                  lambda: train_bpe(sentences, d / "bpe.model", cfg.vocab_size, cfg.seed, cfg.model_type))

    def lexicon_step() -> None:
        sp = load_bpe(d / "bpe.model")
        lexicon = build_lexicon((w for s in sentences for w in s.split()), sp)
        entries, _ = add_disambig(lexicon)
        write_symbol_table(d / "tokens.txt", token_table(sp))
        write_symbol_table(d / "words.txt", word_table(lexicon))
        write_lexicon(d / "lexicon.txt", lexicon.items())
        write_lexicon(d / "lexicon_disambig.txt", entries)

    steps.run("lexicon", {}, files + [d / "bpe.model"],
              [d / n for n in ("tokens.txt", "words.txt", "lexicon.txt", "lexicon_disambig.txt")],
              lexicon_step)
    steps.run("lm", {"lm_order": cfg.lm_order}, files, [d / "lm.arpa"],
              lambda: write_arpa(estimate_kneser_ney((s.split() for s in sentences), cfg.lm_order),
                                 d / "lm.arpa"))
    steps.run("graph", {}, [d / n for n in ("lm.arpa", "words.txt", "tokens.txt",
                                            "lexicon_disambig.txt")],
              [d / "G.fst", d / "TLG.fst"], lambda: build_graph(d))
    C.save(cfg, d / "lang.yaml")
    tlg = kaldifst.StdVectorFst.read(str(d / "TLG.fst"))
    g = kaldifst.StdVectorFst.read(str(d / "G.fst"))
    return {"pieces": len(read_symbol_table(d / "tokens.txt")),
            "words": len(_read_lexicon(d / "lexicon.txt")),
            "G_states": g.num_states, "G_arcs": num_arcs(g),
            "TLG_states": tlg.num_states, "TLG_arcs": num_arcs(tlg)}


def copy_bpe(source: Path, path: Path) -> None:
    """``source`` (another lang dir's ``bpe.model``), checked to load with ``<blk>`` as piece 0,
    copied to ``path``."""
    sp = load_bpe(source)
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    log.info("BPE model copied from %s (bpe_from): %d pieces", source, sp.get_piece_size())


def build_graph(lang_dir: Path) -> None:
    """G.fst and TLG.fst from ``lm.arpa``, ``words.txt``, ``tokens.txt`` and
    ``lexicon_disambig.txt`` in ``lang_dir``."""
    tokens = read_symbol_table(lang_dir / "tokens.txt")
    words = read_symbol_table(lang_dir / "words.txt")
    entries = _read_lexicon(lang_dir / "lexicon_disambig.txt")
    num_tokens = len(tokens)
    num_disambig = 1 + max((int(p[-1][1:]) for _, p in entries if p[-1].startswith("#")), default=0)
    label = {piece: i + 1 for piece, i in tokens.items()}
    disambig = [num_tokens + k + 1 for k in range(num_disambig)]
    label.update({f"#{k}": disambig[k] for k in range(num_disambig)})
    start = time.perf_counter()
    G = grammar_fst(lang_dir / "lm.arpa", lang_dir / "words.txt")
    _write_fst(G, lang_dir / "G.fst")
    TLG = compile_tlg(ctc_topology(num_tokens), lexicon_fst(entries, label, words), G, disambig,
                      words["#0"])
    _write_fst(TLG, lang_dir / "TLG.fst")
    log.info("TLG: %d states, %d arcs, built in %.1f s", TLG.num_states, num_arcs(TLG),
             time.perf_counter() - start)


def _read_lexicon(path: Path) -> list[tuple[str, list[str]]]:
    entries = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split()
        if len(parts) < 2:
            raise NeuroselError(f"{path}:{n}: expected 'word piece ...', got '{line}'")
        entries.append((parts[0], parts[1:]))
    return entries


def _write_fst(fst: kaldifst.StdVectorFst, path: Path) -> None:
    with atomic_path(path) as tmp:
        fst.write(str(tmp))


class _Steps:
    """Skip a step whose outputs exist and whose config and inputs hash as last time."""

    def __init__(self, lang_dir: Path) -> None:
        self.path = lang_dir / STEPS_FILE
        try:
            self.done: dict[str, str] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        except ValueError:  # a damaged record only means every step is redone
            self.done = {}

    def run(self, name: str, config: dict, inputs: list[Path], outputs: list[Path],
            work: Callable[[], None]) -> None:
        digest = fingerprint(config, inputs)
        if self.done.get(name) == digest and all(p.is_file() for p in outputs):
            log.info("lang step %s: up to date", name)
            return
        self.done.pop(name, None)
        write_json(self.path, self.done)
        work()
        self.done[name] = digest
        write_json(self.path, self.done)
