#!/usr/bin/env bash
# Stage 8: results.json, RESULTS.md and plots from every scored decode dir, saliency and pruning
# output under <work-dir>/exp. With --copy-to, also the recipe's tracked RESULTS.md.
set -euo pipefail

recipe=synth
seed=0
copy_to=
also=
command="./run.sh"
help_message="Usage: $0 [options] <work-dir>
 e.g.: $0 --recipe synth --copy-to egs/synth/RESULTS.md egs/synth
Options:
  --recipe <name>      recipe name recorded in results.json
  --seed <n>           the run's base seed
  --copy-to <file>     also write RESULTS.md (and plots/ beside it) here
  --also <name=json>   another FC activation's results.json for the claims dashboard (default:
                       results_<activation>/ beside --copy-to)
  --command <text>     the command that produced the run, for the record"
. utils/parse_options.sh
[ $# -eq 1 ] || { echo "$help_message" >&2; exit 1; }
workdir=$1

python -m neurosel.bin.report --recipe "$recipe" --seed "$seed" --command "$command" \
  ${copy_to:+--copy-to "$copy_to"} ${also:+--also "$also"} "$workdir"
