"""Client-side encryption of every stored object: AES-256-GCM, transparent to callers.

:class:`EncryptedRepository` wraps any backend. Each object is stored as::

    header:  b"PGOPSENC" | version (1 byte) | key id (8 bytes) | salt (7 bytes)
    chunks:  AES-GCM(plaintext chunk i of 1 MiB) with a 16-byte tag, for i = 0..n-1

Version 2 (written now) encrypts each object under a key of its own,
HKDF-SHA256(master key, salt, info = ``b"pgops object v2\\0"`` + the object's key): the
salt is random per write, so the same plaintext stored twice gives unrelated
ciphertext, and the object's key is bound in, so bytes moved or copied to another key
fail authentication there. Chunk ``i`` uses nonce = salt | i (4 bytes) | final flag (1
byte) and associated data = header | i (4 bytes) | final flag | the object's key, so
chunks cannot be reordered, dropped, truncated or moved between objects without the tag
check failing. Chunks make streaming and ranged reads possible (a restore fetches frames
by plaintext offset): a read decrypts only the chunks it covers.

Version 1 (pgops before repository format 2) used the master key itself for every
object, with the header alone as associated data: an object's bytes could be put under
another key undetected. It is still read, in repositories whose identity document
(``pgops.repository.json``) says format 1; a format 2 repository refuses version 1
objects. Both versions have the same header size and chunk size, so plaintext sizes
follow from stored sizes alone and a listing needs no header reads, whichever versions a
repository holds.

WAL keys carry a digest of the segment (``backup/walnames.py``). On an encrypted
repository that is :meth:`EncryptedRepository.name_digest`, an HMAC-SHA256 of the
sha256 under a key derived from the master key: equal files still get equal names (so
a rerun sees what is already stored), but a name tells nothing about the plaintext.

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
import hmac
import json
import os
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from pgops.errors import ConfigError, IntegrityError, NotFound
from pgops.repository.base import ObjectInfo, PutResult, Repository

MAGIC = b"PGOPSENC"
VERSION = 2
READABLE = (1, 2)
SALT = 7
HEADER = len(MAGIC) + 1 + 8 + SALT  # 24 bytes, in both versions
CHUNK = 1 << 20
TAG = 16
OBJECT_INFO = b"pgops object v2\0"
NAMES_INFO = b"pgops wal names v2"


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


def n_chunks(stored: int) -> int:
    """How many chunks an object of ``stored`` bytes holds (at least one)."""
    return max(1, -(-(stored - HEADER) // (CHUNK + TAG)))


def plain_size(stored: int) -> int:
    return max(0, stored - HEADER - n_chunks(stored) * TAG)


def _hkdf(master: bytes, salt: bytes | None, info: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(master)


def _nonce(salt: bytes, index: int, final: bool) -> bytes:
    return salt + struct.pack(">IB", index, 1 if final else 0)


@dataclass(frozen=True)
class _Sealed:
    """What decrypting one stored object needs: its header, version, cipher, size."""

    header: bytes
    version: int
    aead: object
    stored: int

    def aad(self, key: str, index: int, final: bool) -> bytes:
        if self.version == 1:
            return self.header
        return self.header + struct.pack(">IB", index, 1 if final else 0) + key.encode()


class EncryptedRepository(Repository):
    """Encrypts what it stores in ``inner`` under ``key`` (32 bytes).

    ``identity_key`` names the repository's identity document; its ``format`` (1 when
    absent) says whether version 1 objects may be read. It is read only when a version 1
    object or a name with a plain sha256 turns up; without ``identity_key`` neither is
    accepted.
    """

    def __init__(self, inner: Repository, key: bytes, *, identity_key: str | None = None) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.inner = inner
        self.location = inner.location
        self._master = key
        self._aead_v1 = AESGCM(key)
        self._names_key = _hkdf(key, None, NAMES_INFO)
        self.key_id = key_id(key)
        self._kid = bytes.fromhex(self.key_id)
        self._identity_key = identity_key
        self._format1: bool | None = None
        self._described: dict[str, _Sealed] = {}

    def _object_aead(self, key: str, salt: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        return AESGCM(_hkdf(self._master, salt, OBJECT_INFO + key.encode()))

    def name_digest(self, sha256_hex: str) -> str:
        """What a WAL key carries for a file with this sha256: a keyed digest of it."""
        return hmac.new(self._names_key, bytes.fromhex(sha256_hex), hashlib.sha256).hexdigest()

    def digest_matches(self, named: str, sha256_hex: str) -> bool:
        """Whether a key's digest ``named`` is that of a file with this sha256: its
        :meth:`name_digest`, or in a format 1 repository also the plain sha256 (names
        written before format 2)."""
        if hmac.compare_digest(named, self.name_digest(sha256_hex)):
            return True
        return named == sha256_hex and self._is_format1()

    def _is_format1(self) -> bool:
        """Whether this repository was created in format 1 (cached after one read)."""
        if self._format1 is None:
            if self._identity_key is None:
                return False
            try:
                data = json.loads(self.get_bytes(self._identity_key))
            except NotFound:
                return False
            except ValueError as exc:
                raise IntegrityError(f"{self.location}/{self._identity_key} is unreadable: {exc}") from exc
            if not isinstance(data, dict):
                raise IntegrityError(f"{self.location}/{self._identity_key} is unreadable: not a JSON object")
            self._format1 = data.get("format", 1) == 1
        return self._format1

    def _new_object(self, key: str) -> tuple[bytes, Callable[[int, bool, bytes], bytes]]:
        """The header of a new object to store under ``key``, and its chunk sealer
        ``seal(index, final, plaintext) -> sealed chunk``."""
        salt = os.urandom(SALT)
        header = MAGIC + bytes([VERSION]) + self._kid + salt
        sealed = _Sealed(header, VERSION, self._object_aead(key, salt), 0)

        def seal(index: int, final: bool, plain: bytes) -> bytes:
            return sealed.aead.encrypt(_nonce(salt, index, final), plain, sealed.aad(key, index, final))

        return header, seal

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        digest = hashlib.sha256()
        size = 0
        header, seal = self._new_object(key)

        def stream() -> Iterator[bytes]:
            nonlocal size
            yield header
            buf = bytearray()
            index = 0
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                buf += chunk
                while len(buf) > CHUNK:  # keep one chunk back: the last one is sealed as final
                    yield seal(index, False, bytes(buf[:CHUNK]))
                    del buf[:CHUNK]
                    index += 1
            yield seal(index, True, bytes(buf))

        self._described.pop(key, None)
        self.inner.put_stream(key, stream())
        return PutResult(key, size, digest.hexdigest())

    def _describe(self, key: str) -> _Sealed:
        # Stored objects never change once written, so a restore fetching many frames of
        # one object reads its header and size once, not per frame.
        sealed = self._described.get(key)
        if sealed is not None:
            return sealed
        header = self.inner.get_bytes(key, 0, HEADER)
        if len(header) != HEADER or not header.startswith(MAGIC):
            raise IntegrityError(f"{key} is not an encrypted pgops object (encryption is enabled in the config)")
        version = header[len(MAGIC)]
        if version not in READABLE:
            raise IntegrityError(f"{key}: unknown encryption format version {version}")
        kid = header[len(MAGIC) + 1:len(MAGIC) + 9].hex()
        if kid != self.key_id:
            raise ConfigError(f"{key} was encrypted with key id {kid}, but the configured key has id {self.key_id}: "
                              "wrong key")
        if version == 1:
            # The identity document itself says which format the repository is in.
            if key != self._identity_key and not self._is_format1():
                raise IntegrityError(
                    f"{self.location}/{key} is a version 1 encrypted object, but the repository is in format 2, "
                    "which holds only version 2 objects: it was not written here by pgops (copied in?)")
            aead = self._aead_v1
        else:
            aead = self._object_aead(key, header[-SALT:])
        sealed = self._described[key] = _Sealed(header, version, aead, self._stored_size(key))
        return sealed

    def get_stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        sealed = self._describe(key)
        if self._sealed_len(n_chunks(sealed.stored) - 1, sealed.stored) < TAG:
            raise IntegrityError(f"{self.location}/{key}: truncated ({sealed.stored} bytes cannot hold its last chunk)")
        total = plain_size(sealed.stored)
        end = total if length is None else min(total, start + length)
        if start >= end and not (total == 0 and start == 0 and length is None):
            return iter(())  # nothing to read (an empty object's one chunk is still authenticated)
        return self._decrypt(key, sealed, start, end)

    @staticmethod
    def _sealed_len(index: int, stored: int) -> int:
        last = n_chunks(stored) - 1
        if index < last:
            return CHUNK + TAG
        return stored - HEADER - last * (CHUNK + TAG)

    def _decrypt(self, key: str, sealed: _Sealed, start: int, end: int) -> Iterator[bytes]:
        from cryptography.exceptions import InvalidTag

        stored = sealed.stored
        count = n_chunks(stored)
        salt = sealed.header[-SALT:]
        first, last = start // CHUNK, max(start // CHUNK, (end - 1) // CHUNK)
        offset = HEADER + first * (CHUNK + TAG)
        span = sum(self._sealed_len(i, stored) for i in range(first, last + 1))
        buf = bytearray()
        index = first
        for piece in self.inner.get_stream(key, offset, span):
            buf += piece
            while index <= last and len(buf) >= self._sealed_len(index, stored):
                need = self._sealed_len(index, stored)
                ciphertext = bytes(buf[:need])
                del buf[:need]
                final = index == count - 1
                try:
                    plain = sealed.aead.decrypt(_nonce(salt, index, final), ciphertext, sealed.aad(key, index, final))
                except InvalidTag as exc:
                    raise IntegrityError(f"{self.location}/{key}: chunk {index} of {count} fails authentication "
                                         "(corrupt, truncated, tampered with, or another object's bytes)") from exc
                lo = start - index * CHUNK if index == first else 0
                hi = end - index * CHUNK if index == last else len(plain)
                yield plain[lo:hi]
                index += 1
        if index <= last:
            raise IntegrityError(f"{self.location}/{key}: truncated (chunk {index} of {count} missing)")

    def _stored_size(self, key: str) -> int:
        for obj in self.inner.list(key):
            if obj.key == key:
                return obj.size
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
