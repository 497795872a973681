"""The version 1 encryption writer, kept for tests only.

pgops no longer writes this container (see ``plugins/pgops/repository/encrypted.py``),
but repositories written in it must stay readable. :class:`V1Writer` seals new objects
as ``EncryptedRepository.put_stream`` did up to commit ee27472, so tests can build
version 1 objects of any size; ``tests/fixtures/v1-encrypted-repo`` holds objects
written by that commit itself. The version 1 container: ``b"PGOPSENC" | 1 | key id (8)
| nonce prefix (7)``, then AES-256-GCM chunks of 1 MiB (split as in version 2) under the
one master key, nonce = prefix | index (4) | final (1), the header alone as associated
data: the object's key is not authenticated.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

from pgops.repository.encrypted import MAGIC, EncryptedRepository


class V1Writer(EncryptedRepository):
    """An encrypted repository that writes version 1 objects and WAL names with the plain
    sha256, as pgops did before repository format 2; reads go through today's reader,
    which, like the old one, knows no format but 1 here."""

    def name_digest(self, sha256_hex: str) -> str:
        return sha256_hex

    def _is_format1(self) -> bool:
        return True

    def _new_object(self, key: str) -> tuple[bytes, Callable[[int, bool, bytes], bytes]]:
        prefix = os.urandom(7)
        header = MAGIC + bytes([1]) + self._kid + prefix

        def seal(index: int, final: bool, plain: bytes) -> bytes:
            return self._aead_v1.encrypt(prefix + struct.pack(">IB", index, 1 if final else 0), plain, header)

        return header, seal
