"""Write a tar stream (pg_basebackup's) into a directory, safely and without copies.

The stream arrives as decompressed frames of any size; :class:`TarExtractor` reads it
with the backup's own tar parser (:class:`pgops.backup.tarscan.TarReader`) and writes
member data straight from the frames with ``os.pwrite`` on memoryview slices (which
releases the GIL, so the decompression threads keep running). Only what pg_basebackup
writes for a cluster without tablespaces is accepted: regular files and directories (a
symbolic link, such as a tablespace's under ``pg_tblspc/``, is refused). Absolute names,
``..``, writing through a link, or a member that would replace another are refused: a
damaged or hostile archive cannot write outside the target directory.

When pgops runs as root, every file and directory is handed to the postgres OS user as
it is created.

:attr:`TarExtractor.create_s` is the time spent creating the files and directories. It is
mostly the file system's inode allocation, which can be most of an extraction: on an
ext4 without a journal (this project's machines), creating a file skips, one by one,
the free inodes deleted in the last minutes, so right after a large directory tree was
removed each create costs 1.3-1.6 ms (medians of 1.7-2.2 s of a 2.8-3.3 s extraction of
1,368 files, bench/README.md, 2026-12-02).
"""

from __future__ import annotations

import os
import pwd
import stat
import time
from pathlib import Path

from pgops.backup.tarscan import TarMember, TarReader
from pgops.durability import writeback_starter
from pgops.errors import IntegrityError


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    from pgops.postgres.cluster import SERVER_USER

    entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid


def _as_pgops_error(exc: BaseException) -> BaseException:
    from pgops.errors import PgopsError, TransientError

    if isinstance(exc, OSError) and not isinstance(exc, PgopsError):
        return TransientError(f"writing the restored files failed: {exc} (free space or fix the target, then rerun)")
    return exc


class _OpenFile:
    __slots__ = ("fd", "pending", "ending")

    def __init__(self, fd: int) -> None:
        self.fd, self.pending, self.ending = fd, 0, False


class _Writer:
    """Writes member data with ``os.pwrite`` at explicit offsets, on ``threads`` threads
    (the kernel's copy into the page cache then uses more than one core), at most
    ``max_pending`` bytes queued; a file is closed once its last write is done. Starts
    writeback of what it wrote, so the disk works while extraction goes on."""

    def __init__(self, threads: int, max_pending: int = 64 * 1024 * 1024) -> None:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="extract") if threads > 1 else None
        self._cond = threading.Condition()
        self._pending_bytes = 0
        self._max_pending = max_pending
        self._error: BaseException | None = None
        self._writeback = writeback_starter()
        self._open: set[_OpenFile] = set()

    def check(self) -> None:
        if self._error is not None:
            raise self._error

    def open(self, fd: int) -> _OpenFile:
        f = _OpenFile(fd)
        self._open.add(f)
        return f

    def write(self, f: _OpenFile, chunk: memoryview, offset: int) -> None:
        if self._pool is None:
            self._pwrite(f, chunk, offset)
            return
        with self._cond:
            while self._pending_bytes and self._pending_bytes + len(chunk) > self._max_pending and not self._error:
                self._cond.wait()
            self.check()
            self._pending_bytes += len(chunk)
            f.pending += 1
        self._pool.submit(self._run, f, chunk, offset)

    def _pwrite(self, f: _OpenFile, chunk: memoryview, offset: int) -> None:
        start, length = offset, len(chunk)
        while chunk:
            try:
                n = os.pwrite(f.fd, chunk, offset)
            except OSError as exc:
                raise _as_pgops_error(exc) from exc
            chunk = chunk[n:]
            offset += n
        if self._writeback is not None and length >= 1 << 20:
            self._writeback(f.fd, start, length)

    def _run(self, f: _OpenFile, chunk: memoryview, offset: int) -> None:
        try:
            self._pwrite(f, chunk, offset)
        except BaseException as exc:  # handed to the parser thread, which raises it
            with self._cond:
                self._error = self._error or _as_pgops_error(exc)
        finally:
            with self._cond:
                self._pending_bytes -= len(chunk)
                f.pending -= 1
                last = f.ending and f.pending == 0
                self._cond.notify_all()
            if last:
                self._finish(f)

    def end(self, f: _OpenFile) -> None:
        """No more data for ``f``: close it now, or after its last queued write."""
        with self._cond:
            f.ending = True
            last = f.pending == 0
        if last:
            self._finish(f)

    def _finish(self, f: _OpenFile) -> None:
        if f in self._open:
            self._open.discard(f)
            os.close(f.fd)

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for f in list(self._open):
            self._finish(f)


class TarExtractor(TarReader):
    """Feed decompressed pieces in order; call :meth:`close` at the end of the stream."""

    def __init__(self, target: Path, writers: int = 1) -> None:
        super().__init__()
        self.target = Path(target)
        self.owner = _owner()
        self.files = 0
        self.bytes_written = 0
        self._file: _OpenFile | None = None
        self._out = _Writer(writers)
        self._created: set[str] = set()
        self._file_pos = 0  # bytes of the current file handed to the writer
        self.create_s = 0.0  # creating files and directories (see the module docstring)

    # -- stream -------------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
        self._out.check()
        super().feed(data)

    def close(self) -> None:
        """All data has been fed: wait for every write, then check the stream ended properly."""
        self._out.shutdown()
        self._out.check()
        if not self.ended:
            where = self.last_member or "its start"
            raise IntegrityError(f"the backup's tar stream ended early (inside or after {where})")

    def abort(self) -> None:
        self._out.shutdown()

    # -- members ------------------------------------------------------------------------
    def on_member(self, member: TarMember) -> bool:
        rel = self._safe_name(member.name)
        mode = member.mode & 0o7777
        if member.typeflag in ("0", "7"):
            t = time.perf_counter()
            self._open_file(rel, mode or 0o600)
            self.create_s += time.perf_counter() - t
            return True
        if member.typeflag == "5":
            t = time.perf_counter()
            self._mkdir(rel, mode or 0o700)
            self.create_s += time.perf_counter() - t
            return False
        if member.typeflag == "2":
            raise IntegrityError(f"tar member {rel} is a symbolic link (to {member.linkname}): refused; pgops backs "
                                 "up and restores clusters without tablespaces only")
        raise IntegrityError(f"tar member {rel} has type {member.typeflag!r}, which pg_basebackup does not write")

    def on_member_end(self) -> None:
        if self._file is not None:
            self._out.end(self._file)
            self._file = None
            self.files += 1

    def _safe_name(self, name: str) -> str:
        name = name.removeprefix("./").rstrip("/")
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise IntegrityError(f"tar member name {name!r} is not a plain relative path: refused")
        return name

    def _claim(self, rel: str) -> None:
        if rel in self._created:
            raise IntegrityError(f"tar member {rel} appears twice in the backup")
        self._created.add(rel)

    def _check_parent(self, rel: str) -> None:
        parent = self.target.joinpath(*rel.split("/")[:-1])
        st = os.lstat(parent)  # FileNotFoundError: the archive's order is wrong
        if not stat.S_ISDIR(st.st_mode):
            raise IntegrityError(f"tar member {rel}: its parent is not a directory (writing through a link?)")

    def _mkdir(self, rel: str, mode: int) -> None:
        self._check_parent(rel)
        path = self.target / rel
        os.mkdir(path, mode & 0o777)
        self._claim(rel)
        os.chmod(path, mode & 0o777)
        if self.owner:
            os.chown(path, *self.owner)

    def _open_file(self, rel: str, mode: int) -> None:
        try:
            self._check_parent(rel)
        except FileNotFoundError:  # pg_basebackup lists directories first; be lenient with a missing one
            raise IntegrityError(f"tar member {rel} comes before its directory") from None
        self._claim(rel)
        fd = os.open(self.target / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode & 0o777)
        if self.owner:
            os.fchown(fd, *self.owner)
        self._file = self._out.open(fd)
        self._file_pos = 0

    def on_data(self, chunk: memoryview) -> None:
        assert self._file is not None
        self._out.write(self._file, chunk, self._file_pos)
        self._file_pos += len(chunk)
        self.bytes_written += len(chunk)
