"""Stage 2: ``python -m neurosel.bin.prepare_lang [status] [--config conf/lang.yaml] <train-text>... <lang-dir>``.

Trains the sentencepiece BPE model on the transcripts of the Kaldi ``text`` file(s), writes the
lexicon and symbol tables, estimates the Kneser-Ney n-gram LM and compiles the decoding graph
TLG into ``<lang-dir>``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, run_main
from neurosel.lang.prepare import LangConfig, prepare_lang
from neurosel.stage import require, run_once, single_status, split_action

log = logging.getLogger("neurosel.bin.prepare_lang")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare_lang", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--force", action="store_true", help="redo even if up to date")
    parser.add_argument("text", type=Path, nargs="+", help="Kaldi text file(s): utt-id words...")
    parser.add_argument("lang_dir", type=Path)
    action, argv = split_action(argv)
    args = parser.parse_args(argv)
    cfg = C.resolve(LangConfig, args.config, args.overlay, "lang", args.overrides)
    inputs = [*args.text, *([Path(cfg.bpe_from) / "bpe.model"] if cfg.bpe_from else [])]
    if action == "status":
        return single_status("stage 2 (lang)", args.lang_dir, C.hashed(cfg, "bpe_from"), inputs, args.force)

    def work() -> None:
        sizes = prepare_lang(args.text, args.lang_dir, cfg)
        log.info("lang dir %s: %s", args.lang_dir, ", ".join(f"{k} {v}" for k, v in sizes.items()))

    require(inputs)
    run_once("stage 2 (lang)", args.lang_dir, C.hashed(cfg, "bpe_from"), inputs, work, force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
