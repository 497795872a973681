"""The tar extractor: byte-exact files whatever the piece sizes, and hostile archives refused."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.errors import IntegrityError
from pgops.restore.extract import TarExtractor


def make_tar(members: list[tuple[str, bytes | None]], fmt=tarfile.USTAR_FORMAT, symlinks=()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o700
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o600
                tar.addfile(info, io.BytesIO(data))
        for name, target in symlinks:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buf.getvalue()


def extract(blob: bytes, target: Path, piece: int, writers: int = 1) -> TarExtractor:
    ex = TarExtractor(target, writers=writers)
    for i in range(0, len(blob), piece):
        ex.feed(blob[i:i + piece])
    ex.close()
    return ex


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=6), piece=st.integers(1, 5000),
       long_names=st.booleans(), writers=st.sampled_from([1, 2, 3]))
def test_files_come_out_byte_exact_for_any_piece_size(tmp_path_factory, sizes, piece, long_names, writers):
    target = tmp_path_factory.mktemp("x")
    prefix = "base/" + ("d" * 120 if long_names else "16384")
    members = [("base", None), (prefix, None)]
    members += [(f"{prefix}/{i}", os.urandom(n)) for i, n in enumerate(sizes)]
    blob = make_tar(members, fmt=tarfile.GNU_FORMAT if long_names else tarfile.USTAR_FORMAT)
    ex = extract(blob, target, piece, writers)
    assert ex.files == len(sizes)
    for name, data in members:
        if data is not None:
            assert (target / name).read_bytes() == data
            assert (target / name).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("name", ["/etc/passwd", "../escape", "base/../../escape", "a/./b"])
def test_names_outside_the_target_are_refused(tmp_path, name):
    blob = make_tar([(name, b"x")])
    (tmp_path / "t").mkdir()
    with pytest.raises(IntegrityError, match="not a plain relative path"):
        extract(blob, tmp_path / "t", 512)
    assert not (tmp_path / "escape").exists()


def test_symlinks_are_only_accepted_in_pg_tblspc_and_never_written_through(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(IntegrityError, match="outside pg_tblspc"):
        extract(make_tar([], symlinks=[("link", str(tmp_path))]), target, 512)
    target2 = tmp_path / "t2"
    target2.mkdir()
    blob = make_tar([("pg_tblspc", None)], symlinks=[("pg_tblspc/16400", str(tmp_path))])
    body = blob.rstrip(b"\0")  # drop the end marker (and tarfile's record padding)
    blob = body + b"\0" * (-len(body) % 512)  # then write a member through the link
    blob += make_tar([("pg_tblspc/16400/evil", b"x")])
    with pytest.raises(IntegrityError, match="not a directory"):
        extract(blob, target2, 512)
    assert not (tmp_path / "evil").exists()


def test_truncated_and_corrupt_streams_fail_closed(tmp_path):
    blob = make_tar([("a", b"x" * 5000)])
    (tmp_path / "1").mkdir()
    with pytest.raises(IntegrityError, match="ended early"):
        extract(blob[:3000], tmp_path / "1", 512)
    bad = bytearray(blob)
    bad[0] ^= 1  # the name changes, the header checksum no longer matches
    (tmp_path / "2").mkdir()
    with pytest.raises(IntegrityError, match="checksum"):
        extract(bytes(bad), tmp_path / "2", 512)


def test_duplicate_members_are_refused(tmp_path):
    with pytest.raises(IntegrityError, match="appears twice"):
        extract(make_tar([("a", b"1"), ("a", b"2")]), tmp_path, 512)
    assert (tmp_path / "a").read_bytes() == b"1"


@pytest.mark.parametrize("writers", [1, 2])
def test_a_write_error_is_raised_clearly_and_no_descriptor_leaks(tmp_path, monkeypatch, writers):
    import errno

    from pgops.errors import TransientError

    blob = make_tar([(f"f{i}", os.urandom(3000)) for i in range(20)])
    real = os.pwrite
    calls = []

    def failing(fd, data, offset):
        calls.append(fd)
        if len(calls) == 7:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing)
    open_before = len(os.listdir("/proc/self/fd"))
    ex = TarExtractor(tmp_path, writers=writers)
    with pytest.raises(TransientError, match="No space left"):
        for i in range(0, len(blob), 4096):
            ex.feed(blob[i:i + 4096])
        ex.close()
    ex.abort()
    assert len(os.listdir("/proc/self/fd")) <= open_before
