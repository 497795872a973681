"""The repository interface every backend implements."""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from pgops.errors import ConfigError


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key, size in bytes and last-modified time."""

    key: str
    size: int
    modified: datetime | None = None


@dataclass(frozen=True)
class PutResult:
    """What a put wrote: size and sha256 of the stored bytes."""

    key: str
    size: int
    sha256: str


def check_key(key: str) -> str:
    """Keys are relative, '/'-separated, without '.' or '..' parts or empty parts."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigError(f"invalid repository key {key!r}")
    return key


class Repository(abc.ABC):
    """put / get / list / delete / exists over keys like ``backups/<id>/backup.json``."""

    #: a human-readable location for messages, e.g. ``s3://bucket/prefix`` or a path
    location: str

    @abc.abstractmethod
    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        """Store the concatenation of ``chunks`` under ``key``, atomically.

        The stream may be of unknown length; memory use stays bounded. If the iterable
        raises, nothing is stored under ``key`` (and the error propagates).
        """

    def put_bytes(self, key: str, data: bytes) -> PutResult:
        return self.put_stream(key, [data])

    @abc.abstractmethod
    def get_stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        """The object's bytes (or ``length`` bytes from ``start``) in chunks.

        A missing key raises :class:`pgops.errors.NotFound`.
        """

    def get_bytes(self, key: str, start: int = 0, length: int | None = None) -> bytes:
        return b"".join(self.get_stream(key, start, length))

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix``, sorted by key."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether ``key`` is stored."""

    @abc.abstractmethod
    def delete(self, keys: Iterable[str]) -> None:
        """Delete ``keys``; missing keys are not an error. Any key that could not be
        deleted raises, naming it."""

    @abc.abstractmethod
    def abort_incomplete(self, older_than: datetime) -> list[str]:
        """Remove what interrupted writes left behind before ``older_than`` (temporary
        files, multipart uploads that were never completed or aborted, e.g. after the
        writer was killed); returns what was removed."""

    def sha256(self, key: str) -> str:
        """sha256 of the stored bytes, re-read from the repository."""
        digest = hashlib.sha256()
        for chunk in self.get_stream(key):
            digest.update(chunk)
        return digest.hexdigest()

