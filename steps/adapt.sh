#!/usr/bin/env bash
# Stage 7: unsupervised adaptation of the baseline to each OOD condition (and pooled).
# 1. first pass: decode every ood_adapt_<c> with the baseline -> pseudo-labels in <pseudo-dir>
#    (default <exp-dir>/decode/baseline/ood_adapt_<c>/{tokens,confidence}.txt);
# 2. with a *_shift<NN> system (keeps the adaptation utterances least shifted), each adaptation
#    set's per-utterance shift score -> <exp-dir>/adapt/shift_scores/<set>/scores.tsv; with
#    lr_search: system, each system's learning-rate search on the pooled adaptation sets as
#    one job through --cmd -> <exp-dir>/adapt/lr/<system>/rates.json;
# 3. the (system, seed, condition) units, one job through --cmd per (system, seed) running its
#    conditions one after the other: adapt into
#    <exp-dir>/adapt/<system>.s<seed>/adapted_<c>/ and decode into
#    <exp-dir>/decode/<system>.s<seed>/adapted_<c>/{ood_<c>,test}/ (pooled systems:
#    <exp-dir>/adapt/<system>_pooled.s<seed>/ and <exp-dir>/decode/<system>_pooled.s<seed>/<set>/);
# 4. print the WER table. Only the searches and units that are not up to date (config, inputs)
#    are launched: 'adapt pending' plans them (Python keeps the plan) and prints how many jobs.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
decode_cmd=
nj=1
seed=42
decode_config=
saliency_dir=
pseudo_dir=
force=false
device=auto
quiet=false
help_message="Usage: $0 [options] <model.pt> <fbank-dir> <lang-dir> <exp-dir>
 e.g.: $0 --cmd utils/run.pl --nj 2 --config conf/adapt.yaml exp/baseline/model.pt data/fbank data/lang exp
Options:
  --config <yaml>         adapt config (conf/adapt.yaml)
  --overlay <yaml>        overlay config (section 'adapt')
  --overrides 'k=v ..'    config overrides
  --cmd <launcher>        job launcher for the adaptation units (one job per unit)
  --decode-cmd <launcher> job launcher of the first-pass decode (default: --cmd)
  --nj <n>                parallel jobs of the first-pass decode
  --seed <n>              first seed (seeds are seed..seed+num_seeds-1)
  --decode-config <yaml>  the baseline's tuned decode config (default <exp-dir>/decode/baseline/decode.yaml)
  --saliency-dir <dir>    stage 5 output with <ref>/neurons.tsv (default <exp-dir>/saliency)
  --pseudo-dir <dir>      first-pass decode dir (default <exp-dir>/decode/baseline)
  --device <name>         where the model runs: auto (a GPU if present), cpu, cuda[:N]
  --force <bool>          redo even if up to date
  --quiet <bool>          no progress bars"
. utils/parse_options.sh
[ $# -eq 4 ] || { echo "$help_message" >&2; exit 1; }
model=$1 fbank=$2 lang=$3 exp=$4
decode_cmd=${decode_cmd:-$cmd}
decode_config=${decode_config:-$exp/decode/baseline/decode.yaml}
pseudo_dir=${pseudo_dir:-$exp/decode/baseline}

. steps/common.sh
adapt_sets=$(python -m neurosel.bin.layout adapt-sets "$fbank")
steps/decode.sh --cmd "$decode_cmd" --nj "$nj" --config "$decode_config" --sets "$adapt_sets" \
  "$model" "$fbank" "$lang" "$pseudo_dir"

stage_opts="$(config_opts)--seed $seed --decode-config $decode_config --pseudo-dir $pseudo_dir ${saliency_dir:+--saliency-dir $saliency_dir}"
paths=("$model" "$lang" "$fbank" "$exp")
if ! up_to_date python -m neurosel.bin.adapt status $stage_opts "${paths[@]}"; then
  # the shift scores and the searches first (units read them), then the units
  run_step "$cmd" "$exp/adapt/log/scores.log" python -m neurosel.bin.adapt scores $stage_opts "${paths[@]}"
  n=$(python -m neurosel.bin.adapt pending $stage_opts --what tunes "${paths[@]}")
  [ "$n" -eq 0 ] || run_step "$cmd JOB=1:$n" "$exp/adapt/log/tune.JOB.log" \
    python -m neurosel.bin.adapt tune $stage_opts --job JOB "${paths[@]}"
  n=$(python -m neurosel.bin.adapt pending $stage_opts --what units "${paths[@]}")
  [ "$n" -eq 0 ] || run_step "$cmd JOB=1:$n" "$exp/adapt/log/adapt.JOB.log" \
    python -m neurosel.bin.adapt unit $stage_opts --job JOB "${paths[@]}"
fi
python -m neurosel.bin.adapt table $stage_opts "${paths[@]}"
