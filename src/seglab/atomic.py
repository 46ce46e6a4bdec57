"""Atomic writes: a file or folder appears whole at its path, or not at all, whatever kills the writer.

The new content is written inside a temporary folder beside the target (".NAME.XXXX.tmp/"), flushed to disk and
renamed over the target in one step. The checkpoints (checkpoint.py) and the dataset caches (data/cache.py)
are written this way.
"""

from __future__ import annotations

import errno
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from .errors import SeglabError


def _remove_stale_temps(path: Path) -> None:
    """Delete the temporary folders of earlier writes of `path` killed before their rename (SIGKILL, power cut).

    A writer holds an exclusive lock on its temporary folder until the rename, so one we can lock is left over.
    (Without fcntl, on Windows, only those untouched for an hour are removed.)
    """
    for tmp in glob.glob(os.path.join(glob.escape(str(path.parent)), f".{glob.escape(path.name)}.*.tmp")):
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # being written right now by another process
            elif time.time() - os.fstat(fd).st_mtime < 3600:
                continue
            if os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                os.unlink(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)


def is_disk_full(e: OSError) -> bool:
    """Did this write fail because the disk is full (ENOSPC)?"""
    return e.errno == errno.ENOSPC


def write_error(e: OSError, path: Path) -> SeglabError:
    """The one-line message for a failed write of `path`."""
    if is_disk_full(e):
        return SeglabError(f"disk full while writing {path}; free some space and resume the run (the previous "
                           "file, if any, is intact)")
    return SeglabError(f"cannot write {path} ({e}); check the folder's permissions and free space")


def atomic_write(
    path: str | Path,
    write: Callable[[Path], object],
    error: Callable[[OSError, Path], SeglabError] = write_error,
    keep_existing: bool = False,
) -> None:
    """Call write(tmp_path) for a file (or a folder it creates) in a temporary folder beside `path`, fsync a
    file, then rename it over `path`.

    A process killed at any point leaves either the old content or the new, never a torn one. The temporary
    folder also catches the temporary files of the writer itself (safetensors >= 0.7 writes through its own
    ".tmpXXXX" file); a killed write leaves it behind, it is never read, and the next write of `path` removes
    it. keep_existing: when the rename fails because another process meanwhile put `path` there (a cache of the
    same key, so the same content), keep theirs. A failed write raises error(OSError, path).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(path)
        tmpdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as e:
        raise error(e, path) from None
    lock = None
    if fcntl is not None:
        try:
            lock = os.open(tmpdir, os.O_RDONLY)
            fcntl.flock(lock, fcntl.LOCK_EX)  # held until the rename: marks the folder as in use
        except OSError:
            pass
    tmp = tmpdir / path.name
    try:
        write(tmp)
        if tmp.is_file():
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError:
            if not (keep_existing and path.exists()):
                raise
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            os.fsync(dfd)
            os.close(dfd)
        except OSError:
            pass
    except OSError as e:
        raise error(e, path) from None
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
        if lock is not None:
            os.close(lock)  # releases the lock
