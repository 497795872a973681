"""Getting written data onto the disk: the few system calls pgops' writers share.

``fsync`` per file and directory where one object must be durable before the next step
(the repository's commit protocol); ``syncfs`` where a whole tree was written (a
restore); and ``sync_file_range`` to start writeback early, so the final flush has
little left to wait for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from collections.abc import Callable
from pathlib import Path

_SYNC_FILE_RANGE_WRITE = 2


def writeback_starter() -> Callable[[int, int, int], object] | None:
    """``start(fd, offset, length)``: ``sync_file_range(fd, offset, length,
    SYNC_FILE_RANGE_WRITE)``, which starts writing dirty pages back without waiting
    (what PostgreSQL's pg_flush_data does). It makes nothing durable by itself; an
    fsync or syncfs must still follow. None where the call is missing (not Linux)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    return lambda fd, offset, length: fn(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


def fsync_dir(path: Path) -> None:
    """fsync a directory, making the names created or removed in it durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` (one call instead of an fsync per file);
    falls back to sync(2) where syncfs is missing."""
    fd = os.open(path, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    except (OSError, AttributeError):
        os.sync()
    finally:
        os.close(fd)
