#!/usr/bin/env bash
# egs/librispeech, stage 0, corpus part (run.sh calls it before reading conf/prepare.yaml): read
# LibriSpeech, MUSAN and RIRS_NOISES with Lhotse's prepare_* functions (download_* first when
# conf/corpus.yaml says download: true), render the OOD conditions and write one folder of Lhotse
# manifests per split under <work-dir>/corpus/splits (conf/prepare.yaml: manifest_root).
# Resumable: a split whose config and sources are unchanged is skipped.
set -euo pipefail

conf=egs/librispeech/conf
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
python egs/librispeech/local/prepare_librispeech.py "${args[@]}" "$workdir"
