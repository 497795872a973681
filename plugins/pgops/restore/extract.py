"""Write a tar stream (pg_basebackup's) into a directory, safely and without copies.

The stream arrives as decompressed frames of any size; :class:`TarExtractor` parses the
512-byte headers itself and writes member data straight from the frames with
``os.write`` on memoryview slices (which releases the GIL, so the decompression threads
keep running). Only what pg_basebackup writes is accepted: regular files, directories
and, directly under ``pg_tblspc/``, symbolic links. Absolute names, ``..``, writing
through a link, or a member that would replace another are refused: a damaged or
hostile archive cannot write outside the target directory.

When pgops runs as root, every file and directory is handed to the postgres OS user as
it is created.
"""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path, PurePosixPath

from pgops.backup.tarscan import BLOCK, _octal, header_fields
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


class TarExtractor:
    """Feed decompressed pieces in order; call :meth:`close` at the end of the stream."""

    def __init__(self, target: Path, writers: int = 1) -> None:
        self.target = Path(target)
        self.owner = _owner()
        self.files = 0
        self.bytes_written = 0
        self.ended = False
        self._header = bytearray()
        self._file: _OpenFile | None = None
        self._out = _Writer(writers)
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding bytes after it
        self._special: str | None = None
        self._special_buf = bytearray()
        self._next_name: str | None = None
        self._zero_blocks = 0
        self._member = ""
        self._created: set[str] = set()
        self._file_pos = 0  # bytes of the current file handed to the writer

    # -- stream -------------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
        self._out.check()
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self.ended:
                if any(view[pos:end]):
                    raise IntegrityError("data after the tar end-of-archive marker")
                return
            if self._left:
                take = min(self._left, end - pos)
                chunk = view[pos:pos + take]
                if self._special is not None:
                    self._special_buf += chunk
                else:
                    self._write(chunk)
                self._left -= take
                pos += take
                if not self._left:
                    self._finish_member()
                continue
            if self._pad:
                take = min(self._pad, end - pos)
                self._pad -= take
                pos += take
                continue
            take = min(BLOCK - len(self._header), end - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == BLOCK:
                header = bytes(self._header)
                self._header.clear()
                self._on_header(header)

    def close(self) -> None:
        """All data has been fed: wait for every write, then check the stream ended properly."""
        self._out.shutdown()
        self._out.check()
        if not self.ended:
            raise IntegrityError(f"the backup's tar stream ended early (inside or after {self._member or 'its start'})")

    def abort(self) -> None:
        self._out.shutdown()

    # -- members ------------------------------------------------------------------------
    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.ended = True
            return
        if self._zero_blocks:
            raise IntegrityError("a zero block inside the tar stream")
        checksum = _octal(header[148:156])
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            raise IntegrityError(f"tar header checksum mismatch after {self._member or 'the start'}")
        name, size, typeflag = header_fields(header, "surrogateescape")
        self._pad = -size % BLOCK
        if typeflag in ("L", "x", "K", "g"):
            if size > 1 << 20:
                raise IntegrityError(f"a {size}-byte tar extension header: not from pg_basebackup")
            self._special, self._special_buf, self._left = typeflag, bytearray(), size
            if not size:
                self._finish_member()
            return
        if self._next_name is not None:
            name, self._next_name = self._next_name, None
        rel = self._safe_name(name)
        mode = _octal(header[100:108]) & 0o7777
        self._member = rel
        if typeflag in ("0", "7"):
            self._open_file(rel, mode or 0o600)
            self._left = size
            if not size:
                self._finish_member()
        elif typeflag == "5":
            self._mkdir(rel, mode or 0o700)
        elif typeflag == "2":
            linkname = header[157:257].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            if PurePosixPath(rel).parent != PurePosixPath("pg_tblspc"):
                raise IntegrityError(f"tar member {rel} is a symbolic link outside pg_tblspc/: refused")
            self._check_parent(rel)
            path = self.target / rel
            os.symlink(linkname, path)
            self._claim(rel)
            if self.owner:
                os.chown(path, *self.owner, follow_symlinks=False)
        else:
            raise IntegrityError(f"tar member {rel} has type {typeflag!r}, which pg_basebackup does not write")

    def _finish_member(self) -> None:
        if self._special is not None:
            text = bytes(self._special_buf)
            if self._special == "L":
                self._next_name = text.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            elif self._special == "x":
                for record in text.decode("utf-8", "surrogateescape").split("\n"):
                    _, _, kv = record.partition(" ")
                    key, _, value = kv.partition("=")
                    if key == "path":
                        self._next_name = value
            self._special = None
            return
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

    def _write(self, chunk: memoryview) -> None:
        assert self._file is not None
        self._out.write(self._file, chunk, self._file_pos)
        self._file_pos += len(chunk)
        self.bytes_written += len(chunk)
