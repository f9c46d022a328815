"""The stage protocol and its markers.

Every stage's command line (``neurosel.bin.<stage>``) answers the same protocol, which
``steps/*.sh`` rely on instead of parsing printed text:

- ``status``: exit ``UP_TO_DATE`` (0) when every output is up to date, ``STALE`` (3) when there
  is work to do, anything else on an error (1: a ``NeuroselError``, e.g. a broken config or a
  missing input; 2: a usage error), after which a step stops instead of launching jobs;
  A single-job stage (prepare, lang, train) takes ``status`` as an optional first word before its
  usual arguments (``split_action``); without it, it runs;
- a job action (``--job J --num-jobs N``) that does its share of the work, skipping what is up to
  date; ``merge``, which joins the jobs' outputs and writes the markers; ``list``, which prints
  the stage's units of work, one per line.

Markers: a ``.done`` file per stage output folder holding a hash of the stage's resolved config
and inputs. A rerun skips a stage whose hash matches and redoes one whose hash changed.

Inputs are hashed by content for small files and by (size, mtime_ns) for large ones, so that a
changed input on disk is detected without reading gigabytes of features each time. In an input
folder, markers and the temporary files of a killed atomic write (``neurosel.io.is_temporary``)
are not part of the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from neurosel.errors import NeuroselError
from neurosel.io import is_temporary, write_json

log = logging.getLogger("neurosel.stage")

MARKER = ".done"
UP_TO_DATE = 0
STALE = 3
_CONTENT_HASH_LIMIT = 8 << 20


def fingerprint(config: Any, inputs: Iterable[str | Path] = ()) -> str:
    """SHA-256 over the JSON of ``config`` and the state of each input file or folder."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for p in sorted(Path(x) for x in inputs):
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.name != MARKER and not is_temporary(q)) \
            if p.is_dir() else [p]
        for f in files:
            h.update(str(f).encode())
            if not f.exists():
                h.update(b"<missing>")
            elif f.stat().st_size <= _CONTENT_HASH_LIMIT:
                h.update(hashlib.sha256(f.read_bytes()).digest())
            else:
                st = f.stat()
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def status(out_dir: str | Path, digest: str) -> str:
    """``"done"`` if ``out_dir`` holds a marker with ``digest``; ``"stale"`` if it holds another
    one; ``"new"`` if it holds none."""
    marker = Path(out_dir) / MARKER
    if not marker.is_file():
        return "new"
    try:
        old = json.loads(marker.read_text())["hash"]
    except (ValueError, KeyError):
        return "stale"
    return "done" if old == digest else "stale"


def mark_done(out_dir: str | Path, digest: str, **info: Any) -> None:
    """Write the marker last, after every artifact of the stage is in place."""
    write_json(Path(out_dir) / MARKER, {"hash": digest, **info})


def clear(out_dir: str | Path) -> None:
    """Remove the marker before redoing a stage, so a killed redo is never taken as done, and the
    temporary files that a killed earlier run of it left in ``out_dir`` (not in its sub-folders,
    which may be other work's outputs)."""
    out_dir = Path(out_dir)
    (out_dir / MARKER).unlink(missing_ok=True)
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if is_temporary(p) and p.is_file():
                p.unlink(missing_ok=True)


def run_once(name: str, out_dir: str | Path, config: Any, inputs: Iterable[str | Path],
             work: Callable[[], None], force: bool = False) -> bool:
    """Run ``work`` unless ``out_dir`` already holds a marker for this config and these inputs.

    Says which: up to date (skipped), new, or changed since the last run (redone). The old marker
    is removed before the work starts and the new one written after it ends, so a killed run is
    redone next time. Returns True when the work ran.
    """
    inputs = list(inputs)
    digest = fingerprint(config, inputs)
    state = status(out_dir, digest)
    if state == "done" and not force:
        log.info("%s: up to date in %s, skipping (use --force to redo)", name, out_dir)
        return False
    reason = {"new": "running", "stale": "config or inputs changed since the last run, redoing",
              "done": "--force given, redoing"}[state]
    log.info("%s: %s -> %s", name, reason, out_dir)
    clear(out_dir)
    work()
    mark_done(out_dir, digest, stage=name)
    return True


def status_code(name: str, out_dir: str | Path, todo: list[str], force: bool = False,
                why: str = "") -> int:
    """The exit code of a ``status`` action: ``STALE`` when ``todo`` (the outputs that are not up
    to date) is not empty or ``force`` is set, else ``UP_TO_DATE``; says which on the log, with
    ``why`` (e.g. that the config changed since the last run) when given."""
    if todo or force:
        log.info("%s: to do in %s%s: %s", name, out_dir, f" ({why})" if why else "",
                 ", ".join(todo) if todo else "everything (--force)")
        return STALE
    log.info("%s: up to date in %s, skipping (use --force to redo)", name, out_dir)
    return UP_TO_DATE


_WHY = {"stale": "config or inputs changed since the last run", "new": "not run yet"}


def why_redo(state: str) -> str:
    """Why a stage in ``state`` (``status``'s answer) is to do: changed, not run yet, or ''."""
    return _WHY.get(state, "")


def split_action(argv: list[str] | None) -> tuple[str, list[str]]:
    """``("status", rest)`` when a single-job stage's arguments start with ``status``, else
    ``("run", argv)`` (``run`` may also be given explicitly)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("status", "run"):
        return argv[0], argv[1:]
    return "run", argv


def single_status(name: str, out_dir: str | Path, config: Any, inputs: Iterable[str | Path],
                  force: bool = False) -> int:
    """``status`` of a single-job stage whose one output folder ``out_dir`` is marked by
    ``run_once`` (or the same fingerprint): ``NeuroselError`` for a missing input, else
    ``status_code`` saying whether it is new, stale or up to date."""
    inputs = list(inputs)
    require(inputs)
    state = status(out_dir, fingerprint(config, inputs))
    return status_code(name, out_dir, [] if state == "done" else [Path(out_dir).name], force,
                       why_redo(state))


def require(paths: Iterable[str | Path]) -> None:
    """``NeuroselError`` naming the first of ``paths`` that does not exist: a stage's ``status``
    checks its inputs, so that a step stops before it launches jobs that could not run."""
    for p in paths:
        if not Path(p).exists():
            raise NeuroselError(f"{p}: no such file (run the earlier stages first)")
