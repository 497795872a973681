from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup.tarscan import TarScanner, header_checksum
from pgops.errors import IntegrityError

LONG = "base/16384/" + "x" * 150 + "/backup_manifest"


def make_tar(fmt: int, members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


MEMBERS = {
    "backup_label": b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    "base/1/1259": bytes(range(256)) * 300,
    "PG_VERSION": b"15\n",
    LONG: b"not the real manifest",
    "global/pg_control": b"\x01" * 8192,
    "empty": b"",
    "backup_manifest": b'{"PostgreSQL-Backup-Manifest-Version": 1}',
}
WANTED = frozenset({"backup_label", "PG_VERSION", "global/pg_control", "backup_manifest", "empty"})


@settings(max_examples=60, deadline=None)
@given(fmt=st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT]),
       cuts=st.lists(st.integers(1, 5000), min_size=1, max_size=50))
def test_captures_wanted_members_whatever_the_chunking(fmt, cuts):
    members = dict(MEMBERS)
    if fmt == tarfile.USTAR_FORMAT:
        members.pop(LONG)  # ustar cannot hold a 160-character name without a split point
    data = make_tar(fmt, members)
    scanner = TarScanner(WANTED)
    pos = 0
    i = 0
    while pos < len(data):
        step = cuts[i % len(cuts)]
        scanner.feed(data[pos:pos + step])
        pos += step
        i += 1
    assert scanner.ended
    assert scanner.members == len(members)
    assert scanner.captured == {name: members[name] for name in WANTED}


def test_oversized_members_are_not_kept():
    scanner = TarScanner(frozenset({"backup_manifest"}), max_capture=10)
    scanner.feed(make_tar(tarfile.PAX_FORMAT, {"backup_manifest": b"y" * 11}))
    assert scanner.captured == {} and scanner.ended


def feed_in_pieces(scanner: TarScanner, data: bytes, piece: int) -> None:
    for i in range(0, len(data), piece):
        scanner.feed(data[i:i + piece])


LONG_WANTED = "base/16384/" + "n" * 120 + "/PG_VERSION"


def long_name_tar(fmt: int) -> bytes:
    """A long-named regular file, a symbolic link whose target is long, and (pax) a
    global header first and a name holding a newline, which pax records allow."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt,
                      pax_headers={"comment": "global"} if fmt == tarfile.PAX_FORMAT else None) as tar:
        for name, data in ((LONG_WANTED, b"15\n"), ("base/" + "line\nbreak" * 12, b"x")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pg_wal")
        link.type, link.linkname = tarfile.SYMTYPE, "/srv/" + "w" * 150
        tar.addfile(link)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
@pytest.mark.parametrize("piece", [1, 511, 4096])
def test_long_names_and_links_apply_to_the_member_after_them(fmt, piece):
    """GNU L/K and pax x/g headers are not members; they name the member that follows
    (the restore's extractor reads the same stream with the same parser)."""
    members = []

    class Seen(TarScanner):
        def on_member(self, member):
            members.append(member)
            return super().on_member(member)

    scanner = Seen(frozenset({LONG_WANTED}))
    feed_in_pieces(scanner, long_name_tar(fmt), piece)
    assert scanner.ended and scanner.captured == {LONG_WANTED: b"15\n"} and scanner.members == 3
    assert [(m.name, m.typeflag) for m in members] == [
        (LONG_WANTED, "0"), ("base/" + "line\nbreak" * 12, "0"), ("pg_wal", "2")]
    assert members[2].linkname == "/srv/" + "w" * 150


def test_a_damaged_stream_fails_the_backup_scan():
    """The backup reads its stream as strictly as a restore will: a stream the restore
    would refuse fails the backup that took it."""
    blob = make_tar(tarfile.USTAR_FORMAT, {"PG_VERSION": b"15\n", "base/1/1": b"y" * 700})
    bad = bytearray(blob)
    bad[512 * 2 + 5] ^= 1  # the second member's name: its header checksum no longer matches
    with pytest.raises(IntegrityError, match="checksum mismatch after PG_VERSION"):
        TarScanner(WANTED).feed(bytes(bad))
    body = blob.rstrip(b"\0")
    with pytest.raises(IntegrityError, match="data after the tar end-of-archive marker"):
        TarScanner(WANTED).feed(body + b"\0" * (-len(body) % 512) + bytes(1024) + b"junk")
    with pytest.raises(IntegrityError, match="zero block inside"):
        TarScanner(WANTED).feed(body + b"\0" * (-len(body) % 512) + bytes(512) + blob)


@settings(max_examples=300, deadline=None)
@given(header=st.one_of(st.binary(min_size=512, max_size=512),
                        st.lists(st.sampled_from([0, 0, 0, 48, 255]), min_size=512, max_size=512).map(bytes)))
def test_the_header_checksum_is_the_byte_sum_with_its_field_as_spaces(header):
    assert header_checksum(header) == sum(header[:148]) + 8 * ord(" ") + sum(header[156:])
