#!/usr/bin/env bash
# Stage 2: sentencepiece BPE, lexicon and tokens, a Kneser-Ney n-gram LM (ARPA, G.fst) and the
# TLG decoding graph, from the training transcripts (Kaldi text files) into <lang-dir>.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
force=false
help_message="Usage: $0 [options] <text> [<text> ...] <lang-dir>
 e.g.: $0 --config conf/lang.yaml egs/synth/data/kaldi/train/text egs/synth/data/lang
Each <text> is a Kaldi text file (utt-id word word ...); never pass dev, test or OOD transcripts.
Options:
  --config <yaml>      stage config
  --overlay <yaml>     overlay config (section 'lang')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -ge 2 ] || { echo "$help_message" >&2; exit 1; }
lang=${*: -1}
texts=("${@:1:$#-1}")
for t in "${texts[@]}"; do [ -f "$t" ] || { echo "$0: $t does not exist" >&2; exit 1; }; done

. steps/common.sh
if up_to_date python -m neurosel.bin.prepare_lang status $(config_opts) "${texts[@]}" "$lang"; then
  exit 0
fi
run_step "$cmd" "$lang/log/prepare_lang.log" \
  python -m neurosel.bin.prepare_lang $(config_opts) "${texts[@]}" "$lang"
