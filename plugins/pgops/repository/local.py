"""A repository in a local directory (the default of the local stack).

Atomicity: an object is written to ``<dir>/.tmp.<name>.<random>``, flushed and fsynced,
then renamed over its final name, and the directory is fsynced. A crash leaves at
most a temporary file, which listings ignore and
:meth:`LocalRepository.abort_incomplete` removes once it is old.

Modes: ``restore_command`` (``pgops wal-fetch``) runs as the PostgreSQL OS user, often
not the user that wrote the backups, so every directory pgops creates here is 0755 and
every file 0644, set explicitly whatever the umask. Who may enter the repository at all
is the operator's choice, made with the mode of the repository root (or a parent), which
pgops never changes once it exists: e.g. 0750 with a group both users share.

Listings fail closed: a directory or file that cannot be read raises (naming it) instead
of being skipped, because a listing that silently leaves something out makes WAL look
absent (``wal-fetch`` would end recovery early) and backups look missing.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from pgops.durability import fsync_dir, writeback_starter
from pgops.errors import ConfigError, NotFound, PgopsError, TransientError
from pgops.repository.base import ObjectInfo, PutResult, Repository, check_key

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp."
READ_CHUNK = 1 << 20
WRITEBACK_EVERY = 8 << 20
DIR_MODE = 0o755
FILE_MODE = 0o644


class LocalRepository(Repository):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _unreadable(self, path: Path | str, exc: OSError) -> PgopsError:
        """The error for a part of the repository that cannot be read: never skipped."""
        if isinstance(exc, PermissionError):
            return ConfigError(f"{path} in the repository {self.location} cannot be read by this user "
                               f"(uid {os.geteuid()}): {exc.strerror}. Fix its permissions; pgops does not "
                               "skip it, because a listing without it would hide backups or WAL")
        return TransientError(f"cannot read {path} in the repository {self.location}: {exc}")

    def _make_dirs(self, path: Path) -> None:
        """Create ``path`` and its missing parents, each with DIR_MODE whatever the umask."""
        missing = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:  # a concurrent writer made it (and sets its mode)
                continue
            directory.chmod(DIR_MODE)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        import hashlib

        final = self._path(key)
        self._make_dirs(final.parent)
        tmp = final.parent / f"{TMP_PREFIX}{final.name}.{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = flushed = 0
        writeback = writeback_starter()
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE), "wb") as out:
                os.fchmod(out.fileno(), FILE_MODE)  # the umask may have taken bits away
                for chunk in chunks:
                    out.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                    if writeback is not None and size - flushed >= WRITEBACK_EVERY:
                        # Start writing back what is written so far: the fsync below
                        # then waits for the last few MiB, not the whole object.
                        out.flush()
                        writeback(out.fileno(), flushed, size - flushed)
                        flushed = size
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(final.parent)
        return PutResult(key, size, digest.hexdigest())

    def get_stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        try:
            fh = open(path, "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"{key} is not in the repository {self.location}") from exc
        except OSError as exc:
            raise self._unreadable(path, exc) from exc
        return self._read(fh, start, length)

    @staticmethod
    def _read(fh, start: int, length: int | None) -> Iterator[bytes]:
        with fh:
            fh.seek(start)
            remaining = length
            while remaining is None or remaining > 0:
                chunk = fh.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    break
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def _walk(self, top: Path) -> Iterator[tuple[str, os.stat_result]]:
        """(path, stat) of every file under ``top``, symbolic links followed as open()
        follows them. A directory that does not exist (or vanished under a concurrent
        delete) holds nothing; any other error raises."""
        stack, seen = [top], set()
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
                st = os.stat(directory)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                raise self._unreadable(directory, exc) from exc
            if (st.st_dev, st.st_ino) in seen:
                raise ConfigError(f"{directory} in the repository {self.location} is reached twice through "
                                  "symbolic links (a loop?): refusing to list it")
            seen.add((st.st_dev, st.st_ino))
            for entry in entries:
                try:
                    if entry.is_dir():
                        stack.append(entry.path)
                    else:
                        yield entry.path, entry.stat()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise self._unreadable(entry.path, exc) from exc

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        if ".." in prefix.split("/") or prefix.startswith("/"):
            raise ConfigError(f"invalid repository prefix {prefix!r}")
        # Only the directory the prefix is in can hold keys that start with it.
        top = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        out = []
        for path, st in self._walk(top):
            key = Path(path).relative_to(self.root).as_posix()
            if key.startswith(prefix) and not os.path.basename(path).startswith(TMP_PREFIX):
                out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return sorted(out, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        path = self._path(key)
        try:
            return path.is_file()
        except OSError as exc:
            raise self._unreadable(path, exc) from exc

    def delete(self, keys: Iterable[str]) -> None:
        parents = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
                parents.add(path.parent)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise TransientError(f"cannot delete {key} from {self.location}: {exc}") from exc
        for parent in parents:
            fsync_dir(parent)
            # Drop directories emptied by the delete, up to the repository root.
            while parent != self.root and parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent

    def abort_incomplete(self, older_than: datetime) -> list[str]:
        """Remove temporary files (left by killed writers) last modified before ``older_than``."""
        removed = []
        cutoff = older_than.timestamp()
        for path, st in self._walk(self.root):
            if os.path.basename(path).startswith(TMP_PREFIX) and st.st_mtime < cutoff:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed.append(path)
        return removed
