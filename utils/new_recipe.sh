#!/usr/bin/env bash
# Start a recipe for a new corpus: copy egs/TEMPLATE to egs/<name>/ and, for each <split>=<dir>
# argument, name that split's source in egs/<name>/conf/corpus.yaml. Then ./run.sh --recipe <name>
# runs every stage.
#
#   utils/new_recipe.sh [--train-hours H] <name> [<split>=<dir> ...]
#
# --train-hours H: hours of training audio; below 30 h, the small-corpus profile for about 1, 3 or
#          10 hours (conf/profiles/, chosen by neurosel/recipe/profiles.py) is merged into
#          conf/train.yaml and conf/lang.yaml: training length with no wall-time cap, augmentation,
#          model width and BPE size. Without it the template's sizes (some tens of hours) stay.
#
# <split>: train, dev, test, ood_adapt_<condition>, ood_<condition> (a condition is lower-case
#          letters and '_'; neurosel/data/prepare.py SPLIT_NAME is the rule stage 0 applies).
# <dir>:   a Kaldi data dir (wav.scp, text, utt2spk; optional segments, spk2utt, reco2dur), or a
#          folder holding one Lhotse *recordings*.jsonl.gz and one *supervisions*.jsonl.gz.
#          Stored as an absolute path. Without split arguments, edit conf/corpus.yaml by hand.
# e.g.
#   utils/new_recipe.sh --train-hours 2.6 mycorpus train=/data/mycorpus/train dev=/data/mycorpus/dev test=/data/mycorpus/test
#   ./run.sh --recipe mycorpus --corpus-size tiny   # smoke run, then without --corpus-size
set -euo pipefail
cd "$(dirname "$0")/.."

usage="Usage: $0 [--train-hours H] <name> [<split>=<dir> ...]   (see the header of $0)"
train_hours=
if [ "${1:-}" = --train-hours ]; then
  [ $# -ge 2 ] || { echo "$usage" >&2; exit 1; }
  train_hours=$2
  shift 2
  [[ $train_hours =~ ^[0-9]+([.][0-9]+)?$ ]] && [[ ! $train_hours =~ ^0+([.]0+)?$ ]] \
    || { echo "$0: --train-hours '$train_hours': expected a positive number of hours" >&2; exit 1; }
fi
[ $# -ge 1 ] && [ "$1" != --help ] && [ "$1" != -h ] || { echo "$usage" >&2; exit 1; }
name=$1
shift
[[ $name =~ ^[a-z0-9][a-z0-9_]*$ ]] || { echo "$0: recipe name '$name': use lower-case letters, digits and '_'" >&2; exit 1; }
[ -e "egs/$name" ] && { echo "$0: egs/$name already exists" >&2; exit 1; }

# yaml_quote <string>: a single-quoted YAML scalar
yaml_quote() { printf "'%s'" "${1//\'/\'\'}"; }

splits_yaml=
for arg in "$@"; do
  [[ $arg == *=* ]] || { echo "$0: '$arg' is not <split>=<dir>" >&2; exit 1; }
  split=${arg%%=*}
  dir=${arg#*=}
  [[ $split =~ ^(train|dev|test|ood_adapt_[a-z][a-z_]*|ood_[a-z][a-z_]*)$ ]] \
    || { echo "$0: '$split' is not a split name (train, dev, test, ood_adapt_<condition>, ood_<condition>)" >&2; exit 1; }
  [ -d "$dir" ] || { echo "$0: $split: $dir is not a directory" >&2; exit 1; }
  dir=$(cd "$dir" && pwd)
  if [ -f "$dir/wav.scp" ]; then
    splits_yaml+="  $split:"$'\n'"    kaldi_dir: $(yaml_quote "$dir")"$'\n'
  else
    recordings=$(find "$dir" -maxdepth 1 -name '*recordings*.jsonl.gz' | sort)
    supervisions=$(find "$dir" -maxdepth 1 -name '*supervisions*.jsonl.gz' | sort)
    if [ "$(printf '%s' "$recordings" | grep -c .)" != 1 ] || [ "$(printf '%s' "$supervisions" | grep -c .)" != 1 ]; then
      echo "$0: $split: $dir has no wav.scp, nor exactly one *recordings*.jsonl.gz and one *supervisions*.jsonl.gz" >&2
      exit 1
    fi
    splits_yaml+="  $split:"$'\n'"    recordings: $(yaml_quote "$recordings")"$'\n'
    splits_yaml+="    supervisions: $(yaml_quote "$supervisions")"$'\n'
  fi
done

tmp=$(mktemp -d "egs/.$name.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cp -a egs/TEMPLATE/. "$tmp/"
sed -i "1s|.*|# egs/$name: a recipe made from egs/TEMPLATE|" "$tmp/README.md"
if [ -n "$splits_yaml" ]; then
  sed -i '/^splits:/,$d' "$tmp/conf/corpus.yaml"
  printf 'splits:\n%s' "$splits_yaml" >> "$tmp/conf/corpus.yaml"
fi
if [ -n "$train_hours" ]; then
  py=.venv/bin/python
  [ -x "$py" ] || py=python  # before utils/setup_env.sh has made the venv
  profile=$("$py" -m neurosel.bin.profile "$train_hours" "$tmp/conf")
  if [ "$profile" = none ]; then
    echo "$0: $train_hours h of training audio: the template's sizes (no small-corpus profile from 30 h)" >&2
  else
    echo "$0: $train_hours h of training audio: small-corpus profile $profile (conf/profiles/$profile.yaml)" >&2
  fi
fi
mv "$tmp" "egs/$name"
trap - EXIT
echo "$0: created egs/$name; check egs/$name/conf/corpus.yaml, then: ./run.sh --recipe $name" >&2
