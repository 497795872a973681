from __future__ import annotations

import base64
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.errors import ConfigError, IntegrityError
from pgops.repository.encrypted import CHUNK, EncryptedRepository, parse_key
from pgops.repository.local import LocalRepository

KEY = os.urandom(32)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 3 * CHUNK + 17), cut=st.integers(1, CHUNK + 5), data=st.data())
def test_roundtrip_and_ranged_reads(tmp_path_factory, size, cut, data):
    repo = EncryptedRepository(LocalRepository(tmp_path_factory.mktemp("enc")), KEY)
    plain = os.urandom(size)
    result = repo.put_stream("k/v", (plain[i:i + cut] for i in range(0, max(size, 1), cut)))
    assert result.size == size
    assert repo.get_bytes("k/v") == plain
    assert repo.list("k/")[0].size == size
    start = data.draw(st.integers(0, max(size - 1, 0)))
    length = data.draw(st.integers(0, size - start + 3))
    assert repo.get_bytes("k/v", start, length) == plain[start:start + length]
    assert plain[:64] not in repo.inner.get_bytes("k/v") or size < 64


def test_wrong_key_is_named_and_tampering_is_caught(tmp_path):
    inner = LocalRepository(tmp_path)
    EncryptedRepository(inner, KEY).put_bytes("k", b"secret rows" * 100_000)
    with pytest.raises(ConfigError, match="wrong key"):
        EncryptedRepository(inner, os.urandom(32)).get_bytes("k")
    raw = bytearray((tmp_path / "k").read_bytes())
    raw[len(raw) // 2] ^= 1
    (tmp_path / "k").write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="fails authentication"):
        EncryptedRepository(inner, KEY).get_bytes("k")
    (tmp_path / "k").write_bytes(bytes(raw[: len(raw) - 5]))
    with pytest.raises(IntegrityError):
        EncryptedRepository(inner, KEY).get_bytes("k")


def test_plaintext_object_with_encryption_on_is_refused(tmp_path):
    LocalRepository(tmp_path).put_bytes("k", b"x" * 100)
    with pytest.raises(IntegrityError, match="not an encrypted pgops object"):
        EncryptedRepository(LocalRepository(tmp_path), KEY).get_bytes("k")


def test_key_formats():
    assert parse_key(KEY.hex(), "c") == KEY
    assert parse_key(base64.b64encode(KEY).decode(), "c") == KEY
    with pytest.raises(ConfigError, match="no password"):
        parse_key(None, "pgops_encryption")
    with pytest.raises(ConfigError, match="must be 32 bytes"):
        parse_key("too short", "pgops_encryption")
