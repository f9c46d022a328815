# Job launchers for this recipe (Kaldi's cmd.sh contract: $cmd [options] JOB=1:N <log> <command>).
# Local machine (default): bounded parallel processes.
export train_cmd="utils/run.pl"
export decode_cmd="utils/run.pl"
export cpu_cmd="utils/run.pl"

# A Slurm cluster: one job array per parallel step (see utils/slurm.pl for its options).
# export train_cmd="utils/slurm.pl --mem 8G --num-threads 2"
# export decode_cmd="utils/slurm.pl --mem 4G"
# export cpu_cmd="utils/slurm.pl --mem 2G"
