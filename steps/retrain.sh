#!/usr/bin/env bash
# Prune, then retrain (issue 16 part 1; opt-in, not in the default run): fine-tune the pruned
# systems of <prune-dir> named by the config, and the unpruned control baseline_ft, on train with
# the same steps, data order and learning rate (chosen on dev), once per retraining seed
# -> <retrain-dir>/<system>.s<k>/model.pt (the rate's search first, then --nj jobs side by side);
# then decode each with the baseline's tuned decode config into <decode-root>/<system>/<set>/.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
nj=2
test_sets=
decode_config=
decode_root=
force=false
device=auto
help_message="Usage: $0 [options] <baseline.pt> <prune-dir> <fbank-dir> <lang-dir> <retrain-dir>
 e.g.: $0 --config conf/retrain.yaml --test-sets test,ood_noise \\
         --decode-config exp/decode/baseline/decode.yaml --decode-root exp/decode \\
         exp/baseline/model.pt exp/prune data/fbank data/lang exp/retrain
Options:
  --config <yaml>         stage config (conf/retrain.yaml)
  --overlay <yaml>        overlay config (section 'retrain')
  --overrides 'k=v ..'    config overrides
  --cmd <launcher>        job launcher
  --nj <n>                fine-tuning jobs side by side (one thread each), after the rate's search
  --test-sets <a,b,..>    sets to decode every system on (empty: fine-tune only)
  --decode-config <yaml>  the baseline's tuned decode.yaml (needed with --test-sets)
  --decode-root <dir>     where <system>/<set>/ decodes go (default: <retrain-dir>/../decode)
  --device <name>         where decoding runs: auto, cpu, cuda[:N]
  --force <bool>          redo even if up to date"
. utils/parse_options.sh
[ $# -eq 5 ] || { echo "$help_message" >&2; exit 1; }
model=$1 prune=$2 fbank=$3 lang=$4 dir=$5
decode_root=${decode_root:-$(dirname "$dir")/decode}

. steps/common.sh
stage_opts=$(config_opts)
if ! up_to_date python -m neurosel.bin.retrain status $stage_opts "$model" "$prune" "$fbank" "$lang" "$dir"; then
  run_step "$cmd" "$dir/log/lr.log" \
    python -m neurosel.bin.retrain lr $stage_opts "$model" "$prune" "$fbank" "$lang" "$dir"
  run_step "$cmd JOB=1:$nj" "$dir/log/retrain.JOB.log" \
    python -m neurosel.bin.retrain run $stage_opts --job JOB --num-jobs "$nj" "$model" "$prune" "$fbank" "$lang" "$dir"
fi
[ -n "$test_sets" ] || exit 0
# one line per model: <folder>:<sets> (a model pruned for condition c: ood_<c> and test); read first,
# so that its error stops the step (a failing command inside `for ... in $(...)` would not)
entries=$(python -m neurosel.bin.retrain systems $stage_opts --sets "$test_sets" \
            "$model" "$prune" "$fbank" "$lang" "$dir")
for entry in $entries; do
  system=${entry%%:*}
  steps/decode.sh --cmd "$cmd" --device "$device" --config "$decode_config" --sets "${entry#*:}" \
    "$dir/$system/model.pt" "$fbank" "$lang" "$decode_root/$system"
done
