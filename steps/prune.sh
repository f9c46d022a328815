#!/usr/bin/env bash
# Stage 6: pruned copies of <model.pt> from the hyper/hypo classes and pruning-criteria scores of
# stage 5 -> <prune-dir>/<system>/{model.pt,removed.tsv,prune.json}, <prune-dir>/summary.tsv;
# then, with --test-sets, decode each system with the baseline's tuned decode config into
# <decode-root>/<system>/<set>/ (a condprune_* system's model of condition c into
# <system>/adapted_<c>/ on ood_<c> and test). Systems and decodes already up to date are skipped.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
decode_cmd=
nj=1
test_sets=
decode_config=
decode_root=
force=false
device=auto
quiet=false
help_message="Usage: $0 [options] <model.pt> <fbank-dir> <lang-dir> <saliency-dir> <prune-dir>
 e.g.: $0 --nj 2 --config conf/prune.yaml --test-sets test,ood_noise \\
         --decode-config exp/decode/baseline/decode.yaml \\
         exp/baseline/model.pt data/fbank data/lang exp/saliency exp/prune
Options:
  --config <yaml>         stage config
  --overlay <yaml>        overlay config (section 'prune')
  --overrides 'k=v ..'    config overrides
  --cmd <launcher>        job launcher for pruning
  --decode-cmd <launcher> job launcher for decoding (default: --cmd)
  --nj <n>                parallel jobs (pruning and decoding: each takes every n-th system)
  --test-sets <a,b,..>    sets to decode every system on (empty: build the models only)
  --decode-config <yaml>  the baseline's tuned decode.yaml (needed with --test-sets)
  --decode-root <dir>     where <system>/<set>/ decodes go (default: <prune-dir>/../decode)
  --device <name>         where the model runs: auto (a GPU if present), cpu, cuda[:N]
  --force <bool>          redo even if up to date"
. utils/parse_options.sh
[ $# -eq 5 ] || { echo "$help_message" >&2; exit 1; }
model=$1 fbank=$2 lang=$3 saliency=$4 dir=$5
decode_cmd=${decode_cmd:-$cmd}

. steps/common.sh
stage_opts=$(config_opts)
if ! up_to_date python -m neurosel.bin.prune status $stage_opts "$model" "$saliency" "$fbank" "$dir"; then
  run_step "$cmd JOB=1:$nj" "$dir/log/work.JOB.log" \
    python -m neurosel.bin.prune work $stage_opts --job JOB --num-jobs "$nj" "$model" "$saliency" "$fbank" "$dir"
  run_step "$cmd" "$dir/log/merge.log" \
    python -m neurosel.bin.prune merge $stage_opts "$model" "$saliency" "$fbank" "$dir"
fi
python -m neurosel.bin.prune table $stage_opts "$model" "$saliency" "$fbank" "$dir"
[ -n "$test_sets" ] || exit 0
decode_opts="--sets $test_sets --lang $lang ${decode_config:+--decode-config $decode_config} ${decode_root:+--decode-root $decode_root}"
if ! up_to_date python -m neurosel.bin.prune status $stage_opts $decode_opts "$model" "$saliency" "$fbank" "$dir"; then
  # one launcher job per share of the systems, each decoding its systems in one process
  run_step "$decode_cmd JOB=1:$nj" "$dir/log/decode.JOB.log" \
    python -m neurosel.bin.prune decode $stage_opts $decode_opts --job JOB --num-jobs "$nj" \
      "$model" "$saliency" "$fbank" "$dir"
fi
python -m neurosel.bin.prune table $stage_opts $decode_opts "$model" "$saliency" "$fbank" "$dir"
