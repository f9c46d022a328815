"""``python -m bench.childstat STATS.json COMMAND...``: run COMMAND, then write its peak resident
memory and CPU time to STATS.json; exit with its exit code.

Why a separate small process: Linux carries a process's peak-RSS record across ``fork`` and
``exec``, so a command started straight from the benchmark process (which holds models and data)
would report the benchmark's own peak as its own. Started from this process, which imports only
the standard library, the command's ``wait4`` figures are its own; they cover the command and
every descendant it waited for.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys


def main(argv: list[str]) -> int:
    stats_path, cmd = argv[0], argv[1:]
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    with open(stats_path, "w") as f:
        json.dump({"peak_rss_mb": usage.ru_maxrss / 1024.0, "cpu_seconds": usage.ru_utime + usage.ru_stime}, f)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
