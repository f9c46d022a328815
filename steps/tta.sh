#!/usr/bin/env bash
# Test-time adaptation (issue 19): for every run the options name (moves x modes x sources of
# selective x seeds of random x targets), adapt <model.pt> per utterance on the target (an
# ood_<c> or test set, or stream<segment>: the OOD test sets interleaved) and decode with the
# baseline's tuned search -> <exp-dir>/decode/tta_<moves>_<mode>[_<source>][.s<seed>]/<target>/
# {hyp.txt,ref.txt,errs.txt,wer,progress.tsv,tta.json}; then print the TTA table. Needs stage 4's
# <exp-dir>/decode/baseline/decode.yaml and, for --sources condition, stage 5's
# <exp-dir>/saliency. Runs that are up to date (config, inputs) are skipped; a killed run resumes.
set -euo pipefail

config=
overlay=
overrides=
cmd=utils/run.pl
nj=1
moves=all,selective
modes=episodic,continual
sources=running
seeds=1
targets=stream20
device=auto
force=false
quiet=false
help_message="Usage: $0 [options] <model.pt> <fbank-dir> <lang-dir> <exp-dir>
 e.g.: $0 --nj 2 --config conf/tta.yaml --moves all,lhuc,selective,random --seeds 1,2,3 \\
         --targets ood_noise,stream20 exp/baseline/model.pt data/fbank data/lang exp
Options:
  --config <yaml>      tta config (conf/tta.yaml)
  --overlay <yaml>     overlay config (section 'tta')
  --overrides 'k=v ..' config overrides
  --cmd <launcher>     job launcher
  --nj <n>             parallel jobs (each does every n-th run)
  --moves <a,b,..>     parameter sets: all, fc, conv, last, lhuc, selective, random
  --modes <a,b>        episodic, continual
  --sources <a,b>      where selective's neurons come from: running, condition
  --seeds <a,b,..>     seeds of random (the first seeds the other runs)
  --targets <a,b,..>   ood_<c>, test or stream<segment>
  --device <d>         where the model adapts: auto (a GPU if there is one), cpu, cuda[:N]
  --force <bool>       redo even if up to date"
. utils/parse_options.sh
[ $# -eq 4 ] || { echo "$help_message" >&2; exit 1; }
model=$1 fbank=$2 lang=$3 exp=$4

. steps/common.sh
stage_opts="$(config_opts)--moves $moves --mode $modes --source $sources --seed $seeds --target $targets"  # config_opts: --device
if ! up_to_date python -m neurosel.bin.tta status $stage_opts "$model" "$lang" "$fbank" "$exp"; then
  run_step "$cmd JOB=1:$nj" "$exp/decode/log/tta.JOB.log" \
    python -m neurosel.bin.tta run $stage_opts --job JOB --num-jobs "$nj" "$model" "$lang" "$fbank" "$exp"
fi
python -m neurosel.bin.tta report "$exp"
