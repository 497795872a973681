from __future__ import annotations

import io
import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup.tarscan import TarScanner

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
