#!/usr/bin/env bash
# Stage 3: train the CNN CTC acoustic model on <fbank-dir>/cuts_train (validation on cuts_dev)
# with the BPE units of <lang-dir>. Resumes from the newest checkpoint in <exp-dir> by itself. The
# job checks its inputs before anything else and skips the stage when it is up to date.
# The trainer writes its own log/train.log; the launcher's log of the job is log/job.log.
# --num-procs N trains with N processes in the one job (torch.distributed, each with the config's
# num_threads torch threads), and asks the launcher for N x --num-threads CPUs. Multi-node
# training on Slurm is started with srun instead (see the README's "Clusters"). The job runs with
# jemalloc when it is installed (allocator_env in steps/common.sh; NEUROSEL_ALLOCATOR=glibc: not).
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
num_threads=2
num_procs=
seed=
force=false
quiet=false
help_message="Usage: $0 [options] <fbank-dir> <lang-dir> <exp-dir>
 e.g.: $0 --config conf/train.yaml egs/synth/data/fbank egs/synth/data/lang egs/synth/exp/baseline
Options:
  --config <yaml>      stage config
  --overlay <yaml>     overlay config (section 'train')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --num-threads <n>    threads the job asks the launcher for (per training process)
  --num-procs <n>      training processes (default: the config's num_procs, 1)
  --seed <n>           random seed (overrides the config)
  --force <bool>       retrain even if up to date"
. utils/parse_options.sh
[ $# -eq 3 ] || { echo "$help_message" >&2; exit 1; }
fbank=$1 lang=$2 dir=$3

. steps/common.sh
if up_to_date python -m neurosel.bin.train status $(config_opts) ${seed:+--seed $seed} "$fbank" "$lang" "$dir"; then
  exit 0
fi
run_step "$cmd --num-threads $((num_threads * ${num_procs:-1}))" "$dir/log/job.log" \
  $(allocator_env) python -m neurosel.bin.train $(config_opts) ${seed:+--seed $seed} ${num_procs:+--num-procs $num_procs} \
    "$fbank" "$lang" "$dir"
