# What utils/run.pl, utils/slurm.pl and utils/queue.pl share: the command line of Kaldi's
# launcher contract, the bash script that runs one task and writes its log, the cluster config
# file (Kaldi's conf/queue.conf format) and the failure report. See the header of run.pl for
# the contract itself.
package JobLauncher;

use strict;
use warnings;
use Exporter 'import';
use File::Basename qw(dirname basename);
use File::Path qw(make_path);
use Cwd qw(getcwd);

our @EXPORT_OK = qw(parse_command_line job_script batch_files cluster_options default_max_jobs
                    report_and_exit write_file read_exit_code run_capture);

# parse_command_line(\@argv, $prog) -> hashref
#   opts      {name => value} for each --name value (dashes turned into underscores)
#   native    [args] given in the scheduler's own syntax (-q all.q, -V, -pe smp 4)
#   jobname   the variable of JOB=1:N (undef without one); first, last: the task range (1, 1
#             without JOB); log: the log path (with the variable); command: the command line as
#             one bash string, quoted like Kaldi does (words with spaces in quotes, | kept bare).
# Dies with a usage message on a malformed command line.
sub parse_command_line {
  my ($argv, $prog) = @_;
  my @args = @$argv;
  my (%opts, @native);
  my ($jobname, $first, $last) = (undef, 1, 1);
  my $usage = "Usage: $prog [options] [JOB=1:N] <log-file> <command...>\n"
    . "  e.g. $prog --num-threads 2 JOB=1:4 exp/log/x.JOB.log my-prog --part JOB\n";
  # Options and JOB=a:b may be interleaved, as with Kaldi's launchers.
  my $progress = 1;
  while ($progress && @args >= 2) {
    $progress = 0;
    while (@args >= 2 && $args[0] =~ m/^-/) {
      my $switch = shift @args;
      $progress = 1;
      if ($switch =~ m/^--(.+)$/) {
        $opts{$1 =~ s/-/_/gr} = shift @args;
      } elsif ($switch eq '-tc') {  # GridEngine's spelling of --max-jobs-run
        $opts{max_jobs_run} = shift @args;
      } elsif ($switch eq '-V') {
        push @native, $switch;
      } elsif ($switch eq '-pe') {
        push @native, $switch, splice(@args, 0, 2);
      } else {
        push @native, $switch, shift @args;
      }
    }
    if (@args && $args[0] =~ m/^([A-Za-z_]\w*)=(\d+)(?::(\d+))?$/) {
      ($jobname, $first, $last) = ($1, $2, defined $3 ? $3 : $2);
      die "$prog: invalid job range $args[0] (first must be >= 1 and <= last)\n"
        if $first < 1 || $first > $last;
      shift @args;
      $progress = 1;
    }
  }
  die $usage if @args < 2;
  for my $int (qw(num_threads max_jobs_run)) {
    die "$prog: --" . ($int =~ s/_/-/gr) . " must be a positive integer, got '$opts{$int}'\n"
      if defined $opts{$int} && $opts{$int} !~ m/^[1-9]\d*$/;
  }
  my $log = shift @args;
  if (defined $jobname && $last > $first && index($log, $jobname) < 0) {
    die "$prog: you are trying to run a parallel job but putting the output into one log "
      . "file ($log): put $jobname in its name\n";
  }
  return { opts => \%opts, native => \@native, jobname => $jobname, first => $first,
           last => $last, log => $log, command => quote_command(@args) };
}

# Kaldi's quoting: a word without white space as is (so |, > and ; reach bash), one with
# double quotes in single quotes, any other in double quotes.
sub quote_command {
  return join ' ', map { m/^\S+$/ ? $_ : m/"/ ? "'$_'" : "\"$_\"" } @_;
}

# One bash word for any string: single quotes, with ' written as '\''.
sub shell_quote { my ($s) = @_; return "'" . ($s =~ s/'/'\\''/gr) . "'"; }

# task_log($job, $task) -> the log path of one task.
sub task_log {
  my ($job, $task) = @_;
  my $log = $job->{log};
  $log =~ s/\Q$job->{jobname}\E/$task/g if defined $job->{jobname};
  return $log;
}

# job_script(%args) -> the text of a bash script that runs one task. Arguments:
#   job (from parse_command_line), task ('$1', '$SLURM_ARRAY_TASK_ID', ...: bash expression
#   of the task index), label (text after the host name in the log header, expanded by bash
#   inside double quotes), cwd (cd there
#   first, for batch systems), done_prefix (write the exit code to "<done_prefix>.<task>"),
#   exit_code (bash arithmetic expression of the script's exit code; default: the command's).
# The log: "# <command>", "# Started at <date>", "# Running on <host>...", "#", the command's
# stdout and stderr, "# Accounting: time=S threads=N", "# Ended (code N) at <date>, elapsed time
# S seconds". SIGTERM/SIGINT/SIGHUP (scancel, Ctrl-C) are passed on to the command's whole
# process group and the footer is still written.
sub job_script {
  my %a = @_;
  my $job = $a{job};
  my $threads = $job->{opts}{num_threads} // 1;
  my $q = \&shell_quote;
  my $text = "#!/usr/bin/env bash\n"
    . "# One task of: $job->{log}; written by $a{prog}.\n"
    . "task=$a{task}\n"
    . "cmd_template=" . $q->($job->{command}) . "\n"
    . "log_template=" . $q->($job->{log}) . "\n"
    . "jobname=" . $q->($job->{jobname} // '') . "\n";
  $text .= "cd " . $q->($a{cwd}) . " || exit 1\n" if defined $a{cwd};
  my $finish = defined $a{done_prefix}
    ? "  printf '%d\\n' \"\$1\" > " . $q->("$a{done_prefix}.") . "\"\$task.tmp\" &&"
      . " mv -f " . $q->("$a{done_prefix}.") . "\"\$task.tmp\" " . $q->("$a{done_prefix}.") . "\"\$task\"\n"
    : '';
  my $exit_code = $a{exit_code} // 'ret';
  my $label = $a{label} // '';
  $text .= <<"EOF";
finish() {
$finish  ret=\$1
  exit \$(( $exit_code ))
}
if [ -n "\$jobname" ]; then
  cmd=\${cmd_template//"\$jobname"/\$task}
  log=\${log_template//"\$jobname"/\$task}
else
  cmd=\$cmd_template
  log=\$log_template
fi
mkdir -p -- "\$(dirname -- "\$log")"
if ! { printf '# %s\\n# Started at %s\\n# Running on %s%s\\n#\\n' "\$cmd" "\$(date)" "\$(hostname)" "$label" > "\$log"; } 2>/dev/null; then
  echo "$a{prog}: cannot write the log file \$log" >&2
  finish 1
fi
start=\$(date +%s)
setsid bash -c "\$cmd" </dev/null >>"\$log" 2>&1 &
child=\$!
interrupted=
trap 'interrupted=1; kill -TERM -- -\$child 2>/dev/null' TERM INT HUP
wait \$child 2>/dev/null
ret=\$?
while [ -n "\$interrupted" ] && kill -0 \$child 2>/dev/null; do wait \$child 2>/dev/null; ret=\$?; done
end=\$(date +%s)
printf '# Accounting: time=%d threads=%d\\n# Ended (code %d) at %s, elapsed time %d seconds\\n' \\
  \$((end - start)) $threads \$ret "\$(date)" \$((end - start)) >> "\$log"
finish \$ret
EOF
  return $text;
}

# batch_files($job) -> {name, script, out, done_prefix}: the files of a batch launcher, in the
# log's folder plus q/ (.../log/q shortened to .../q, as in Kaldi), absolute paths. name: the
# log's file name without the JOB variable and extension; script: <q>/<name>.sh; out: where the
# scheduler writes (<q>/<name>.out); done_prefix: each task writes its exit code to
# <done_prefix>.<task>, unique to this launcher process.
sub batch_files {
  my ($job) = @_;
  my $log = $job->{log};
  $log = getcwd() . "/$log" unless $log =~ m{^/};
  my $name = basename($log);
  $name =~ s/\.?\Q$job->{jobname}\E//g if defined $job->{jobname};
  $name =~ s/\.[A-Za-z]{1,5}$//;
  my $dir = dirname($log) . "/q";
  $dir =~ s{/log/q$}{/q};
  make_path($dir);
  return { name => $name, script => "$dir/$name.sh", out => "$dir/$name.out",
           done_prefix => "$dir/$name.done.$$" };
}

# read_exit_code($done_prefix, $task) -> the exit code a task wrote, or undef if none yet.
sub read_exit_code {
  my ($prefix, $task) = @_;
  open(my $fh, '<', "$prefix.$task") or return undef;
  my $line = <$fh> // '';
  close $fh;
  return $line =~ m/^(\d+)/ ? $1 : undef;
}

# run_capture(@argv) -> ($exit_status, $stdout_and_stderr), without a shell; status 127 when
# the program cannot be run.
sub run_capture {
  my @argv = @_;
  my $pid = open(my $fh, '-|');
  return (127, "cannot fork: $!\n") unless defined $pid;
  if ($pid == 0) {
    open(STDERR, '>&', \*STDOUT);
    exec { $argv[0] } @argv or do { print "cannot run $argv[0]: $!\n"; exit 127; };
  }
  local $/;
  my $out = <$fh> // '';
  close $fh;
  return ($? & 127 ? 128 + ($? & 127) : $? >> 8, $out);
}

# cluster_options($prog, \%opts, $config_file, $default_config) -> (\@command, \@options)
# Kaldi's config format, one directive a line (# starts a comment):
#   command <program and fixed options>     the submit command
#   option <name>=* <options with $0>       for --name V: the options, $0 replaced by V
#   option <name>=<value> [<options>]       for --name <value> exactly: these options (maybe none)
#   default <name>=<value>                  --name <value> when not given on the command line
# --config and --max-jobs-run are the launcher's own; any other --name must be described.
# Words are split on white space and passed to the command without a shell.
sub cluster_options {
  my ($prog, $opts, $config_file, $default_config) = @_;
  my @lines;
  if (defined $config_file) {
    open(my $fh, '<', $config_file) or die "$prog: cannot read the config file $config_file: $!\n";
    @lines = <$fh>;
    close $fh;
  } else {
    @lines = split /\n/, $default_config;
    $config_file = 'the built-in default config';
  }
  my %given = %$opts;
  my (@command, %exact, %pattern);
  for my $line (@lines) {
    (my $body = $line) =~ s/#.*//;
    $body =~ s/^\s+|\s+$//g;
    next if $body eq '';
    if ($body =~ m/^command\s+(.+)$/) {
      @command = split ' ', $1;
    } elsif ($body =~ m/^option\s+(\w+)=\*\s+(.+)$/) {
      $pattern{$1} = $2;
    } elsif ($body =~ m/^option\s+(\w+)=(\S+)\s*(.*)$/) {
      $exact{"$1=$2"} = $3;
    } elsif ($body =~ m/^default\s+(\w+)=(\S+)$/) {
      $given{$1} //= $2;
    } else {
      die "$prog: cannot parse the line '$line' of $config_file\n";
    }
  }
  die "$prog: $config_file has no 'command ...' line\n" unless @command;
  my @options;
  for my $name (sort keys %given) {
    next if $name eq 'config' || $name eq 'max_jobs_run';
    my $value = $given{$name};
    my $text;
    if (exists $exact{"$name=$value"}) {
      $text = $exact{"$name=$value"};
    } elsif (exists $pattern{$name}) {
      $text = $pattern{$name} =~ s/\$0/$value/gr;
    } else {
      die "$prog: option --" . ($name =~ s/_/-/gr) . " $value is not described in $config_file\n";
    }
    push @options, split ' ', $text;
  }
  return (\@command, \@options);
}

# default_max_jobs() -> the number of CPU cores (run.pl's default parallelism).
sub default_max_jobs {
  my $n = 0;
  if (open(my $fh, '<', '/proc/cpuinfo')) {
    $n = grep { m/^processor\s*:/ } <$fh>;
    close $fh;
  }
  if (!$n) {
    my $out = `getconf _NPROCESSORS_ONLN 2>/dev/null` // '';
    $n = $out =~ m/^(\d+)/ ? $1 : 4;
  }
  return $n;
}

# write_file($path, $text): written to a temporary file, then renamed.
sub write_file {
  my ($path, $text) = @_;
  make_path(dirname($path));
  open(my $fh, '>', "$path.tmp$$") or die "cannot write $path.tmp$$: $!\n";
  print $fh $text;
  close($fh) or die "cannot write $path.tmp$$: $!\n";
  rename("$path.tmp$$", $path) or die "cannot rename $path.tmp$$ to $path: $!\n";
}

# What went wrong with one task, for the report. $r: {code (undef: no exit status), state (the
# scheduler's final state, if known)}; $mem: the --mem asked for, if any.
sub failure_reason {
  my ($r, $mem) = @_;
  my ($code, $state) = ($r->{code}, $r->{state} // '');
  my $asked = defined $mem ? " (asked for --mem $mem)" : '';
  my $exit = defined $code ? "exit code $code" : 'no exit status';
  return "out of memory: killed at its memory limit$asked, state OUT_OF_MEMORY; $exit"
    if $state eq 'OUT_OF_MEMORY';
  return "cancelled (state CANCELLED); $exit" if $state eq 'CANCELLED';
  return "hit its time limit (state TIMEOUT); $exit" if $state eq 'TIMEOUT';
  return "not run: the launcher was interrupted first" if $state eq 'NOT_RUN';
  return "did not finish: $exit" . ($state ? ", scheduler state $state" : ' (killed or lost by the scheduler?)')
    unless defined $code;
  return "killed by SIGKILL (exit code 137): probably out of memory$asked" if $code == 137;
  return "killed by signal " . ($code - 128) . " (exit code $code)" if $code > 128;
  return "exit code $code" . ($state && $state ne 'FAILED' && $state ne 'COMPLETED' ? ", state $state" : '');
}

# report_and_exit($prog, $job, \%results): prints a line for each failed task (at most 10) and
# "<prog>: K / N failed, log is in <log of the first failed task>", then exits 1; exits 0 when
# every task has code 0. %results: task => {code, state}.
sub report_and_exit {
  my ($prog, $job, $results) = @_;
  my @failed = grep { my $r = $results->{$_}; !defined $r->{code} || $r->{code} != 0 }
               sort { $a <=> $b } keys %$results;
  exit 0 unless @failed;
  my $shown = 0;
  for my $task (@failed) {
    last if ++$shown > 10;
    print STDERR "$prog: " . task_log($job, $task) . ": "
      . failure_reason($results->{$task}, $job->{opts}{mem}) . "\n";
  }
  print STDERR "$prog: ... and " . (@failed - 10) . " more\n" if @failed > 10;
  my $total = $job->{last} - $job->{first} + 1;
  print STDERR "$prog: " . scalar(@failed) . " / $total failed, log is in "
    . task_log($job, $failed[0]) . "\n";
  exit 1;
}

1;
