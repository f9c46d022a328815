#!/usr/bin/env bash
# Shift detection and WER prediction (issue 18): the shift signals of the baseline on dev, test and
# every ood_<c> (and, with --severity-config, on the opt-in severity sets, built and decoded first),
# WER predictors judged leave-one-condition-out, the best one fitted
# -> <work-dir>/exp/shift/{signals.tsv,evaluation.json,predictor.json}. Nothing runs when up to date.
# Score new audio afterwards with: python -m neurosel.bin.shift score <work-dir> <data-dir|cuts> <out-dir>
set -euo pipefail

severity_config=
cmd=utils/run.pl
force=false
help_message="Usage: $0 [options] <work-dir>
 e.g.: $0 egs/synth
       $0 --severity-config egs/synth/conf/severity.yaml egs/synth
Options:
  --severity-config <yaml>  also build, decode and fit on the severity sets of this config (opt-in)
  --cmd <launcher>          job launcher
  --force <bool>            redo even if up to date"
. utils/parse_options.sh
[ $# -eq 1 ] || { echo "$help_message" >&2; exit 1; }
workdir=$1
dir=$workdir/exp/shift

. steps/common.sh
fit_opts=${severity_config:+--severity}
if [ "$force" = true ] || ! up_to_date python -m neurosel.bin.shift status $fit_opts \
    ${severity_config:+--severity-config "$severity_config"} "$workdir"; then
  if [ -n "$severity_config" ]; then
    run_step "$cmd" "$dir/log/severity.log" \
      python -m neurosel.bin.shift severity --config "$severity_config" \
      $([ "$force" = true ] && echo --force) "$workdir"
  fi
  run_step "$cmd" "$dir/log/fit.log" python -m neurosel.bin.shift fit $fit_opts "$workdir"
fi
