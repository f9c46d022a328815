#!/usr/bin/env bash
# egs/synth, stage 0, corpus part: synthesise the embedded corpus into <work-dir>/corpus
# (Kaldi data dirs per split under corpus/data, audio under corpus/wav, manifest.json) and give
# stage 2 its LM text as <work-dir>/data/local/lm_text (Kaldi text format): the training sentences
# plus more from the grammar, never a dev, test or OOD sentence.
# Resumable: finished audio is kept; a complete corpus with the same config and seed is a no-op.
set -euo pipefail

conf=egs/synth/conf
overlay=
seed=42
nj=2
quiet=false
help_message="Usage: $0 [--conf DIR] [--overlay YAML] [--seed N] [--nj N] [--quiet BOOL] <work-dir>"
. utils/parse_options.sh
[ $# -eq 1 ] || { echo "$help_message" >&2; exit 1; }
workdir=$1

args=(--config "$conf/corpus.yaml" --seed "$seed" --nj "$nj")
[ -n "$overlay" ] && args+=(--overlay "$overlay")
[ "$quiet" = true ] && args+=(--quiet)
python local/make_synth_corpus.py "${args[@]}" "$workdir/corpus"

mkdir -p "$workdir/data/local"
awk '{ printf "lm-%06d %s\n", NR, $0 }' "$workdir/corpus/lm_text.txt" > "$workdir/data/local/.lm_text.tmp"
mv "$workdir/data/local/.lm_text.tmp" "$workdir/data/local/lm_text"
