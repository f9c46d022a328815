#!/usr/bin/env bash
# Stage 0: validate every split of a corpus (Kaldi data dirs or Lhotse manifests) and write Lhotse
# manifests and cuts to <data-dir>/manifests and a Kaldi export per split to <data-dir>/kaldi.
set -euo pipefail

config=       # stage config (conf/prepare.yaml or a new recipe's conf/corpus.yaml)
overlay=      # overlay YAML whose 'prepare' section wins (e.g. conf/tiny.yaml)
overrides=    # space-separated key=value config overrides
base_dir=.    # relative paths in the config are relative to this folder (the work dir)
cmd=utils/run.pl
nj=1
force=false
help_message="Usage: $0 [options] <data-dir>
 e.g.: $0 --config conf/prepare.yaml --base-dir egs/synth egs/synth/data
Options:
  --config <yaml>      stage config
  --overlay <yaml>     overlay config (section 'prepare')
  --overrides 'k=v ..' config overrides
  --base-dir <dir>     folder for relative paths in the config
  --cmd <launcher>     job launcher (utils/run.pl, utils/slurm.pl, ...)
  --nj <n>             parallel jobs for audio validation
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 1 ] || { echo "$help_message" >&2; exit 1; }
data=$1

. steps/common.sh
if up_to_date python -m neurosel.bin.prepare status $(config_opts) --base-dir "$base_dir" "$data"; then
  exit 0
fi
run_step "$cmd --num-threads $nj" "$data/manifests/log/prepare.log" \
  python -m neurosel.bin.prepare $(config_opts) --nj "$nj" --base-dir "$base_dir" "$data"
