#!/usr/bin/env bash
# neurosel recipe driver. Reads as a table of contents: each numbered stage calls one step.
#
#   ./run.sh [--recipe synth] [--stage N] [--stop-stage M] [--workdir DIR] [--nj N]
#            [--cmd "utils/slurm.pl ..."] [--seed N] [--corpus-size default|tiny] [--force true]
#            [--quiet true] [--train-config train_sigmoid] [--study default|full]
#
# Stages (the same numbers for every recipe; outputs under the work dir, default egs/<recipe>,
# or egs/<recipe>/<size> for a non-default --corpus-size):
#   0 prepare   corpus/ (generated, synth only), data/manifests, data/kaldi
#   1 features  data/fbank
#   2 lang      data/lang
#   3 train     exp/baseline
#   4 decode    exp/decode/baseline/<test-set>
#   5 saliency  exp/saliency/<reference-set>
#   6 prune     exp/prune/<variant>, exp/decode/prune_*/
#   7 adapt     exp/adapt/<variant>, exp/decode/adapt_*/
#   8 report    exp/results.json, exp/RESULTS.md, exp/plots
set -euo pipefail
cd "$(dirname "$0")"

recipe=synth
stage=0
stop_stage=8
workdir=
nj=2
cmd=auto
seed=42
corpus_size=default
force=false
quiet=false
train_config=train
device=auto
study=default
weak_baseline=adapt
help_message="Usage: $0 [options]   (see the header of $0 for the stage table)
Options:
  --recipe <name>        recipe under egs/ (default: $recipe)
  --stage <n>            first stage to run (default: $stage)
  --stop-stage <n>       last stage to run (default: all)
  --workdir <dir>        where data/ and exp/ go (default: egs/<recipe>[/<size>])
  --nj <n>               parallel jobs (default: $nj)
  --cmd <launcher>       job launcher for every stage (default auto: egs/<recipe>/cmd.sh)
  --seed <n>             random seed (default: $seed)
  --corpus-size <size>   default, or a size with an overlay conf/<size>.yaml (e.g. tiny)
  --force <bool>         redo stages even if up to date
  --train-config <name>  stage 3's config, conf/<name>.yaml (default: $train_config; e.g.
                         train_sigmoid with its own --workdir for the sigmoid study)
  --device <name>        where stages 4-7 run the model: auto (a GPU if PyTorch sees one, else
                         the CPU), cpu or cuda[:N]; stage 3 trains on a GPU whenever one is present
  --study <name>         default (the headline tables), or full: the claims study's variants as
                         well (conf/study_full.yaml over every stage's config; the default run's
                         results stay up to date under it, only what it adds runs)
  --weak-baseline <what> adapt (default) or skip-adapt: stage 7 skipped, with a message, when
                         stage 4 found the baseline weak (the full study's sigmoid arm)
  --quiet <bool>         no progress bars"
invocation="$0 $*"
. utils/parse_options.sh
[ $# -eq 0 ] || { echo "$help_message" >&2; exit 1; }
# Stages are 0-8 (the table above): a stage outside that range, or not a number, is an error
# rather than a run that does nothing and exits 0.
for _opt in "stage=$stage" "stop-stage=$stop_stage"; do
  case ${_opt#*=} in
    [0-8]) ;;
    *) echo "$0: --${_opt%%=*} '${_opt#*=}': not a stage number (0-8, see --help)" >&2; exit 1 ;;
  esac
done
[ "$stage" -le "$stop_stage" ] || { echo "$0: --stage $stage is after --stop-stage $stop_stage: no stage to run" >&2; exit 1; }

log() { echo "$(date '+%F %T') run.sh: $*" >&2; }

utils/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"

recipe_dir=egs/$recipe
conf=$recipe_dir/conf
[ -d "$conf" ] || { echo "$0: no recipe '$recipe' ($conf does not exist)" >&2; exit 1; }
[ -f "$conf/$train_config.yaml" ] || { echo "$0: --train-config $train_config: $conf/$train_config.yaml does not exist" >&2; exit 1; }
case $weak_baseline in adapt|skip-adapt) ;; *) echo "$0: --weak-baseline '$weak_baseline': adapt or skip-adapt" >&2; exit 1 ;; esac
# overlays over every stage's config, applied in order (comma-separated for the steps): the study's,
# the model's (conf/<train-config>_stages.yaml, when the recipe has one: what the later stages need
# for a model other than conf/train.yaml's, e.g. learning rates searched on it rather than the ones
# recorded for train.yaml's baseline), then the corpus size's, which has the last word (a tiny run
# stays tiny in the full study)
overlays=()
if [ "$study" != default ]; then
  overlays+=("$conf/study_$study.yaml")
  [ -f "$conf/study_$study.yaml" ] || { echo "$0: --study $study needs $conf/study_$study.yaml" >&2; exit 1; }
fi
[ ! -f "$conf/${train_config}_stages.yaml" ] || overlays+=("$conf/${train_config}_stages.yaml")
if [ "$corpus_size" != default ]; then
  overlays+=("$conf/$corpus_size.yaml")
  [ -f "$conf/$corpus_size.yaml" ] || { echo "$0: --corpus-size $corpus_size needs $conf/$corpus_size.yaml" >&2; exit 1; }
fi
overlay=$(IFS=,; echo "${overlays[*]}")
workdir=${workdir:-$recipe_dir$([ "$corpus_size" = default ] || echo "/$corpus_size")}
mkdir -p "$workdir"
data=$workdir/data
exp=$workdir/exp

. "$recipe_dir/cmd.sh"
if [ "$cmd" != auto ]; then train_cmd=$cmd; decode_cmd=$cmd; cpu_cmd=$cmd; fi
opts="--overlay $overlay --force $force"
[ -n "$overlay" ] || opts="--force $force"
log "recipe $recipe, work dir $workdir, stages $stage..$stop_stage, seed $seed, nj $nj, study $study, overlays: ${overlay:-none}"

if [ $stage -le 0 ] && [ $stop_stage -ge 0 ]; then
  log "stage 0: prepare"
  if [ -x "$recipe_dir/local/prepare_corpus.sh" ]; then
    "$recipe_dir/local/prepare_corpus.sh" --conf "$conf" --overlay "$overlay" --seed "$seed" \
      --nj "$nj" --quiet "$quiet" "$workdir"
  fi
  steps/prepare_data.sh $opts --cmd "$cpu_cmd" --nj "$nj" --config "$conf/prepare.yaml" \
    --base-dir "$workdir" "$data"
fi

if [ $stage -le 1 ] && [ $stop_stage -ge 1 ]; then
  log "stage 1: features"
  steps/make_fbank.sh $opts --cmd "$cpu_cmd" --nj "$nj" --config "$conf/features.yaml" \
    "$data" "$data/fbank"
fi

if [ $stage -le 2 ] && [ $stop_stage -ge 2 ]; then
  log "stage 2: lang"
  # LM text: a recipe's own (data/local/lm_text, e.g. the synthetic grammar's), else train's transcripts
  lm_text=$data/kaldi/train/text
  [ -f "$data/local/lm_text" ] && lm_text=$data/local/lm_text
  steps/prepare_lang.sh $opts --cmd "$cpu_cmd" --config "$conf/lang.yaml" "$lm_text" "$data/lang"
fi

if [ $stage -le 3 ] && [ $stop_stage -ge 3 ]; then
  log "stage 3: train"
  steps/train.sh $opts --cmd "$train_cmd" --seed "$seed" --config "$conf/$train_config.yaml" \
    "$data/fbank" "$data/lang" "$exp/baseline"
fi

if [ $stage -le 4 ] && [ $stop_stage -ge 4 ]; then
  test_sets=$(python -m neurosel.bin.layout test-sets "$data/fbank")
  log "stage 4: decode baseline on $test_sets (LM weight tuned on dev)"
  steps/decode.sh $opts --device "$device" --cmd "$decode_cmd" --nj "$nj" --tune true --config "$conf/decode.yaml" \
    --sets "dev,$test_sets" "$exp/baseline/model.pt" "$data/fbank" "$data/lang" "$exp/decode/baseline"
  # a loud warning when the baseline is too weak for stages 5-8 to mean anything (conf/decode.yaml: weak_baseline_wer)
  python -m neurosel.bin.decode check "$exp/baseline/model.pt" "$data/lang" "$data/fbank" "$exp/decode/baseline"
fi

if [ $stage -le 5 ] && [ $stop_stage -ge 5 ]; then
  log "stage 5: neuron statistics, hyper/hypo neurons and pruning criteria (dev, each OOD adaptation set, pooled)"
  steps/saliency.sh $opts --device "$device" --cmd "$cpu_cmd" --nj "$nj" --config "$conf/saliency.yaml" \
    "$exp/baseline/model.pt" "$data/fbank" "$data/lang" "$exp/saliency"
fi

if [ $stage -le 6 ] && [ $stop_stage -ge 6 ]; then
  log "stage 6: prune (hyper, hypo, hyper+hypo, random, each criterion; WER against fraction removed)"
  test_sets=$(python -m neurosel.bin.layout test-sets "$data/fbank")
  steps/prune.sh $opts --device "$device" --cmd "$cpu_cmd" --decode-cmd "$decode_cmd" --nj "$nj" --config "$conf/prune.yaml" \
    --test-sets "$test_sets" --decode-config "$exp/decode/baseline/decode.yaml" \
    "$exp/baseline/model.pt" "$data/fbank" "$data/lang" "$exp/saliency" "$exp/prune"
fi

adapt=true
if [ $stage -le 7 ] && [ $stop_stage -ge 7 ] && [ "$weak_baseline" = skip-adapt ]; then
  rc=0
  python -m neurosel.bin.decode check --strict "$exp/baseline/model.pt" "$data/lang" "$data/fbank" \
    "$exp/decode/baseline" 2>/dev/null || rc=$?
  case $rc in
    0) ;;
    4) adapt=false
       log "stage 7: not run: the baseline is weak (stage 4's warning), so its pseudo-labels teach nothing; the report says 'not run'" ;;
    *) echo "$0: the weak-baseline check failed (exit $rc)" >&2; exit $rc ;;
  esac
fi
if [ $stage -le 7 ] && [ $stop_stage -ge 7 ] && $adapt; then
  log "stage 7: adapt to each OOD condition (pseudo-labels; blind, selective, selective+full, random+full, LHUC; the full study adds the oracle and pooled)"
  steps/adapt.sh $opts --device "$device" --cmd "$train_cmd" --decode-cmd "$decode_cmd" --nj "$nj" --seed "$seed" \
    --config "$conf/adapt.yaml" "$exp/baseline/model.pt" "$data/fbank" "$data/lang" "$exp"
fi

# The full study's variants that need the whole run: prune, then retrain (every pruned system of
# conf/retrain.yaml and the unpruned control fine-tuned alike), and the other FC activation (the
# recipe's conf/train_sigmoid.yaml) through stages 3-7 in a work dir of its own on the same data.
sigmoid_dir=$workdir/sigmoid
if [ "$study" = full ] && [ $stage -le 7 ] && [ $stop_stage -ge 7 ]; then
  log "full study: prune, then retrain (conf/retrain.yaml)"
  test_sets=$(python -m neurosel.bin.layout test-sets "$data/fbank")
  steps/retrain.sh $opts --device "$device" --cmd "$train_cmd" --nj "$nj" --config "$conf/retrain.yaml" \
    --test-sets "$test_sets" --decode-config "$exp/decode/baseline/decode.yaml" \
    "$exp/baseline/model.pt" "$exp/prune" "$data/fbank" "$data/lang" "$exp/retrain"
  if [ "$train_config" != train_sigmoid ] && [ -f "$conf/train_sigmoid.yaml" ]; then
    log "full study: the sigmoid model on the same data, stages 3-7 in $sigmoid_dir"
    mkdir -p "$sigmoid_dir"
    [ -e "$sigmoid_dir/data" ] || ln -s "$(cd "$data" && pwd)" "$sigmoid_dir/data"
    ./run.sh --recipe "$recipe" --workdir "$sigmoid_dir" --train-config train_sigmoid --study full \
      --corpus-size "$corpus_size" --stage 3 --stop-stage 7 --nj "$nj" --cmd "$cmd" --seed "$seed" \
      --force "$force" --quiet "$quiet" --device "$device" --weak-baseline skip-adapt
  fi
fi

if [ $stage -le 8 ] && [ $stop_stage -ge 8 ]; then
  log "stage 8: report"
  # the default run of a recipe also refreshes its tracked RESULTS.md
  copy=
  [ "$workdir" = "$recipe_dir" ] && copy=$recipe_dir/RESULTS.md
  also=
  if [ "$study" = full ] && [ "$train_config" != train_sigmoid ] && [ -d "$sigmoid_dir/exp" ]; then
    # the sigmoid run's report first: its results.json joins the dashboard (results_sigmoid/ beside
    # the recipe's RESULTS.md for the default work dir)
    steps/report.sh --recipe "$recipe" --seed "$seed" --copy-to "${copy:+$recipe_dir/results_sigmoid/RESULTS.md}" \
      --command "$invocation" "$sigmoid_dir"
    [ -n "$copy" ] || also=sigmoid=$sigmoid_dir/exp/results.json
  fi
  steps/report.sh --recipe "$recipe" --seed "$seed" --copy-to "$copy" --also "$also" --command "$invocation" "$workdir"
  log "results: $exp/results.json, $exp/RESULTS.md"
fi

log "done (stages $stage..$stop_stage)"
