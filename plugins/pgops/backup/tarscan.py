"""Watch a tar stream go by and keep a few small members.

A full backup streams pg_basebackup's tar output straight into the repository; on the
way, this scanner reads only the 512-byte headers (member data is skipped by
arithmetic, not copied) and keeps the members pgops records in the backup's metadata:
``backup_label``, ``backup_manifest``, ``PG_VERSION`` and ``global/pg_control``.
It understands ustar, GNU long names and pax ``path`` records, which covers what
pg_basebackup writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BLOCK = 512


def _octal(field_bytes: bytes) -> int:
    if field_bytes and field_bytes[0] & 0x80:  # GNU base-256 for sizes >= 8 GiB
        value = field_bytes[0] & 0x7F
        for byte in field_bytes[1:]:
            value = (value << 8) | byte
        return value
    text = field_bytes.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def header_fields(header: bytes, errors: str = "replace") -> tuple[str, int, str]:
    """(name, size, typeflag) of a 512-byte ustar/GNU header (the ustar prefix joined)."""
    size = _octal(header[124:136])
    typeflag = chr(header[156]) if header[156] else "0"
    name = header[0:100].split(b"\0", 1)[0].decode("utf-8", errors)
    if header[257:262] == b"ustar":
        prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", errors)
        if prefix:
            name = f"{prefix}/{name}"
    return name, size, typeflag


@dataclass
class TarScanner:
    """Feed it the stream in any chunk sizes; read ``captured`` and ``members`` after."""

    wanted: frozenset[str]
    max_capture: int = 64 * 1024 * 1024
    captured: dict[str, bytes] = field(default_factory=dict)
    members: int = 0
    ended: bool = False

    def __post_init__(self) -> None:
        self._header = bytearray()
        self._skip = 0  # data (plus padding) bytes still to skip
        self._capture_name: str | None = None
        self._capture_left = 0
        self._capture_buf = bytearray()
        self._special: str | None = None  # "L" (GNU long name) or "x" (pax) being read
        self._special_buf = bytearray()
        self._next_name: str | None = None
        self._zero_blocks = 0

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        pos = 0
        end = len(view)
        while pos < end and not self.ended:
            if self._skip:
                take = min(self._skip, end - pos)
                if self._capture_left:
                    grab = min(take, self._capture_left)
                    target = self._special_buf if self._special else self._capture_buf
                    target += view[pos:pos + grab]
                    self._capture_left -= grab
                    if not self._capture_left:
                        self._finish_capture()
                pos += take
                self._skip -= take
                continue
            need = BLOCK - len(self._header)
            take = min(need, end - pos)
            self._header += view[pos:pos + take]
            pos += take
            if len(self._header) == BLOCK:
                self._on_header(bytes(self._header))
                self._header.clear()

    def _on_header(self, header: bytes) -> None:
        if header == b"\0" * BLOCK:
            self._zero_blocks += 1
            if self._zero_blocks >= 2:
                self.ended = True
            return
        self._zero_blocks = 0
        name, size, typeflag = header_fields(header)
        padded = (size + BLOCK - 1) // BLOCK * BLOCK
        self._skip = padded
        if typeflag in ("L", "x"):
            self._special = typeflag
            self._special_buf = bytearray()
            self._capture_left = min(size, 1 << 20)
            if not self._capture_left:
                self._finish_capture()
            return
        if self._next_name is not None:
            name, self._next_name = self._next_name, None
        name = name.removeprefix("./")
        self.members += 1
        if name in self.wanted and typeflag in ("0", "\0") and size <= self.max_capture:
            self._capture_name = name
            self._capture_buf = bytearray()
            self._capture_left = size
            if not size:
                self._finish_capture()

    def _finish_capture(self) -> None:
        if self._special == "L":
            self._next_name = bytes(self._special_buf).split(b"\0", 1)[0].decode("utf-8", "replace")
        elif self._special == "x":
            for record in bytes(self._special_buf).decode("utf-8", "replace").split("\n"):
                _, _, kv = record.partition(" ")
                key, _, value = kv.partition("=")
                if key == "path":
                    self._next_name = value
        elif self._capture_name is not None:
            self.captured[self._capture_name] = bytes(self._capture_buf)
            self._capture_name = None
        self._special = None
