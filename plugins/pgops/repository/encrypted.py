"""Client-side encryption of every stored object: AES-256-GCM, transparent to callers.

:class:`EncryptedRepository` wraps any backend. Each object is stored as::

    header:  b"PGOPSENC" | version (1 byte) | key id (8 bytes) | nonce prefix (7 bytes)
    chunks:  AES-GCM(plaintext chunk i of 1 MiB) with a 16-byte tag, for i = 0..n-1

Chunk ``i`` uses nonce = prefix | i (4 bytes) | final flag (1 byte), and the header as
associated data, so chunks cannot be reordered, dropped, truncated or moved between
objects without the tag check failing. Chunks make streaming and ranged reads
possible (a restore fetches frames by plaintext offset).

Sizes, offsets and sha256 seen through the wrapper are those of the plaintext, so the
catalog, the frame index and ``verify`` (which then also checks every tag) work the same
with or without encryption. The key comes from an Airflow connection's password
(32 bytes, base64 or hex) and is never logged; objects record only the key id (a
fingerprint), so a wrong or missing key is named clearly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterable, Iterator
from datetime import datetime

from pgops.errors import ConfigError, IntegrityError
from pgops.repository.base import ObjectInfo, PutResult, Repository

MAGIC = b"PGOPSENC"
VERSION = 1
HEADER = len(MAGIC) + 1 + 8 + 7  # 24 bytes
CHUNK = 1 << 20
TAG = 16


def parse_key(secret: str | None, conn_id: str) -> bytes:
    """A 32-byte key from the connection's password (base64 or hex)."""
    if not secret:
        raise ConfigError(f"encryption is enabled but Airflow connection {conn_id!r} has no password (the key)")
    secret = secret.strip()
    for decode in (lambda s: bytes.fromhex(s), lambda s: base64.b64decode(s, validate=True)):
        try:
            key = decode(secret)
        except (ValueError, binascii.Error):
            continue
        if len(key) == 32:
            return key
    raise ConfigError(
        f"the key in Airflow connection {conn_id!r} must be 32 bytes, written as 64 hex digits or base64 "
        "(make one with: python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')"
    )


def key_id(key: bytes) -> str:
    """A fingerprint that names the key without revealing it."""
    return hashlib.sha256(b"pgops key id\0" + key).hexdigest()[:16]


def plain_size(stored: int) -> int:
    if stored <= HEADER:
        return 0
    n = -(-(stored - HEADER) // (CHUNK + TAG))
    return stored - HEADER - n * TAG


class EncryptedRepository(Repository):
    def __init__(self, inner: Repository, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.inner = inner
        self.location = inner.location
        self._aead = AESGCM(key)
        self.key_id = key_id(key)
        self._kid = bytes.fromhex(self.key_id)
        self._described: dict[str, tuple[bytes, int]] = {}

    def _nonce(self, prefix: bytes, index: int, final: bool) -> bytes:
        return prefix + struct.pack(">IB", index, 1 if final else 0)

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        digest = hashlib.sha256()
        size = 0
        prefix = os.urandom(7)
        header = MAGIC + bytes([VERSION]) + self._kid + prefix

        def sealed() -> Iterator[bytes]:
            nonlocal size
            yield header
            buf = bytearray()
            index = 0
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buf += chunk
                while len(buf) > CHUNK:  # keep one chunk back: the last one is sealed as final
                    yield self._aead.encrypt(self._nonce(prefix, index, False), bytes(buf[:CHUNK]), header)
                    del buf[:CHUNK]
                    index += 1
            yield self._aead.encrypt(self._nonce(prefix, index, True), bytes(buf), header)

        self._described.pop(key, None)
        self.inner.put_stream(key, sealed())
        return PutResult(key, size, digest.hexdigest())

    def _header(self, key: str) -> bytes:
        header = self.inner.get_bytes(key, 0, HEADER)
        if len(header) != HEADER or not header.startswith(MAGIC):
            raise IntegrityError(f"{key} is not an encrypted pgops object (encryption is enabled in the config)")
        if header[len(MAGIC)] != VERSION:
            raise IntegrityError(f"{key}: unknown encryption format version {header[len(MAGIC)]}")
        kid = header[len(MAGIC) + 1:len(MAGIC) + 9].hex()
        if kid != self.key_id:
            raise ConfigError(f"{key} was encrypted with key id {kid}, but the configured key has id {self.key_id}: "
                              "wrong key")
        return header

    def get_stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        # Stored objects never change once written, so a restore fetching many frames of
        # one object reads its header and size once, not per frame.
        if key not in self._described:
            self._described[key] = (self._header(key), self._stored_size(key))
        header, stored = self._described[key]
        n_chunks = max(1, -(-(stored - HEADER) // (CHUNK + TAG)))
        total = plain_size(stored)
        end = total if length is None else min(total, start + length)
        if start >= end:
            return iter(())
        return self._decrypt(key, header, stored, n_chunks, start, end)

    def _sealed_len(self, index: int, n_chunks: int, stored: int) -> int:
        if index < n_chunks - 1:
            return CHUNK + TAG
        return stored - HEADER - (n_chunks - 1) * (CHUNK + TAG)

    def _decrypt(self, key: str, header: bytes, stored: int, n_chunks: int, start: int, end: int) -> Iterator[bytes]:
        from cryptography.exceptions import InvalidTag

        prefix = header[-7:]
        first, last = start // CHUNK, (end - 1) // CHUNK
        offset = HEADER + first * (CHUNK + TAG)
        span = sum(self._sealed_len(i, n_chunks, stored) for i in range(first, last + 1))
        buf = bytearray()
        index = first
        for piece in self.inner.get_stream(key, offset, span):
            buf += piece
            while index <= last and len(buf) >= self._sealed_len(index, n_chunks, stored):
                need = self._sealed_len(index, n_chunks, stored)
                sealed = bytes(buf[:need])
                del buf[:need]
                try:
                    plain = self._aead.decrypt(self._nonce(prefix, index, index == n_chunks - 1), sealed, header)
                except InvalidTag as exc:
                    raise IntegrityError(f"{key}: chunk {index} fails authentication (corrupt or tampered)") from exc
                lo = start - index * CHUNK if index == first else 0
                hi = end - index * CHUNK if index == last else len(plain)
                yield plain[lo:hi]
                index += 1
        if index <= last:
            raise IntegrityError(f"{key}: truncated (chunk {index} of {n_chunks} missing)")

    def _stored_size(self, key: str) -> int:
        for obj in self.inner.list(key):
            if obj.key == key:
                return obj.size
        from pgops.errors import NotFound

        raise NotFound(f"{key} is not in the repository {self.location}")

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        return [ObjectInfo(o.key, plain_size(o.size), o.modified) for o in self.inner.list(prefix)]

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def delete(self, keys: Iterable[str]) -> None:
        keys = list(keys)
        for key in keys:
            self._described.pop(key, None)
        self.inner.delete(keys)

    def abort_incomplete(self, older_than: datetime) -> list[str]:
        return self.inner.abort_incomplete(older_than)

