#!/usr/bin/env perl
# run.pl: runs a command, or an array of tasks, as local processes, each with its own log file.
# The launcher contract shared with utils/slurm.pl and utils/queue.pl (Kaldi's):
#
#   run.pl [options] [JOB=1:N | JOB=N] <log-file> <command...>
#
#   run.pl exp/x/log/a.log my-prog --opt "a b" \| sort     one task; the | is bash's (escape it)
#   run.pl JOB=1:4 exp/x/log/a.JOB.log my-prog --part JOB  four tasks, JOB replaced by 1..4
#                                                           in the log path and the command
# Each task runs `bash -c "<command>"` with stdin from /dev/null; its log holds
#   # <command, JOB replaced>
#   # Started at <date>
#   # Running on <host>
#   #
#   <stdout and stderr of the command>
#   # Accounting: time=<seconds> threads=<--num-threads>
#   # Ended (code <exit code>) at <date>, elapsed time <seconds> seconds
# All tasks run, even after one fails. Exit status 0 when every task exits 0; otherwise 1,
# after a line on stderr per failed task (a task killed by SIGKILL, exit code 137, is reported as
# probably out of memory) and "run.pl: K / N failed, log is in <log of the first failed task>".
# Log folders are created. SIGTERM/SIGINT reach each task's whole process group, and the log
# still gets its footer; tasks not started yet are reported as not run.
#
# Options (any other --name value is accepted and ignored, so a cluster's cmd.sh line works):
#   --max-jobs-run K   at most K tasks at once (default: the number of CPU cores, unlike Kaldi's
#                      older unlimited default; -tc K is the same)
#   --num-threads N    written to the log's Accounting line (not enforced)
#   --mem M, --gpu G, --config F, --time T   accepted for compatibility, not enforced
use strict;
use warnings;
use FindBin;
use lib $FindBin::RealBin;
use JobLauncher qw(parse_command_line job_script default_max_jobs report_and_exit);

my $prog = 'run.pl';
my $job = eval { parse_command_line(\@ARGV, $prog) };
if ($@) { print STDERR $@; exit 1; }

my $max_jobs = $job->{opts}{max_jobs_run} // default_max_jobs();
my $script = job_script(job => $job, prog => $prog, task => '$1');

my (%running, %results);
sub reap_one {
  my $pid = waitpid(-1, 0);
  return if $pid <= 0 || !exists $running{$pid};
  my $status = $?;
  my $code = $status & 127 ? 128 + ($status & 127) : $status >> 8;
  $results{delete $running{$pid}} = { code => $code };
}

# On SIGTERM/SIGINT/SIGHUP: start no more tasks, stop the running ones (their logs get footers).
my $interrupted = 0;
$SIG{$_} = sub { $interrupted = 1; kill 'TERM', keys %running; } for qw(TERM INT HUP);

for my $task ($job->{first} .. $job->{last}) {
  reap_one() while keys(%running) >= $max_jobs && !$interrupted;
  if ($interrupted) {
    $results{$task} = { state => 'NOT_RUN' };
    next;
  }
  my $pid = fork();
  die "$prog: cannot fork: $!\n" unless defined $pid;
  if ($pid == 0) {
    exec('bash', '-c', $script, 'run.pl-task', $task) or die "$prog: cannot run bash: $!\n";
  }
  $running{$pid} = $task;
}
reap_one() while %running;

report_and_exit($prog, $job, \%results);
