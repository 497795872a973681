"""Read pg_basebackup's tar stream as it goes by: one parser for the backup and the restore.

:class:`TarReader` is fed the stream in pieces of any size. It reads the 512-byte
headers itself (checksum checked), applies GNU long names and long link names (``L``,
``K``) and pax records (``x``: ``path``, ``linkpath``, ``size``) to the member that
follows, skips global pax headers (``g``), and hands each member to
:meth:`TarReader.on_member`. Member data goes to :meth:`TarReader.on_data` as slices of
the fed pieces, never copied, or is skipped by arithmetic when the member was not
wanted. A damaged stream (a checksum mismatch, a zero block before the end, data after
the end-of-archive marker, an oversized or malformed extension header) raises
:class:`~pgops.errors.IntegrityError`.

Two readers use it: :class:`TarScanner` here, which sees every byte of a full backup on
its way into the repository and keeps the few small members pgops records in the
backup's metadata (``backup_label``, ``backup_manifest``, ``PG_VERSION``,
``global/pg_control``); and the restore's :class:`pgops.restore.extract.TarExtractor`,
which writes the members into a data directory. Both therefore read a stream the same
way, and a backup the restore could not read fails when it is taken.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

from pgops.errors import IntegrityError

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)
#: GNU long name and long link name, pax per-member and global records
_EXTENSIONS = frozenset("LKxg")
#: the largest extension header accepted (pg_basebackup writes none)
MAX_EXTENSION = 1 << 20
#: the pax records applied to the member that follows (the others, e.g. mtime, matter to nobody here)
_PAX_KEYS = frozenset({"path", "linkpath", "size"})


class TarMember(NamedTuple):
    """One archive member, extension headers applied. ``name`` is as stored (it may start with ``./``)."""

    name: str
    typeflag: str  # "0" regular file (also for a NUL typeflag), "5" directory, "2" symbolic link, ...
    size: int
    header: bytes
    long_linkname: str | None = None  # from a GNU K header or a pax linkpath

    @property
    def mode(self) -> int:
        return _number(self.header[100:108])

    @property
    def linkname(self) -> str:
        return self.long_linkname or _text(self.header[157:257])


def _number(field: bytes) -> int:
    """A numeric header field: octal text, or GNU base-256 (sizes of 8 GiB and more)."""
    if field and field[0] & 0x80:
        value = field[0] & 0x7F
        for byte in field[1:]:
            value = (value << 8) | byte
        return value
    text = field.split(b"\0", 1)[0].strip()
    try:
        return int(text, 8) if text else 0
    except ValueError as exc:
        raise IntegrityError(f"tar header field {bytes(field)!r} is not a number") from exc


def header_checksum(header: bytes) -> int:
    """What a header's checksum field must hold: the sum of its bytes, the field itself
    counted as eight spaces.

    The scanner sees every header of a backup, so the sum is not a Python loop over 512
    bytes: zlib's Adler-32 holds 1 + the byte sum modulo 65521, computed in C, and with
    at most 255 non-zero bytes (each at most 255) the sum is below 65521, so that is the
    sum itself. Headers with more non-zero bytes (rare: long names) are summed directly.
    """
    blanked = header[:148] + b"        " + header[156:]
    if blanked.count(0) > BLOCK - 256:
        return (zlib.adler32(blanked) & 0xFFFF) - 1
    return sum(blanked)


def _text(field: bytes) -> str:
    """A NUL-terminated name; undecodable bytes are kept (surrogateescape), as the file system has them."""
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """The ``"<length> <key>=<value>\\n"`` records of a pax header (values may hold newlines)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        digits = data[pos:space] if space > pos else b""
        stop = pos + int(digits) if digits.isdigit() else -1  # the length counts the whole record
        key, sep, value = data[space + 1:stop - 1].partition(b"=")
        if not space < stop <= len(data) or data[stop - 1] != 0x0A or not sep:
            raise IntegrityError(f"malformed pax header record at byte {pos}: not from pg_basebackup")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos = stop
    return records


class TarReader:
    """Feed the stream in order with :meth:`feed`; subclasses say what to do with members.

    ``ended`` becomes true at the end-of-archive marker (two zero blocks); zero bytes may
    follow it, anything else is refused. ``members`` counts the members seen (extension
    headers are not members); ``last_member`` names the latest, for messages.
    """

    def __init__(self) -> None:
        self.ended = False
        self.members = 0
        self.last_member = ""
        self._header = bytearray()
        self._left = 0  # data bytes of the current member (or extension header) still to come
        self._pad = 0  # padding bytes after them
        self._receiving = False  # the current member's data goes to on_data
        self._extension: str | None = None  # typeflag of the extension header being read
        self._extension_buf = bytearray()
        self._pending: dict[str, str] = {}  # path / linkpath / size for the next member
        self._zero_blocks = 0

    # -- what subclasses implement ----------------------------------------------------------
    def on_member(self, member: TarMember) -> bool:
        """A member's header; return True to be handed its data."""
        raise NotImplementedError

    def on_data(self, chunk: memoryview) -> None:
        """The next piece of the wanted member's data (a slice of the fed piece: copy it to keep it)."""

    def on_member_end(self) -> None:
        """The wanted member's data is complete (called for empty members too)."""

    # -- the stream -------------------------------------------------------------------------
    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos, end = 0, len(view)
        while pos < end:
            if self.ended:
                if bytes(view[pos:end]).strip(b"\0"):
                    raise IntegrityError("data after the tar end-of-archive marker")
                return
            if self._left:
                take = min(self._left, end - pos)
                if self._extension is not None:
                    self._extension_buf += view[pos:pos + take]
                elif self._receiving:
                    self.on_data(view[pos:pos + take])
                self._left -= take
                pos += take
                if not self._left:
                    self._data_done()
                continue
            if self._pad:
                take = min(self._pad, end - pos)
                self._pad -= take
                pos += take
                continue
            if not self._header and end - pos >= BLOCK:
                header = bytes(view[pos:pos + BLOCK])
                pos += BLOCK
            else:
                take = min(BLOCK - len(self._header), end - pos)
                self._header += view[pos:pos + take]
                pos += take
                if len(self._header) < BLOCK:
                    continue
                header = bytes(self._header)
                self._header.clear()
            self._on_header(header)

    def _on_header(self, header: bytes) -> None:
        if header == _ZERO_BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.ended = True
            return
        if self._zero_blocks:
            raise IntegrityError(f"a zero block inside the tar stream {self._where()}")
        if _number(header[148:156]) != header_checksum(header):
            raise IntegrityError(f"tar header checksum mismatch {self._where()}")
        typeflag = chr(header[156]) if header[156] else "0"
        size = _number(header[124:136])
        if typeflag in _EXTENSIONS:
            if size > MAX_EXTENSION:
                raise IntegrityError(f"a {size}-byte tar extension header {self._where()}: not from pg_basebackup")
            self._extension, self._extension_buf = typeflag, bytearray()
            self._left, self._pad = size, -size % BLOCK
            if not size:
                self._data_done()
            return
        name = _text(header[0:100])
        if header[345] and header[257:263] == b"ustar\0":  # a POSIX name prefix (GNU keeps other fields there)
            name = f"{_text(header[345:500])}/{name}"
        member = TarMember(name, typeflag, size, header)
        if self._pending:
            member = self._extended(member)
        self.members += 1
        self.last_member = member.name
        self._receiving = self.on_member(member)
        self._left, self._pad = member.size, -member.size % BLOCK
        if not member.size:
            self._data_done()

    def _where(self) -> str:
        return f"after {self.last_member or 'the start'}"

    def _extended(self, member: TarMember) -> TarMember:
        """``member`` with the extension headers read before it applied."""
        pending, self._pending = self._pending, {}
        size = pending.get("size")
        if size is not None and not size.isdigit():
            raise IntegrityError(f"pax size {size!r} of tar member {member.name} is not a number")
        return member._replace(name=pending.get("path") or member.name, size=int(size or member.size),
                               long_linkname=pending.get("linkpath") or None)

    def _data_done(self) -> None:
        kind, self._extension = self._extension, None
        if kind is None:
            if self._receiving:
                self._receiving = False
                self.on_member_end()
            return
        data = bytes(self._extension_buf)
        if kind == "L":
            self._pending["path"] = _text(data)
        elif kind == "K":
            self._pending["linkpath"] = _text(data)
        elif kind == "x":
            self._pending.update((k, v) for k, v in _pax_records(data).items() if k in _PAX_KEYS)
        # "g": global pax records hold nothing pgops uses (pg_basebackup writes none)


class TarScanner(TarReader):
    """Keeps the ``wanted`` regular members of at most ``max_capture`` bytes; read
    ``captured`` (name without ``./`` -> bytes) and ``members`` after the stream."""

    def __init__(self, wanted: frozenset[str], max_capture: int = 64 * 1024 * 1024) -> None:
        super().__init__()
        self.wanted = wanted
        self.max_capture = max_capture
        self.captured: dict[str, bytes] = {}
        self._name = ""
        self._buf = bytearray()

    def on_member(self, member: TarMember) -> bool:
        name = member.name.removeprefix("./")
        if name not in self.wanted or member.typeflag != "0" or member.size > self.max_capture:
            return False
        self._name, self._buf = name, bytearray()
        return True

    def on_data(self, chunk: memoryview) -> None:
        self._buf += chunk

    def on_member_end(self) -> None:
        self.captured[self._name] = bytes(self._buf)
