#!/usr/bin/env bash
# Installs what neurosel needs and is missing; quick (a few checks) when nothing is.
#
#   utils/setup_env.sh [--no-apt] [--with-slurm]
#
# - Debian packages: espeak-ng, flite, sox (+ formats), festival with a 16 kHz voice (optional
#   engine), jemalloc (the training jobs' allocator, see steps/common.sh), and with --with-slurm
#   the packages of a single-node Slurm for the tests.
# - A virtualenv in .venv with the pinned requirements.txt and neurosel installed in editable
#   mode; a stamp holding the hash of requirements.txt makes a second run a no-op.
# Without root or network it prints the exact commands to run by hand and exits non-zero.
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$top"

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

# --- Debian packages -------------------------------------------------------------------------
debs=(espeak-ng flite sox libsox-fmt-all festival festvox-kallpc16k perl libjemalloc2)
$with_slurm && debs+=(munge slurmctld slurmd slurm-client)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if $with_apt && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing Debian packages: ${missing[*]}"
    # No init system here: keep package scripts from trying to start daemons.
    policy=/usr/sbin/policy-rc.d
    created_policy=false
    if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created_policy=true; fi
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
      $created_policy && rm -f $policy
      log "apt-get failed; install by hand: apt-get install ${missing[*]}"
      exit 1
    fi
    $created_policy && rm -f $policy
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
log "creating .venv with the pinned requirements (about a minute)"
[ -x .venv/bin/python ] || "$py" -m venv .venv
if ! .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt >&2 \
   || ! .venv/bin/pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >&2; then
  log "pip install failed; see the messages above (a registry must be reachable for the pinned wheels)"
  exit 1
fi
echo "$want" > $stamp
log "environment ready"
