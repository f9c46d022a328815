#!/usr/bin/env bash
# A real single-node Slurm cluster on 127.0.0.1, for the tests of utils/slurm.pl.
#
#   tools/slurm/cluster.sh start     install what is missing (Debian: munge slurmctld slurmd
#                                    slurm-client), write the config, start munged, slurmctld and
#                                    slurmd, wait until the node is idle. Reuses a cluster this
#                                    script started earlier; leaves alone one it did not start.
#   tools/slurm/cluster.sh stop      stop the daemons this script started (by recorded PID only)
#   tools/slurm/cluster.sh status    exit 0 and print the node state when the cluster answers
#
# The cluster: node `localhost` (CPUs = nproc, RealMemory = 90% of MemTotal), one partition
# `shared` (the partition Kaldi's slurm.pl asks for), DefMemPerCPU=512 so jobs share the node,
# memory enforced through cgroups (a job over its --mem is killed: state OUT_OF_MEMORY), no
# accounting storage, jobs at the nice value of their submitter. A cluster of this script running
# with an older config is restarted when it has no jobs. Files: /etc/slurm/slurm.conf and cgroup.conf (written only when absent or
# written by this script), PIDs and logs in /run/slurm-ci (owned by the slurm user), spool in
# /var/spool/slurm-ci. Needs root and, for a first start, apt-get; otherwise it exits 1 saying
# what is missing. Facts behind the choices: /work/shared/notes/slurm.md.
set -euo pipefail

run_dir=/run/slurm-ci
spool=/var/spool/slurm-ci
pid_record=$run_dir/cluster.pids
slurm_conf=/etc/slurm/slurm.conf
cgroup_conf=/etc/slurm/cgroup.conf
marker="# Written by neurosel tools/slurm/cluster.sh"
packages=(munge slurmctld slurmd slurm-client)

say() { echo "cluster.sh: $*" >&2; }
die() { say "$*"; exit 1; }

# The first node's state, or nothing when no controller answers (`scontrol ping` fails at once
# then; sinfo alone retries for about 9 s).
node_state() {
  scontrol ping >/dev/null 2>&1 || return 0
  timeout 5 sinfo -h -N -o %t 2>/dev/null | head -n 1
}

# Prints "name pid" for each recorded daemon that is still that program.
live_daemons() {
  [ -f "$pid_record" ] || return 0
  local name pid
  while read -r name pid; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$name $pid"
  done < "$pid_record"
  return 0
}

ours_running() {
  local live
  live=$(live_daemons | awk '{print $1}' | grep -cE '^(slurmctld|slurmd)$' || true)
  [ "$live" = 2 ]
}

install_packages() {
  local missing=() p
  for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "missing packages ${missing[*]} and no apt-get to install them"
  say "installing ${missing[*]}"
  # No init system here: a policy-rc.d exiting 101 keeps the package scripts from starting daemons.
  local policy=/usr/sbin/policy-rc.d created=false
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' > $policy; chmod +x $policy; created=true; fi
  local ok=true
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 || ok=false
  $created && rm -f $policy
  $ok || die "apt-get install ${missing[*]} failed (see above)"
}

# Writes $1 with the content on stdin unless it exists and was not written by this script.
write_owned() {
  local path=$1 content
  content=$(cat)
  if [ -e "$path" ] && ! grep -qF "$marker" "$path"; then
    die "$path exists and was not written by this script; refusing to overwrite it (a real cluster?)"
  fi
  [ -e "$path" ] && [ "$(cat "$path")" = "$content" ] && return 0
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" > "$path.tmp" && mv "$path.tmp" "$path"
}

slurm_conf_text() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/^MemTotal:/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
  cat <<EOF
$marker: a single-node test cluster on 127.0.0.1.
ClusterName=neurosel-ci
SlurmctldHost=localhost
SlurmUser=slurm
AuthType=auth/munge
# Without this the daemons listen on 0.0.0.0.
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
StateSaveLocation=$spool/ctld
SlurmdSpoolDir=$spool/d
SlurmctldPidFile=$run_dir/slurmctld.pid
SlurmdPidFile=$run_dir/slurmd.pid
SlurmctldLogFile=$run_dir/slurmctld.log
SlurmdLogFile=$run_dir/slurmd.log
ProctrackType=proctrack/cgroup
TaskPlugin=task/cgroup
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# Pending jobs start within about a second instead of three.
SchedulerParameters=batch_sched_delay=0
ReturnToService=2
KillWait=5
MailProg=/bin/true
# Jobs run at the nice value of the sbatch/srun that submitted them: the cluster shares its
# machine, and "nice -n 19 ./run.sh --cmd utils/slurm.pl" stays as polite as with run.pl.
PropagatePrioProcess=1
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# Without DefMemPerCPU every job asks for all the memory and jobs run one at a time.
PartitionName=shared Nodes=localhost Default=YES MaxTime=INFINITE State=UP DefMemPerCPU=512
EOF
}

cgroup_conf_text() {
  cat <<EOF
$marker.
CgroupPlugin=cgroup/v1
ConstrainRAMSpace=yes
ConstrainSwapSpace=yes
EOF
}

write_config() {
  slurm_conf_text | write_owned "$slurm_conf"
  cgroup_conf_text | write_owned "$cgroup_conf"
}

# Whether the config files on disk are the ones this version of the script writes.
config_current() {
  [ "$(cat "$slurm_conf" 2>/dev/null)" = "$(slurm_conf_text)" ] &&
    [ "$(cat "$cgroup_conf" 2>/dev/null)" = "$(cgroup_conf_text)" ]
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

# start_daemon <name> <command...>: detached (own session, no inherited stdio), PID recorded.
start_daemon() {
  local name=$1
  shift
  setsid "$@" </dev/null >>"$run_dir/$name.out" 2>&1 &
  echo "$name $!" >> "$pid_record"
}

stop_ours() {
  local name pid live
  live=$(live_daemons)
  [ -n "$live" ] || { rm -f "$pid_record"; return 0; }
  # slurmd before slurmctld, munged last: the order they were started, reversed.
  while read -r name pid; do
    say "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
  done < <(echo "$live" | tac)
  local waited=0
  while [ -n "$(live_daemons)" ] && [ $waited -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
  while read -r name pid; do
    say "$name (pid $pid) ignored SIGTERM; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  done < <(live_daemons)
  rm -f "$pid_record"
}

start() {
  local t0
  t0=$(date +%s.%N)
  [ "$(id -u)" = 0 ] || die "needs root (to install packages and start munged/slurmd); run it as root or start a Slurm cluster yourself"
  if ours_running && [[ $(node_state) =~ ^(idle|mix|alloc|comp) ]]; then
    if config_current; then
      say "already running (started earlier by this script)"
      return 0
    fi
    if [ -n "$(squeue -h 2>/dev/null)" ]; then
      say "running with an older config of this script, but jobs are queued; leaving it as it is"
      return 0
    fi
    say "running with an older config of this script and no jobs; restarting it"
  fi
  if ! [ -f "$pid_record" ] && command -v sinfo >/dev/null && [ -n "$(node_state)" ]; then
    say "a Slurm cluster not started by this script already answers (node state $(node_state)); leaving it alone"
    return 0
  fi
  stop_ours
  install_packages
  write_config
  install -d -o slurm -g slurm -m 755 "$run_dir" "$spool" "$spool/ctld" "$spool/d"

  if ! munge_ok; then
    install -d -o munge -g munge -m 755 /run/munge
    # setpriv execs munged (runuser would fork), so the recorded PID is munged's.
    start_daemon munged setpriv --reuid munge --regid munge --init-groups /usr/sbin/munged --foreground
    local i
    for i in $(seq 50); do munge_ok && break; sleep 0.1; done
    munge_ok || { stop_ours; die "munged did not start; see $run_dir/munged.out"; }
  fi

  start_daemon slurmctld /usr/sbin/slurmctld -D -i
  start_daemon slurmd /usr/sbin/slurmd -D -N localhost
  local state= waited=0
  while [ $waited -lt 300 ]; do
    state=$(node_state)
    [ "$state" = idle ] && break
    ours_running || break
    sleep 0.1
    waited=$((waited + 1))
  done
  if [ "$state" != idle ]; then
    say "the node did not become idle (state '${state:-no answer}'); last log lines:"
    tail -n 5 "$run_dir/slurmctld.log" "$run_dir/slurmd.log" "$run_dir"/*.out >&2 2>/dev/null || true
    stop_ours
    exit 1
  fi
  say "cluster up in $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN {printf "%.1f", t1 - t0}') s (node localhost idle, partition shared; pids in $pid_record)"
}

status() {
  local state
  state=$(command -v sinfo >/dev/null && node_state || true)
  if [ -z "$state" ]; then
    say "no Slurm cluster answers"
    return 3
  fi
  if ours_running; then
    say "node localhost $state; daemons started by this script: $(live_daemons | tr '\n' ' ')"
  else
    say "node state $state (cluster not started by this script)"
  fi
}

case ${1:-} in
  start) start ;;
  stop) [ -f "$pid_record" ] && stop_ours; say "stopped" ;;
  status) status ;;
  *) echo "Usage: $0 start|stop|status" >&2; exit 1 ;;
esac
