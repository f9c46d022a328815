"""Atomic file writing: every artifact appears under its final name only when complete.

A writer gets a temporary path in the same directory (so ``os.replace`` is atomic on POSIX) and
the file is renamed into place only if the block finishes without an exception; otherwise the
temporary file is removed and any earlier artifact under the final name is left untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

from neurosel.errors import NeuroselError

# errors of a write that the user must fix on the machine (space, quota, a read-only disk)
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` on success.

    The temporary name (``.<name>.<random>.tmp<suffix>``, see ``is_temporary``) keeps the suffix
    of ``path`` so that libraries that pick a format by extension (Lhotse manifests
    ``.jsonl.gz``, matplotlib ``.png``) behave as for the final name. A full disk, a quota or a
    read-only file system while writing raises ``NeuroselError`` naming ``path``.

    ``durable``: ``fsync`` the file before the rename, so that after a power loss or an OS crash
    ``path`` holds the old or the new content, not an empty file. It costs about 20 ms per file
    on a virtual disk (ext4), which is why only checkpoints, models and statistics
    (``torch_save``: hours of work, a few files per stage) ask for it; see docs/reliability.md.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    except OSError as e:
        _raise_write_error(path, e)
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; artifacts get the usual mode
    try:
        yield tmp_path
        if path.name.endswith(".gz"):
            _deterministic_gzip(tmp_path)
        if durable:
            _fsync(tmp_path)
        os.replace(tmp_path, path)
    except Exception as e:
        _raise_write_error(path, e)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success, replace ``path`` with it.

    A folder cannot be renamed over another one, so an earlier ``path`` is removed just before the
    rename: a kill between the two leaves no ``path`` (never a mix of two versions). A full disk, a
    quota or a read-only file system while writing raises ``NeuroselError`` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        _raise_write_error(path, e)
        raise
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except Exception as e:
        _raise_write_error(path, e)
        raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _fsync(path: Path) -> None:
    """Flush ``path``'s data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_GZIP_FHCRC, _GZIP_FEXTRA, _GZIP_FNAME, _GZIP_FCOMMENT = 2, 4, 8, 16


def _deterministic_gzip(path: Path) -> None:
    """Zero the modification time and drop the file name (the random temporary one) in the header
    of the gzip file ``path`` (RFC 1952), so that the same content always has the same bytes: the
    input hashes of later stages then see a redone manifest as unchanged. Rewrites the file."""
    with open(path, "rb") as f:
        head = f.read(10)
        if len(head) < 10 or head[:3] != b"\x1f\x8b\x08":
            return
        flags = head[3]
        if head[4:8] == b"\0\0\0\0" and not flags & (_GZIP_FNAME | _GZIP_FHCRC):
            return
        kept = b""
        if flags & _GZIP_FEXTRA:
            size = f.read(2)
            kept += size + f.read(int.from_bytes(size, "little"))
        for flag in (_GZIP_FNAME, _GZIP_FCOMMENT):
            if flags & flag:
                text = b""
                while not text.endswith(b"\0"):
                    byte = f.read(1)
                    if not byte:
                        return  # not a whole header: leave it to the reader to complain
                    text += byte
                if flag == _GZIP_FCOMMENT:
                    kept += text
        if flags & _GZIP_FHCRC:
            f.read(2)
        header = head[:3] + bytes([flags & ~(_GZIP_FNAME | _GZIP_FHCRC)]) + b"\0\0\0\0" + head[8:10] + kept
        fd, rewritten = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                shutil.copyfileobj(f, out, 1 << 20)
            os.chmod(rewritten, path.stat().st_mode & 0o777)
            os.replace(rewritten, path)
        finally:
            if os.path.exists(rewritten):
                os.unlink(rewritten)


def is_temporary(path: str | Path) -> bool:
    """True for a temporary file of ``atomic_path`` (one a killed writer may leave behind)."""
    return bool(_TEMPORARY.match(Path(path).name))


def write_error(e: BaseException) -> OSError | None:
    """The out-of-space (quota, too large, read-only) ``OSError`` behind ``e``, if any: libraries
    such as torch wrap the ``OSError`` of a failed write in an exception of their own."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _WRITE_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _raise_write_error(path: Path, e: BaseException) -> None:
    cause = write_error(e)
    if cause is not None and not isinstance(e, NeuroselError):
        raise NeuroselError(f"{path}: cannot write ({os.strerror(cause.errno)}); "
                            f"an earlier {path.name}, if any, is unchanged") from e


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (a killed save never leaves a truncated file) and
    durably (``fsync`` before the rename: a checkpoint outlives a crash of the machine)."""
    import torch

    with atomic_path(path, durable=True) as tmp, open(tmp, "wb") as f:
        # through a file object: given a path, torch names the zip archive after the (random)
        # temporary file, and the same checkpoint would get different bytes
        torch.save(obj, f)


def torch_load(path: str | Path) -> Any:
    """Load a checkpoint or statistics file without executing code (``weights_only=True``).

    Raises ``NeuroselError`` naming the file when it is missing, truncated or not a torch file.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise NeuroselError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NeuroselError(f"{path}: cannot load checkpoint ({first})") from e
