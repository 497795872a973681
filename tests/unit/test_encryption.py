from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup import catalog
from pgops.backup.verify import verify
from pgops.backup.walnames import IDENTITY_KEY, parse_wal_key
from pgops.backup.walship import ship_file
from pgops.errors import ConfigError, IntegrityError
from pgops.repository.encrypted import CHUNK, HEADER, SALT, TAG, EncryptedRepository, parse_key
from pgops.repository.local import LocalRepository
from pgops.restore.walfetch import fetch_wal
from tests.encryption_v1 import V1Writer

KEY = os.urandom(32)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def encrypted(path: Path, key: bytes = KEY) -> EncryptedRepository:
    return EncryptedRepository(LocalRepository(path), key, identity_key=IDENTITY_KEY)


@settings(max_examples=30, deadline=None)
@given(size=st.integers(0, 3 * CHUNK + 17), cut=st.integers(1, CHUNK + 5), data=st.data())
def test_roundtrip_and_ranged_reads(tmp_path_factory, size, cut, data):
    repo = encrypted(tmp_path_factory.mktemp("enc"))
    plain = os.urandom(size)
    result = repo.put_stream("k/v", (plain[i:i + cut] for i in range(0, max(size, 1), cut)))
    assert result.size == size
    assert repo.get_bytes("k/v") == plain
    assert repo.list("k/")[0].size == size
    start = data.draw(st.integers(0, max(size - 1, 0)))
    length = data.draw(st.integers(0, size - start + 3))
    assert repo.get_bytes("k/v", start, length) == plain[start:start + length]
    assert plain[:64] not in repo.inner.get_bytes("k/v") or size < 64


@pytest.fixture(scope="module")
def three_chunks(tmp_path_factory):
    """One object of 3 chunks and a bit, written in each container version, with its plaintext."""
    root = tmp_path_factory.mktemp("chunks")
    V1Writer(LocalRepository(root), KEY).put_bytes(IDENTITY_KEY, json.dumps({"format": 1}).encode())
    plain = os.urandom(3 * CHUNK + 1000)
    EncryptedRepository(LocalRepository(root), KEY).put_bytes("v2", plain)
    V1Writer(LocalRepository(root), KEY).put_bytes("v1", plain)
    return root, plain


@settings(max_examples=60, deadline=None)
@given(version=st.sampled_from(["v1", "v2"]), boundary=st.integers(1, 3), before=st.integers(0, CHUNK + 10),
       after=st.integers(0, CHUNK + 10))
def test_ranged_reads_across_chunk_boundaries(three_chunks, version, boundary, before, after):
    """Any range around a chunk boundary reads exactly those plaintext bytes, in both
    container versions (a restore reads frames that straddle chunks)."""
    root, plain = three_chunks
    start = max(0, boundary * CHUNK - before)
    end = boundary * CHUNK + after
    repo = encrypted(root)
    assert repo.get_bytes(version, start, end - start) == plain[start:end]


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


def test_an_object_moved_onto_another_key_is_detected(tmp_path):
    """One stored object's bytes put under another key (a rename in the bucket) fail
    authentication there, and the error names the key that was read."""
    repo = encrypted(tmp_path)
    repo.put_bytes("backups/a/backup.json", b'{"id": "a"}' * 1000)
    repo.put_bytes("backups/b/backup.json", b'{"id": "b"}' * 1000)
    os.replace(tmp_path / "backups/a/backup.json", tmp_path / "backups/b/backup.json")
    with pytest.raises(IntegrityError, match="backups/b/backup.json: chunk 0 of 1 fails authentication"):
        encrypted(tmp_path).get_bytes("backups/b/backup.json")


def test_truncation_and_reordered_chunks_are_detected(tmp_path):
    repo = encrypted(tmp_path)
    repo.put_bytes("k", os.urandom(3 * CHUNK))
    raw = (tmp_path / "k").read_bytes()
    sealed = [raw[HEADER + i * (CHUNK + TAG):HEADER + (i + 1) * (CHUNK + TAG)] for i in range(3)]
    (tmp_path / "k").write_bytes(raw[:HEADER] + sealed[0] + sealed[1])  # cut at a chunk boundary
    with pytest.raises(IntegrityError, match="k: chunk 1 of 2 fails authentication"):
        encrypted(tmp_path).get_bytes("k")
    (tmp_path / "k").write_bytes(raw[:HEADER] + sealed[1] + sealed[0] + sealed[2])
    with pytest.raises(IntegrityError, match="k: chunk 0 of 3 fails authentication"):
        encrypted(tmp_path).get_bytes("k")
    repo.put_bytes("empty", b"")
    assert encrypted(tmp_path).get_bytes("empty") == b""
    for cut in (HEADER, HEADER + 5, HEADER + TAG):  # what is left could pass for an empty object
        (tmp_path / "k").write_bytes(raw[:cut])
        with pytest.raises(IntegrityError, match="k: (truncated|chunk 0 of 1 fails authentication)"):
            encrypted(tmp_path).get_bytes("k")


def test_each_object_has_a_key_of_its_own(tmp_path):
    """The same plaintext stored twice gives unrelated ciphertext, and the master key
    alone opens neither: each object is sealed under HKDF-SHA256(master, its salt,
    b"pgops object v2\\0" + its key), as encrypted.py documents."""
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    repo = encrypted(tmp_path)
    plain = b"the same rows " * 1000
    repo.put_bytes("a", plain)
    repo.put_bytes("b", plain)
    a, b = (tmp_path / "a").read_bytes(), (tmp_path / "b").read_bytes()
    assert a[:9] == b[:9] == b"PGOPSENC\x02"
    assert a[HEADER:] != b[HEADER:] and a[-SALT:] != b[-SALT:]
    header, body = a[:HEADER], a[HEADER:]
    salt = header[-SALT:]
    nonce = salt + (0).to_bytes(4, "big") + b"\x01"
    aad = header + (0).to_bytes(4, "big") + b"\x01" + b"a"
    with pytest.raises(InvalidTag):
        AESGCM(KEY).decrypt(nonce, body, aad)
    with pytest.raises(InvalidTag):
        AESGCM(KEY).decrypt(nonce, body, header)
    own = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=b"pgops object v2\0a").derive(KEY)
    assert AESGCM(own).decrypt(nonce, body, aad) == plain


def wal_file(directory: Path, name: str) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / name
    path.write_bytes(hashlib.sha256(name.encode()).digest() * 2 + bytes(16 * 2**20 - 64))
    return path


def test_names_in_an_encrypted_repository_carry_no_plaintext_digest(tmp_path):
    repo = encrypted(tmp_path / "repo")
    catalog.check_identity(repo, "1", "15")
    segment = wal_file(tmp_path / "spool", "000000010000000000000001")
    sha = hashlib.sha256(segment.read_bytes()).hexdigest()
    key, uploaded = ship_file(repo, segment)
    assert uploaded and sha not in key
    assert [o.key for o in repo.list("wal/")] == [key]
    assert ship_file(repo, segment) == (key, False), "a rerun finds the same name"
    other = encrypted(tmp_path / "other", os.urandom(32))
    assert ship_file(other, segment)[0] != key, "the digest is keyed: another key names it otherwise"
    assert fetch_wal(repo, segment.name, tmp_path / "restored")
    assert (tmp_path / "restored").read_bytes() == segment.read_bytes()
    report = verify(repo, full=True)
    assert report.problems == [] and report.checked_segments == 1
    plain = LocalRepository(tmp_path / "plain")
    assert ship_file(plain, segment)[0].endswith(f"-{sha}.zst"), "plain repositories keep pgBackRest's names"


def test_a_wal_object_moved_onto_another_segment_is_refused(tmp_path):
    repo = encrypted(tmp_path / "repo")
    catalog.check_identity(repo, "1", "15")
    one, _ = ship_file(repo, wal_file(tmp_path / "spool", "000000010000000000000001"))
    two, _ = ship_file(repo, wal_file(tmp_path / "spool", "000000010000000000000002"))
    os.replace(tmp_path / "repo" / one, tmp_path / "repo" / two)
    with pytest.raises(IntegrityError, match="000000010000000000000002.*fails authentication"):
        fetch_wal(encrypted(tmp_path / "repo"), "000000010000000000000002", tmp_path / "restored")


@pytest.fixture
def v1_repo(tmp_path) -> tuple[Path, dict]:
    """A copy of a repository written by pgops before format 2 (encryption version 1):
    tests/fixtures/v1-encrypted-repo, made at commit ee27472 (see its README)."""
    shutil.copytree(FIXTURES / "v1-encrypted-repo", tmp_path / "repo")
    return tmp_path / "repo", json.loads((FIXTURES / "v1-encrypted-repo.plain.json").read_text())


def test_a_format_1_repository_stays_readable(v1_repo, tmp_path, monkeypatch):
    from pgops.config import parse_config
    from pgops.repository import open_repository
    from pgops.restore.fetch import frame_index, raw_pieces

    root, plain = v1_repo
    monkeypatch.setenv("AIRFLOW_CONN_PGOPS_ENCRYPTION", json.dumps({"conn_type": "generic",
                                                                    "password": plain["key_hex"]}))
    config = parse_config({"repository": {"url": str(root)}, "encryption": {"enabled": True}})
    repo = open_repository(config.repository, config.encryption)
    assert all(p.read_bytes()[8] == 1 for p in root.rglob("*") if p.is_file()), "every object is version 1"
    report = verify(repo, full=True)
    assert report.problems == [] and (report.checked_objects, report.checked_segments) == (3, 4)

    (record,) = [e.record for e in catalog.read_catalog(repo)]
    tar = b"".join(raw_pieces(repo, record, frame_index(repo, record)))
    assert hashlib.sha256(tar).hexdigest() == plain["tar_sha256"] and len(plain["wal"]) == 4
    for name, sha in plain["wal"].items():
        assert fetch_wal(repo, name, tmp_path / name)
        assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == sha

    # Shipping goes on into it: a segment already stored under its old name is found
    # there; a new one is stored in version 2, under a keyed name.
    old_key, uploaded = ship_file(repo, tmp_path / "000000010000000000000003")
    assert not uploaded and old_key.endswith(f"-{plain['wal']['000000010000000000000003']}.zst")
    new = wal_file(tmp_path / "spool", "000000010000000000000004")
    new_key, uploaded = ship_file(repo, new)
    assert uploaded and hashlib.sha256(new.read_bytes()).hexdigest() not in new_key
    assert (root / new_key).read_bytes()[8] == 2
    assert ship_file(repo, new) == (new_key, False)
    report = verify(open_repository(config.repository, config.encryption), full=True)
    assert report.problems == [] and report.checked_segments == 5


def test_a_format_2_repository_refuses_version_1_objects_and_plain_names(v1_repo, tmp_path):
    """A version 1 object does not authenticate its key, so only repositories that were
    written in format 1 may hold any."""
    root, plain = v1_repo
    key = bytes.fromhex(plain["key_hex"])
    fresh = tmp_path / "fresh"
    catalog.check_identity(encrypted(fresh, key), "7300000000000000001", "15")
    wal = next(p for p in root.rglob("*.zst") if "/wal/" in str(p) and "history" not in str(p))
    (fresh / wal.relative_to(root)).parent.mkdir(parents=True)
    shutil.copy(wal, fresh / wal.relative_to(root))
    repo = encrypted(fresh, key)
    with pytest.raises(IntegrityError, match="version 1 encrypted object, but the repository is in format 2"):
        repo.get_bytes(str(wal.relative_to(root)))
    name, sha = parse_wal_key(str(wal.relative_to(root)))
    assert not repo.digest_matches(sha, sha)
    assert encrypted(root, key).digest_matches(sha, sha)


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
