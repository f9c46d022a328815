#!/usr/bin/env perl
# queue.pl: run.pl's contract on a Grid Engine (SGE, OGE, UGE) cluster; all tasks go in ONE
# task array.
#
#   queue.pl [options] [JOB=1:N | JOB=N] <log-file> <command...>
#   e.g. queue.pl --mem 4G --num-threads 2 JOB=1:8 exp/x/log/a.JOB.log my-prog --part JOB
#
# Same log format, exit status and failure report as utils/run.pl (see its header); the log's
# third line is "# Running on <host> (SGE job <id>.<task>)". A task killed with SIGKILL (exit
# code 137, what Grid Engine does at a memory limit) is reported as probably out of memory.
#
# How: writes a job script <log-dir>/q/<name>.sh (…/log/q becomes …/q, as in Kaldi) and runs
# `qsub ... -o <q>/<name>.out -t FIRST:LAST [-tc K] -sync y <script>`, which returns when every
# task has ended; each task writes its exit code to <q>/<name>.done.<pid>.<task>, and a task
# without one (killed by the queue, lost) counts as failed. The script exits 1, not the
# command's code, on failure: Grid Engine gives codes 99 and 100 special meanings.
#
# Options (turned into qsub options by the config file):
#   --config FILE      default conf/queue.conf if it exists, else the built-in config below
#   --mem M            e.g. 4G: -l mem_free=M,ram_free=M
#   --num-threads N    -pe smp N (and threads=N in the Accounting line)
#   --gpu G            -l gpu=G -q g.q; --gpu 0 adds nothing
#   --max-jobs-run K   at most K tasks at once (-tc K); -tc K is the same
#   -x value, -V       passed to qsub as they are (e.g. -q all.q)
# Config file: Kaldi's format, as described in utils/slurm.pl. The built-in config:
#   command qsub -V -cwd -S /bin/bash -j y
#   option name=* -N $0
#   option mem=* -l mem_free=$0,ram_free=$0
#   option mem=0
#   option num_threads=* -pe smp $0
#   option num_threads=1
#   default gpu=0
#   option gpu=0
#   option gpu=* -l gpu=$0 -q g.q
use strict;
use warnings;
use Cwd qw(getcwd);
use FindBin;
use lib $FindBin::RealBin;
use JobLauncher qw(parse_command_line job_script cluster_options report_and_exit write_file
                   batch_files read_exit_code run_capture);

my $prog = 'queue.pl';
my $builtin_config = <<'EOF';
command qsub -V -cwd -S /bin/bash -j y
option name=* -N $0
option mem=* -l mem_free=$0,ram_free=$0
option mem=0
option num_threads=* -pe smp $0
option num_threads=1
default gpu=0
option gpu=0
option gpu=* -l gpu=$0 -q g.q
EOF

my ($job, $submit, $files);
eval {
  $job = parse_command_line(\@ARGV, $prog);
  my $config = $job->{opts}{config} // (-r 'conf/queue.conf' ? 'conf/queue.conf' : undef);
  my ($command, $options) = cluster_options($prog, $job->{opts}, $config, $builtin_config);
  $files = batch_files($job);
  my @throttle = defined $job->{opts}{max_jobs_run} ? ('-tc', $job->{opts}{max_jobs_run}) : ();
  $submit = [@$command, @$options, @{$job->{native}}, '-o', $files->{out},
             '-t', "$job->{first}:$job->{last}", @throttle, '-sync', 'y', $files->{script}];
  write_file($files->{script}, job_script(
    job => $job, prog => $prog, task => '$SGE_TASK_ID', cwd => getcwd(),
    label => ' (SGE job ${JOB_ID}.${SGE_TASK_ID})', done_prefix => $files->{done_prefix},
    exit_code => 'ret != 0') . "# Submitted with: @$submit\n");
};
if ($@) { print STDERR $@; exit 1; }

my ($status, $output) = run_capture(@$submit);
my %results;
for my $task ($job->{first} .. $job->{last}) {
  $results{$task} = { code => read_exit_code($files->{done_prefix}, $task) };
}
if ($status != 0 && !grep { defined $_->{code} } values %results) {
  print STDERR "$prog: qsub failed (exit status $status): $output"
    . "$prog: the command was: @$submit\n";
  exit 1;
}
unlink map { "$files->{done_prefix}.$_" } $job->{first} .. $job->{last};
report_and_exit($prog, $job, \%results);
