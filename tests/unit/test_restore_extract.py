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


@pytest.mark.parametrize("link", ["link", "pg_tblspc/16400"])
def test_symbolic_links_are_refused_even_a_tablespace(tmp_path, link):
    """pgops restores clusters without tablespaces (pg_basebackup refuses to write
    more than one tablespace to stdout), so no member may be a link."""
    target = tmp_path / "t"
    target.mkdir()
    with pytest.raises(IntegrityError, match=f"tar member {link} is a symbolic link"):
        extract(make_tar([("pg_tblspc", None)], symlinks=[(link, str(tmp_path))]), target, 512)
    assert not (target / link).exists() and not (target / link).is_symlink()


def test_a_link_already_in_the_target_is_never_written_through(tmp_path):
    target = tmp_path / "t"
    target.mkdir()
    (target / "base").symlink_to(tmp_path)
    with pytest.raises(IntegrityError, match="not a directory"):
        extract(make_tar([("base/evil", b"x")]), target, 512)
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_a_long_name_comes_out_under_its_full_name(tmp_path, fmt):
    """GNU long names and pax paths (the backup's scanner reads them the same way:
    test_tarscan.py) name the file that follows, not a member of their own."""
    long_dir, odd = "base/" + "d" * 150, "line\nbreak" * 12  # pax records may hold newlines
    members = [("base", None), (long_dir, None), (f"{long_dir}/" + "f" * 110, b"data"), (f"base/{odd}", b"odd"),
               ("base/1", b"one")]
    ex = extract(make_tar(members, fmt=fmt), tmp_path, 700)
    assert sorted(p.name for p in (tmp_path / "base").iterdir()) == ["1", "d" * 150, odd]
    assert (tmp_path / long_dir / ("f" * 110)).read_bytes() == b"data"
    assert (tmp_path / "base" / odd).read_bytes() == b"odd" and (tmp_path / "base/1").read_bytes() == b"one"
    assert ex.files == 3


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


def test_no_logging_and_no_warnings_per_member(tmp_path, caplog):
    """A worker has Airflow's logging configured (the root logger at INFO with a handler
    and its secrets-masking filter), so a log call, or a warning, per member would cost
    every file of a restore there and not in a plain process. The extractor makes none
    at any level (the restore logs a line per 10 s and per phase)."""
    import logging
    import warnings

    caplog.set_level(logging.DEBUG)
    members = [("base", None), ("base/1", None)] + [(f"base/1/{i}", os.urandom(i % 7 * 100)) for i in range(300)]
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        for writers in (1, 2):
            (tmp_path / f"w{writers}").mkdir()
            assert extract(make_tar(members), tmp_path / f"w{writers}", 4096, writers).files == 300
    assert caplog.records == [] and warned == []


def test_the_time_creating_files_is_counted(tmp_path, monkeypatch):
    """create_s is the time inside the creation of files and directories (what a file
    system's inode allocation costs), and only that: slow writes do not count."""
    import time

    def slowed(fn, seconds):
        def call(*a, **k):
            time.sleep(seconds)
            return fn(*a, **k)
        return call

    members = [("base", None)] + [(f"base/{i}", b"x" * 600) for i in range(4)]
    for name in ("writes", "creates"):
        (tmp_path / name).mkdir()
    with monkeypatch.context() as m:
        m.setattr(os, "pwrite", slowed(os.pwrite, 0.05))
        slow_writes = extract(make_tar(members), tmp_path / "writes", 512)
    with monkeypatch.context() as m:
        m.setattr(os, "open", slowed(os.open, 0.02))
        m.setattr(os, "mkdir", slowed(os.mkdir, 0.02))
        slow_creates = extract(make_tar(members), tmp_path / "creates", 512)
    assert slow_writes.create_s < 0.1  # four writes of 50 ms each are not in it
    assert slow_creates.create_s >= 5 * 0.02
