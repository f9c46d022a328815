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
tune=false
force=false
help_message="Usage: $0 [options] <model.pt> <lang-dir> <fbank-dir> <decode-dir> <set>[,<set>...]
 e.g.: $0 --tune true --nj 2 exp/baseline/model.pt data/lang data/fbank exp/decode/baseline test,ood_noise
Options:
  --config <yaml>      decode config (a tuned <decode-dir>/decode.yaml for other systems)
  --overlay <yaml>     overlay config (section 'decode')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --nj <n>             parallel decoding jobs (each decodes 1/n of every set)
  --tune <bool>        choose the LM weight on the tune set first
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 5 ] || { echo "$help_message" >&2; exit 1; }
model=$1 lang=$2 fbank=$3 dir=$4 sets=$5
for f in "$model" "$lang/bpe.model" "$fbank/cmvn.npz"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done

. steps/common.sh
if [ "$tune" = true ]; then
  run_step "$cmd" "$dir/log/tune.log" \
    python -m neurosel.bin.decode tune $(config_opts) "$model" "$lang" "$fbank" "$dir"
  config=$dir/decode.yaml
  overlay=
  overrides=
fi
if python -m neurosel.bin.decode status $(config_opts) --sets "$sets" "$model" "$lang" "$fbank" "$dir"; then
  exit 0
fi
for s in ${sets//,/ }; do rm -rf "$dir/$s/parts"; done
force=false  # the decode jobs themselves have no skip logic; --force only defeats the status check
run_step "$cmd JOB=1:$nj" "$dir/log/decode.JOB.log" \
  python -m neurosel.bin.decode decode $(config_opts) --sets "$sets" --job JOB --num-jobs "$nj" \
    "$model" "$lang" "$fbank" "$dir"
run_step "$cmd" "$dir/log/merge.log" \
  python -m neurosel.bin.decode merge $(config_opts) --sets "$sets" --num-jobs "$nj" \
    "$model" "$lang" "$fbank" "$dir"
for s in ${sets//,/ }; do
  printf '%-24s %s\n' "$(basename "$dir")/$s" "$(cat "$dir/$s/wer")"
done
