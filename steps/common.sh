# Helpers sourced by the steps/ scripts (not executable on its own).
# Expects the caller's option variables: config, overlay, overrides, force, and optionally quiet.

# Print the neurosel config flags for the caller's options.
config_opts() {
  [ -n "${config:-}" ] && printf -- '--config %s ' "$config"
  [ -n "${overlay:-}" ] && printf -- '--overlay %s ' "$overlay"
  for kv in ${overrides:-}; do printf -- '--set %s ' "$kv"; done
  [ "${force:-false}" = true ] && printf -- '--force '
  [ "${quiet:-false}" = true ] && printf -- '--quiet '
  return 0
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
