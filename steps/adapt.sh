#!/usr/bin/env bash
# Stage 7: unsupervised adaptation of the baseline to each OOD condition (and pooled).
# 1. first pass: decode every ood_adapt_<c> with the baseline -> pseudo-labels in <pseudo-dir>
#    (default <exp-dir>/decode/baseline/ood_adapt_<c>/{tokens,confidence}.txt);
# 2. with lr_search: system, each system's learning-rate search on the pooled adaptation sets as
#    one job through --cmd -> <exp-dir>/adapt/lr/<system>/rates.json;
# 3. the (system, seed, condition) units, one job through --cmd per (system, seed) running its
#    conditions one after the other: adapt into
#    <exp-dir>/adapt/<system>.s<seed>/adapted_<c>/ and decode into
#    <exp-dir>/decode/<system>.s<seed>/adapted_<c>/{ood_<c>,test}/ (pooled systems:
#    <exp-dir>/adapt/<system>_pooled.s<seed>/ and <exp-dir>/decode/<system>_pooled.s<seed>/<set>/);
# 4. print the WER table. Only the searches and units that are not up to date (config, inputs)
#    are launched.
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
quiet=false
help_message="Usage: $0 [options] <model.pt> <lang-dir> <fbank-dir> <exp-dir>
 e.g.: $0 --cmd utils/run.pl --nj 2 --config conf/adapt.yaml exp/baseline/model.pt data/lang data/fbank exp
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
  --force <bool>          redo even if up to date
  --quiet <bool>          no progress bars"
. utils/parse_options.sh
[ $# -eq 4 ] || { echo "$help_message" >&2; exit 1; }
model=$1 lang=$2 fbank=$3 exp=$4
decode_cmd=${decode_cmd:-$cmd}
decode_config=${decode_config:-$exp/decode/baseline/decode.yaml}
saliency_dir=${saliency_dir:-$exp/saliency}
pseudo_dir=${pseudo_dir:-$exp/decode/baseline}
for f in "$model" "$lang/bpe.model" "$fbank/cmvn.npz" "$decode_config"; do
  [ -f "$f" ] || { echo "$0: $f does not exist" >&2; exit 1; }
done
adapt_sets=$(cd "$fbank" && ls cuts_ood_adapt_*.jsonl.gz 2>/dev/null | sed 's/cuts_\(.*\).jsonl.gz/\1/' | paste -sd, || true)
[ -n "$adapt_sets" ] || { echo "$0: no cuts_ood_adapt_<condition>.jsonl.gz in $fbank" >&2; exit 1; }

. steps/common.sh
steps/decode.sh --cmd "$decode_cmd" --nj "$nj" --config "$decode_config" \
  "$model" "$lang" "$fbank" "$pseudo_dir" "$adapt_sets"

stage_opts="$(config_opts)--seed $seed --decode-config $decode_config --saliency-dir $saliency_dir --pseudo-dir $pseudo_dir"
# launch the pending searches, then the pending units: JOB=1:n runs the numbers on the n-th line of the list
launch_pending() {  # <what: tunes|units> <action: tune|unit> <log name>
  local list=$exp/adapt/log/pending.$1 n
  mkdir -p "$exp/adapt/log"
  python -m neurosel.bin.adapt pending $stage_opts --what "$1" "$model" "$lang" "$fbank" "$exp" > "$list.tmp"
  mv "$list.tmp" "$list"
  n=$(wc -l < "$list")  # pending prints nothing at all, not an empty line, when nothing is left
  [ "$n" -gt 0 ] || return 0
  echo "$0: $1: $n jobs to run" >&2
  run_step "$cmd JOB=1:$n" "$exp/adapt/log/$3.JOB.log" \
    python -m neurosel.bin.adapt "$2" $stage_opts --units-from "$list" --unit JOB "$model" "$lang" "$fbank" "$exp"
}
if ! python -m neurosel.bin.adapt status $stage_opts "$model" "$lang" "$fbank" "$exp"; then
  launch_pending tunes tune tune
  launch_pending units unit adapt
fi
python -m neurosel.bin.adapt table $stage_opts "$model" "$lang" "$fbank" "$exp"
