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
from pgops.errors import IntegrityError


def _owner() -> tuple[int, int] | None:
    if os.geteuid() != 0:
        return None
    from pgops.postgres.cluster import SERVER_USER

    entry = pwd.getpwnam(SERVER_USER)
    return entry.pw_uid, entry.pw_gid


class TarExtractor:
    """Feed decompressed pieces in order; call :meth:`close` at the end of the stream."""

    def __init__(self, target: Path) -> None:
        self.target = Path(target)
        self.owner = _owner()
        self.files = 0
        self.bytes_written = 0
        self.ended = False
        self._header = bytearray()
        self._fd: int | None = None
        self._left = 0  # data bytes of the current member still to come
        self._pad = 0  # padding bytes after it
        self._special: str | None = None
        self._special_buf = bytearray()
        self._next_name: str | None = None
        self._zero_blocks = 0
        self._member = ""
        self._created: set[str] = set()

    # -- stream -------------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.ended:
            raise IntegrityError(f"the backup's tar stream ended early (inside or after {self._member or 'its start'})")

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
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
        self._fd = fd

    def _write(self, chunk: memoryview) -> None:
        fd = self._fd
        assert fd is not None
        while chunk:
            n = os.write(fd, chunk)
            chunk = chunk[n:]
            self.bytes_written += n
