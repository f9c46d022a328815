#!/usr/bin/env bash
# Stage 5: neuron statistics of <model.pt> on every reference set (dev, each ood_adapt_<c>, and
# pooled), hyper/hypo classes, pruning-criteria scores (Taylor on labelled in-domain data) and
# the criteria study -> <saliency-dir>/<ref>/{neurons.tsv,stats.pt,classes.json,criteria.json,*.png}
# and <saliency-dir>/overlap.{json,tsv}. Outputs already up to date are skipped.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
nj=1
force=false
device=auto
quiet=false
help_message="Usage: $0 [options] <model.pt> <fbank-dir> <lang-dir> <saliency-dir>
 e.g.: $0 --nj 2 --config conf/saliency.yaml exp/baseline/model.pt data/fbank data/lang exp/saliency
Options:
  --config <yaml>      stage config
  --overlay <yaml>     overlay config (section 'saliency')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --nj <n>             parallel jobs over the reference sets
  --device <name>      where the model runs: auto (a GPU if present), cpu, cuda[:N]
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 4 ] || { echo "$help_message" >&2; exit 1; }
model=$1 fbank=$2 lang=$3 dir=$4

. steps/common.sh
stage_opts=$(config_opts)
if ! up_to_date python -m neurosel.bin.saliency status $stage_opts "$model" "$fbank" "$lang" "$dir"; then
  run_step "$cmd" "$dir/log/taylor.log" \
    python -m neurosel.bin.saliency taylor $stage_opts "$model" "$fbank" "$lang" "$dir"
  run_step "$cmd JOB=1:$nj" "$dir/log/work.JOB.log" \
    python -m neurosel.bin.saliency work $stage_opts --job JOB --num-jobs "$nj" "$model" "$fbank" "$lang" "$dir"
  run_step "$cmd" "$dir/log/merge.log" \
    python -m neurosel.bin.saliency merge $stage_opts "$model" "$fbank" "$lang" "$dir"
fi
python -m neurosel.bin.saliency table $stage_opts "$model" "$fbank" "$lang" "$dir"
