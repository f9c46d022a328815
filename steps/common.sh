# Helpers sourced by the steps/ scripts (not executable on its own).
# Expects the caller's option variables: config, overlay, overrides, force, and optionally quiet.

# Print the neurosel config flags for the caller's options; --device for a step that has a device
# option (every action of its program takes it, so that naming a device that is not there stops the
# step at its status check even when nothing is to do).
config_opts() {
  [ -n "${config:-}" ] && printf -- '--config %s ' "$config"
  [ -n "${device:-}" ] && printf -- '--device %s ' "$device"
  [ -n "${overlay:-}" ] && printf -- '--overlay %s ' "$overlay"
  for kv in ${overrides:-}; do printf -- '--set %s ' "$kv"; done
  [ "${force:-false}" = true ] && printf -- '--force '
  [ "${quiet:-false}" = true ] && printf -- '--quiet '
  return 0
}

# up_to_date <status command...>: ask a stage's status (the protocol of neurosel/stage.py). True (0)
# when up to date, false (1) when there is work to do; on an error (a broken config, a missing
# input) the step stops here with the status command's code, before it launches any job.
up_to_date() {
  local code=0
  "$@" || code=$?
  case $code in
    0) return 0 ;;
    3) return 1 ;;
    *) echo "$(basename "$0"): stopped: the status check failed (exit $code); no job launched" >&2; exit "$code" ;;
  esac
}

# run_step "<cmd [launcher options]>" <log> <command...>: one job through the launcher; on failure
# the error lines of the log are shown on the console and the step fails.
run_step() {
  local launcher=$1 logfile=$2
  shift 2
  echo "$(basename "$0"): log in $logfile" >&2
  if ! $launcher "$logfile" "$@"; then
    local f
    for f in ${logfile//JOB/*}; do
      grep -q '^# Ended (code 0)' "$f" 2>/dev/null && continue
      echo "$(basename "$0"): failed; from $f:" >&2
      grep -v '^#' "$f" | grep -E 'error|Error' | tail -n 3 >&2 || tail -n 5 "$f" >&2 || true
    done
    return 1
  fi
}

# The prefix that runs a training process with jemalloc (Debian's libjemalloc2, which
# utils/setup_env.sh installs) instead of glibc's malloc; empty when the library is not there or
# NEUROSEL_ALLOCATOR=glibc. glibc serves a batch's large tensors from a heap that keeps the freed
# blocks the next batch's shapes do not fit, so stage 3's peak memory grew with the number of
# batches (1.40x at 4x the data); jemalloc's size classes, without returning memory to the system
# (no decay: that costs page faults on every batch), kept it at 1.08x with ~5% less CPU
# (bench/RESULTS.md, Scaling).
allocator_env() {
  [ "${NEUROSEL_ALLOCATOR:-jemalloc}" = glibc ] && return 0
  local lib f
  # ldconfig is in /sbin, which a user's PATH may lack; then the usual library dirs
  lib=$({ ldconfig -p || /sbin/ldconfig -p; } 2>/dev/null | awk '$1 == "libjemalloc.so.2" {print $NF; exit}')
  if [ -z "$lib" ]; then
    for f in /usr/lib/*-linux-gnu/libjemalloc.so.2 /usr/lib64/libjemalloc.so.2 /usr/lib/libjemalloc.so.2; do
      [ -f "$f" ] && { lib=$f; break; }
    done
  fi
  [ -n "$lib" ] || return 0
  printf 'env LD_PRELOAD=%s MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1 ' "$lib${LD_PRELOAD:+:$LD_PRELOAD}"
}
