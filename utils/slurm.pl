#!/usr/bin/env perl
# slurm.pl: run.pl's contract on a Slurm cluster; all tasks go in ONE job array.
#
#   slurm.pl [options] [JOB=1:N | JOB=N] <log-file> <command...>
#   e.g. slurm.pl --mem 4G --num-threads 2 JOB=1:8 exp/x/log/a.JOB.log my-prog --part JOB
#
# Same log format, exit status and failure report as utils/run.pl (see its header): each log
# starts with "# <command>", "# Started at <date>", "# Running on <host> (Slurm job <id>_<task>)",
# ends with "# Accounting: time=S threads=N" and "# Ended (code N) at <date>, elapsed time S
# seconds". Slurm's own verdicts are reported too: state OUT_OF_MEMORY ("out of memory"),
# CANCELLED (scancel), TIMEOUT. Ctrl-C or SIGTERM to slurm.pl cancels the job array (and it
# waits for the tasks' verdicts; a second Ctrl-C stops waiting).
#
# How: writes a job script <log-dir>/q/<name>.sh (…/log/q becomes …/q, as in Kaldi), submits it
# with `sbatch --parsable --array=FIRST-LAST[%K] --output=<q>/<name>.out`, and waits: each task
# writes its exit code to <q>/<name>.done.<pid>.<task>; squeue (-t all, no accounting storage
# needed) is asked every 1 s at first, every 10 s at most later, so that tasks cancelled or
# killed before writing one are noticed.
# The job runs in the current directory with the submitting environment (--export=ALL).
#
# Options (turned into sbatch options by the config file):
#   --config FILE      default conf/slurm.conf if it exists, else the built-in config below
#   --mem M            e.g. 4G, 500M: the job's memory (killed, state OUT_OF_MEMORY, beyond it)
#   --num-threads N    CPUs per task (and threads=N in the Accounting line)
#   --gpu G            GPUs per task (partition gpu, --gres=gpu:G); 0 = partition shared
#   --time T           time limit, e.g. 4:00:00
#   --max-jobs-run K   at most K tasks at once (--array=...%K); -tc K is the same
#   -x value, -V       passed to sbatch as they are (e.g. -p other-partition)
# Config file (Kaldi's format; a line per directive; $0 = the option's value):
#   command sbatch --export=ALL          the submit command and its fixed options
#   option mem=* --mem=$0                for --mem V
#   option gpu=0 -p shared               for --gpu 0 exactly (maybe nothing after it)
#   default gpu=0                        the value when the option is not given
# An option the config does not describe is an error. The built-in config:
#   command sbatch --export=ALL --ntasks-per-node=1
#   option time=* --time=$0
#   option mem=* --mem=$0
#   option mem=0
#   option num_threads=* --cpus-per-task=$0
#   default gpu=0
#   option gpu=0 -p shared
#   option gpu=* -p gpu --gres=gpu:$0
use strict;
use warnings;
use Cwd qw(getcwd);
use FindBin;
use lib $FindBin::RealBin;
use Time::HiRes qw(sleep time);
use JobLauncher qw(parse_command_line job_script cluster_options report_and_exit write_file
                   batch_files read_exit_code run_capture);

my $prog = 'slurm.pl';
my $builtin_config = <<'EOF';
command sbatch --export=ALL --ntasks-per-node=1
option time=* --time=$0
option mem=* --mem=$0
option mem=0
option num_threads=* --cpus-per-task=$0
default gpu=0
option gpu=0 -p shared
option gpu=* -p gpu --gres=gpu:$0
EOF
my %terminal = map { $_ => 1 } qw(BOOT_FAIL CANCELLED COMPLETED DEADLINE FAILED NODE_FAIL
                                  OUT_OF_MEMORY PREEMPTED REVOKED TIMEOUT);

my ($job, $submit, $files);
eval {
  $job = parse_command_line(\@ARGV, $prog);
  my $config = $job->{opts}{config} // (-r 'conf/slurm.conf' ? 'conf/slurm.conf' : undef);
  my ($command, $options) = cluster_options($prog, $job->{opts}, $config, $builtin_config);
  $files = batch_files($job);
  my $throttle = defined $job->{opts}{max_jobs_run} ? "%$job->{opts}{max_jobs_run}" : '';
  $submit = [@$command, @$options, @{$job->{native}}, '--parsable', "--job-name=$files->{name}",
             '--open-mode=append', "--output=$files->{out}",
             "--array=$job->{first}-$job->{last}$throttle", $files->{script}];
  write_file($files->{script}, job_script(
    job => $job, prog => $prog, task => '$SLURM_ARRAY_TASK_ID', cwd => getcwd(),
    label => ' (Slurm job ${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID})',
    done_prefix => $files->{done_prefix}) . "# Submitted with: @$submit\n");
};
if ($@) { print STDERR $@; exit 1; }

my ($status, $output) = run_capture(@$submit);
my ($job_id) = $output =~ m/^(\d+)/m;
if ($status != 0 || !defined $job_id) {
  print STDERR "$prog: sbatch failed (exit status $status): $output"
    . "$prog: the command was: @$submit\n";
  exit 1;
}

# squeue_states() -> {task => state}, or undef when squeue itself fails (e.g. no controller);
# an empty hash when Slurm no longer knows the job. Tasks still in the array's unsplit record
# (task field "2-3%1", "[5,7-9]" or, once cancelled, "N/A") get that record's state; the key
# '*' holds the state of an "N/A" record.
sub squeue_states {
  my ($rc, $out) = run_capture('squeue', '-h', '-r', '-t', 'all', '-j', $job_id, '-o', '%K|%T');
  return {} if $rc != 0 && $out =~ m/Invalid job id/i;
  return undef if $rc != 0;
  my %states;
  for my $line (split /\n/, $out) {
    my ($tasks, $state) = $line =~ m/^(\S+)\|(\w+)/ or next;
    if ($tasks eq 'N/A') { $states{'*'} = $state; next; }
    $tasks =~ s/[\[\]]//g;
    $tasks =~ s/%\d+$//;
    for my $range (split /,/, $tasks) {
      my ($from, $to) = $range =~ m/^(\d+)(?:-(\d+))?$/ or next;
      $states{$_} = $state for $from .. ($to // $from);
    }
  }
  return \%states;
}

# The first signal cancels the job and waits for the tasks' verdicts; a second one gives up.
my $cancelled = 0;
$SIG{$_} = sub {
  if ($cancelled++) {
    print STDERR "$prog: interrupted again; not waiting for Slurm job $job_id\n";
    exit 1;
  }
  print STDERR "$prog: interrupted; cancelling Slurm job $job_id\n";
  run_capture('scancel', $job_id);
} for qw(INT TERM HUP);

my %waiting = map { $_ => 1 } $job->{first} .. $job->{last};
my (%results, %terminal_since);
# squeue is asked every second at first, then less often (at most every 10 s) for long jobs.
my $submitted = time;
my ($delay, $next_check, $unknown_since) = (0.05, time + 1, undef);
while (%waiting) {
  for my $task (keys %waiting) {
    my $code = read_exit_code($files->{done_prefix}, $task);
    next unless defined $code;
    $results{$task} = { code => $code };
    delete $waiting{$task};
  }
  last unless %waiting;
  if (time >= $next_check) {
    my $interval = 1 + (time - $submitted) / 20;
    $next_check = time + ($interval > 10 ? 10 : $interval);
    my $states = squeue_states();
    if (defined $states && !%$states) {
      $unknown_since //= time;
    } elsif (defined $states) {
      $unknown_since = undef;
    }
    for my $task (keys %waiting) {
      my $state = defined $states ? $states->{$task} // $states->{'*'} : undef;
      # A terminal state with no exit code after a few seconds: the task never wrote one.
      if (defined $state && $terminal{$state}) {
        $terminal_since{$task} //= time;
        if (time - $terminal_since{$task} >= 2) {
          $results{$task} = { state => $state };
          delete $waiting{$task};
        }
      } elsif (defined $unknown_since && time - $unknown_since >= 10) {
        $results{$task} = { state => 'UNKNOWN_TO_SLURM' };
        delete $waiting{$task};
      }
    }
  }
  sleep $delay;
  $delay = $delay * 1.3 > 0.5 ? 0.5 : $delay * 1.3;
}

# Slurm's verdict on the failed tasks (OUT_OF_MEMORY, CANCELLED, ...), once it has one.
my @failed = grep { defined $results{$_}{code} && $results{$_}{code} != 0 } keys %results;
for (my $tries = 0; @failed && $tries < 20; $tries++) {
  my $states = squeue_states() // {};
  my @open;
  for my $task (@failed) {
    my $state = $states->{$task} // $states->{'*'};
    if (defined $state && !$terminal{$state}) { push @open, $task; next; }
    $results{$task}{state} = $state if defined $state;
  }
  @failed = @open;
  sleep 0.2 if @failed;
}
unlink map { "$files->{done_prefix}.$_" } $job->{first} .. $job->{last};
report_and_exit($prog, $job, \%results);
