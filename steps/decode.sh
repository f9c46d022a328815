#!/usr/bin/env bash
# Decode a model on one or more sets and score them: <decode-dir>/<set>/{hyp.txt,ref.txt,errs.txt,
# wer,tokens.txt,confidence.txt}. With --tune true the LM weight is first chosen on the config's
# tune_set (dev) and written to <decode-dir>/decode.yaml, which other systems then pass as --config.
# Sets that are already decoded with the same model and config are skipped.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
nj=1
sets=
tune=false
force=false
device=auto
help_message="Usage: $0 [options] --sets <set>[,<set>...] <model.pt> <fbank-dir> <lang-dir> <decode-dir>
 e.g.: $0 --tune true --nj 2 --sets test,ood_noise exp/baseline/model.pt data/fbank data/lang exp/decode/baseline
Options:
  --sets <a,b,..>      the sets to decode (required)
  --config <yaml>      decode config (a tuned <decode-dir>/decode.yaml for other systems)
  --overlay <yaml>     overlay config (section 'decode')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --nj <n>             parallel decoding jobs (each decodes 1/n of every set)
  --tune <bool>        choose the LM weight on the tune set first
  --device <name>      where the model runs: auto (a GPU if present), cpu, cuda[:N]
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 4 ] && [ -n "$sets" ] || { echo "$help_message" >&2; exit 1; }
model=$1 fbank=$2 lang=$3 dir=$4

. steps/common.sh
if [ "$tune" = true ]; then
  if ! up_to_date python -m neurosel.bin.decode status --tune $(config_opts) "$model" "$lang" "$fbank" "$dir"; then
    run_step "$cmd" "$dir/log/tune.log" \
      python -m neurosel.bin.decode tune $(config_opts) "$model" "$lang" "$fbank" "$dir"
  fi
  config=$dir/decode.yaml overlay= overrides=
fi
stage_opts="$(config_opts)--sets $sets"
if ! up_to_date python -m neurosel.bin.decode status $stage_opts "$model" "$lang" "$fbank" "$dir"; then
  for s in ${sets//,/ }; do rm -rf "$dir/$s/parts"; done
  force=false  # the decode jobs themselves have no skip logic; --force only defeats the status check
  stage_opts="$(config_opts)--sets $sets"
  run_step "$cmd JOB=1:$nj" "$dir/log/decode.JOB.log" \
    python -m neurosel.bin.decode decode $stage_opts --job JOB --num-jobs "$nj" "$model" "$lang" "$fbank" "$dir"
  run_step "$cmd" "$dir/log/merge.log" \
    python -m neurosel.bin.decode merge $stage_opts --num-jobs "$nj" "$model" "$lang" "$fbank" "$dir"
fi
python -m neurosel.bin.decode table $stage_opts "$model" "$lang" "$fbank" "$dir"
