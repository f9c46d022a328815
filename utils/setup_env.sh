#!/usr/bin/env bash
# Installs what neurosel needs and is missing; quick (a few checks, no output) when nothing is.
#
#   utils/setup_env.sh [--no-apt] [--with-slurm]
#
# - Debian packages: espeak-ng, flite, sox (+ formats), festival with a 16 kHz voice (optional
#   engine), jemalloc (the training jobs' allocator, see steps/common.sh), and with --with-slurm
#   the packages of a single-node Slurm for the tests.
# - A virtualenv in .venv with the pinned requirements.txt and neurosel installed in editable
#   mode; a stamp holding the hash of requirements.txt makes a second run a no-op.
# The console gets a few lines: what is being installed, where the full log is, how long it took.
# apt's and pip's own output goes to the log, build/setup_env.log (git ignores build/), which each
# run that installs something starts afresh; when a step fails, the log's last lines are shown.
# Without root or network it prints the exact commands to run by hand and exits non-zero.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

script_args="$*"
with_apt=true
with_slurm=false
for arg in "$@"; do
  case $arg in
    --no-apt) with_apt=false ;;
    --with-slurm) with_slurm=true ;;
    *) echo "$0: unknown option $arg" >&2; exit 1 ;;
  esac
done

log() { echo "setup_env: $*" >&2; }
log_file=build/setup_env.log
tail_lines=25
log_started=false

# step <what> <command...>: runs the command with its output in the log; says how long it took,
# or, when it fails, shows the log's last lines and returns the command's exit code.
step() {
  local what=$1 t0 rc=0
  shift
  if ! $log_started; then
    mkdir -p "$(dirname "$log_file")"
    echo "# utils/setup_env.sh $script_args, $(date '+%F %T')" > "$log_file"
    log_started=true
  fi
  log "$what; full log: $log_file"
  echo "### $what: $*" >> "$log_file"
  t0=$SECONDS
  "$@" >> "$log_file" 2>&1 </dev/null || rc=$?
  if [ $rc -ne 0 ]; then
    log "$what failed (exit code $rc) after $((SECONDS - t0)) s; last lines of $log_file:"
    tail -n $tail_lines "$log_file" | sed 's/^/  | /' >&2
    return $rc
  fi
  log "$what: done in $((SECONDS - t0)) s"
}

# --- Debian packages -------------------------------------------------------------------------
debs=(espeak-ng flite sox libsox-fmt-all festival festvox-kallpc16k perl libjemalloc2)
$with_slurm && debs+=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done

apt_install() {
  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

if [ ${#missing[@]} -gt 0 ]; then
  if $with_apt && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    # No init system here: keep package scripts from trying to start daemons.
    policy=/usr/sbin/policy-rc.d
    created_policy=false
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created_policy=true; fi
    ok=true
    step "installing Debian packages ${missing[*]}" apt_install "${missing[@]}" || ok=false
    $created_policy && rm -f $policy
    if ! $ok; then
      log "install them by hand: apt-get install ${missing[*]}"
      exit 1
    fi
  else
    log "missing Debian packages; install them by hand (as root):"
    log "  apt-get update && apt-get install ${missing[*]}"
    exit 1
  fi
fi

# --- Python virtualenv -----------------------------------------------------------------------
stamp=.venv/.requirements.sha256
want=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ -f $stamp ] && [ "$(cat $stamp)" = "$want" ]; then
  exit 0
fi
py=${PYTHON:-python3}
if ! "$py" -c 'import sys; assert sys.version_info >= (3, 10)' 2>/dev/null; then
  log "need Python >= 3.10 as '$py' (set PYTHON=/path/to/python3)"
  exit 1
fi

# (step runs it where errexit does not apply: hence the &&)
pip_install() {
  { [ -x .venv/bin/python ] || "$py" -m venv .venv; } &&
    .venv/bin/pip install --disable-pip-version-check -r requirements.txt &&
    .venv/bin/pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
}

if ! step "installing the pinned Python packages of requirements.txt into .venv" pip_install; then
  log "see the lines above (a registry must be reachable for the pinned wheels); rerun utils/setup_env.sh after"
  exit 1
fi
echo "$want" > $stamp
log "environment ready"
