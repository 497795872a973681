"""Getting written data onto the disk: the few system calls pgops' writers share.

``fsync`` per file and directory where one object must be durable before the next step
(the repository's commit protocol); ``syncfs`` where a whole tree was written (a
restore); and ``sync_file_range`` to start writeback early, so the final flush has
little left to wait for.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from collections.abc import Callable
from pathlib import Path

_SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _libc_function(name: str):
    """libc's ``name`` (with errno kept for ctypes.get_errno), or None where it is
    missing (not Linux); looked up once."""
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True), name)
    except (OSError, AttributeError):
        return None


@functools.cache
def writeback_starter() -> Callable[[int, int, int], object] | None:
    """``start(fd, offset, length)``: ``sync_file_range(fd, offset, length,
    SYNC_FILE_RANGE_WRITE)``, which starts writing dirty pages back without waiting
    (what PostgreSQL's pg_flush_data does). It makes nothing durable by itself, and its
    errors are left to the fsync or syncfs that must still follow (the kernel reports a
    failed writeback there). None where the call is missing (not Linux)."""
    fn = _libc_function("sync_file_range")
    if fn is None:
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
    """Flush the file system holding ``path`` (one call instead of an fsync per file).
    A failed flush (syncfs reports the writeback errors of the file system since Linux
    5.8) raises OSError: the files are not known to be on disk. Only where syncfs is
    missing does it fall back to sync(2), which reports nothing."""
    fn = _libc_function("syncfs")
    if fn is None:
        os.sync()
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs of the file system holding {path} failed: {os.strerror(err)}")
    finally:
        os.close(fd)
