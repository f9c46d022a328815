"""Shared command-line plumbing for the entry points in ``neurosel.bin``: common flags, logging,
and turning ``NeuroselError`` into a one-line message with a non-zero exit."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Callable

from neurosel.errors import NeuroselError
from neurosel.io import write_error


def config_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--overlay`` and repeated ``--set key=value``."""
    parser.add_argument("--config", help="stage config YAML")
    parser.add_argument("--overlay", help="overlay YAML whose section for this stage wins over --config (several: comma-separated, "
                        "the later wins)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override one config value (dotted keys for nested values)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def job_args(parser: argparse.ArgumentParser) -> None:
    """Add the flags of a Kaldi-style job: ``--job J --num-jobs N`` (its share of the work),
    ``--num-threads`` (torch threads) and ``--force`` (redo even if up to date)."""
    parser.add_argument("--job", type=int, default=1, help="this job's number, 1-based")
    parser.add_argument("--num-jobs", type=int, default=1, help="how many jobs share the work")
    parser.add_argument("--num-threads", type=int, default=1, help="torch threads of this job")
    parser.add_argument("--force", action="store_true", help="redo even if up to date")


def device_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--device auto|cpu|cuda[:N]`` (``auto``: the GPU where PyTorch sees one, else the CPU;
    see ``neurosel.device``). The device changes where the model runs, never a marker's hash."""
    parser.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                        help="where the model runs (default auto: a CUDA device if present, else the CPU)")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars only on a terminal, and never with ``--quiet``."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def exit_on_sigterm() -> None:
    """Turn SIGTERM (``kill``, ``scancel``, a scheduler's time limit) into ``SystemExit(143)``
    raised in the main thread, so that ``finally`` blocks run: an atomic write in progress removes
    its temporary file and the last complete artifact stays as it was. Python's default for
    SIGTERM ends the process at once and leaves the temporary file behind."""
    def terminate(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
        print(f"{_prog()}: terminated (SIGTERM)", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Call ``main`` and exit: 0 on success, 1 with ``prog: error: message`` on ``NeuroselError``
    or on a write that failed for lack of space (quota, read-only disk), 130 on Ctrl-C, 143 on
    SIGTERM (after cleaning up, see ``exit_on_sigterm``)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    exit_on_sigterm()
    try:
        code = main(argv)
    except NeuroselError as e:
        print(f"{_prog()}: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        cause = write_error(e)
        if cause is None:
            raise
        # a write outside neurosel.io (a library's own files, a log): name the file if known
        where = f"{cause.filename}: " if cause.filename else ""
        print(f"{_prog()}: error: {where}cannot write ({os.strerror(cause.errno)})", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)


def _prog() -> str:
    """The program name: ``train`` for ``python -m neurosel.bin.train`` (as its argparse usage
    says), else the script's file name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name.startswith("neurosel."):
        return spec.name.rsplit(".", 1)[-1]
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "neurosel"
