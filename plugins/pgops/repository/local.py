"""A repository in a local directory (the default of the local stack).

Atomicity: an object is written to ``<dir>/.tmp.<name>.<random>``, flushed and fsynced,
then renamed over its final name, and the directory is fsynced. A crash leaves at
most a temporary file, which listings ignore and :meth:`LocalRepository.sweep` removes.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from pgops.durability import fsync_dir, writeback_starter
from pgops.errors import NotFound, TransientError
from pgops.repository.base import ObjectInfo, PutResult, Repository, check_key

log = logging.getLogger(__name__)

TMP_PREFIX = ".tmp."
READ_CHUNK = 1 << 20
WRITEBACK_EVERY = 8 << 20


class LocalRepository(Repository):
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.location = str(self.root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        import hashlib

        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f"{TMP_PREFIX}{final.name}.{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = flushed = 0
        writeback = writeback_starter()
        try:
            with open(tmp, "wb") as out:
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
            raise TransientError(f"cannot read {path}: {exc}") from exc
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

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        out = []
        if not self.root.exists():
            return out
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(TMP_PREFIX):
                    continue
                full = Path(dirpath) / name
                key = full.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = full.stat()
                    out.append(ObjectInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc)))
        return sorted(out, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

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
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = Path(dirpath) / name
                if name.startswith(TMP_PREFIX):
                    try:
                        if path.stat().st_mtime < cutoff:
                            path.unlink()
                            removed.append(str(path))
                    except FileNotFoundError:
                        continue
        return removed
