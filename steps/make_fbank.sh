#!/usr/bin/env bash
# Stage 1: log-mel fbank features for every split of <data-dir>/manifests, stored with Lilcom in
# <fbank-dir>, plus global CMVN statistics (and Kaldi feats.scp/ark with write_kaldi: true).
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
nj=1
force=false
help_message="Usage: $0 [options] <data-dir> <fbank-dir>
 e.g.: $0 --config conf/features.yaml --nj 2 egs/synth/data egs/synth/data/fbank
Options:
  --config <yaml>      stage config
  --overlay <yaml>     overlay config (section 'features')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --nj <n>             parallel jobs (each computes 1/n of every split)
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 2 ] || { echo "$help_message" >&2; exit 1; }
data=$1
fbank=$2
[ -d "$data/manifests" ] || { echo "$0: $data/manifests does not exist (run stage 0)" >&2; exit 1; }

. steps/common.sh
if up_to_date python -m neurosel.bin.features status $(config_opts) "$data" "$fbank"; then
  exit 0
fi
force=false
run_step "$cmd JOB=1:$nj" "$fbank/log/features.JOB.log" \
  python -m neurosel.bin.features compute $(config_opts) --job JOB --num-jobs "$nj" "$data" "$fbank"
run_step "$cmd" "$fbank/log/merge.log" \
  python -m neurosel.bin.features merge $(config_opts) --num-jobs "$nj" "$data" "$fbank"
