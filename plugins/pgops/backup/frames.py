"""Framed zstd: a stream cut into independently compressed frames, with an index.

The backup stream is cut into fixed-size raw pieces (4 MiB); each is compressed as its
own zstd frame, in parallel on ``workers`` threads (zstd releases the GIL), and the
frames are written in order, so the stored object is an ordinary ``.zst`` file that
``zstd -d`` reads whole. The index (raw and stored size of each frame, and the sha256
of each stored frame) lets a restore fetch and decompress frames in parallel and
verify each one before it is used.

Memory stays bounded: ``workers + 1`` threads, each with one raw piece (a reused
buffer, :meth:`FrameCompressor.frames_into`), its zstd context and output buffer
(:mod:`.compress`, reused too) and its frame. Each thread reads the piece
it compresses (:meth:`FrameCompressor.frames_from`): a piece goes from the pipe to zstd
while it is still in the CPU's cache, and one thread reads while ``workers`` compress.
Pieces of 4 MiB measured cheaper than 8 MiB (fewer cache misses, less memory) and no
slower than 1 or 2 MiB, and keep the index small (about 25 MB of JSON per TiB).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from pgops.backup.compress import frame_encoder

FRAME_RAW_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class Frame:
    raw_size: int
    stored_offset: int
    stored_size: int
    sha256: str


@dataclass
class FrameIndex:
    frames: list[Frame] = field(default_factory=list)

    @property
    def raw_size(self) -> int:
        return sum(f.raw_size for f in self.frames)

    @property
    def stored_size(self) -> int:
        return sum(f.stored_size for f in self.frames)

    def to_json(self) -> dict:
        return {
            "version": 1,
            "frames": [[f.raw_size, f.stored_offset, f.stored_size, f.sha256] for f in self.frames],
        }

    @classmethod
    def from_json(cls, data: dict) -> FrameIndex:
        if data.get("version") != 1:
            raise ValueError(f"unknown frame index version {data.get('version')!r}")
        return cls([Frame(*row) for row in data["frames"]])


def enlarge_pipe(fileobj, size: int = 1 << 20) -> None:
    """Ask Linux for a bigger pipe buffer (default 64 KiB) so the writer stalls less."""
    import fcntl

    try:
        fcntl.fcntl(fileobj.fileno(), 1031, size)  # F_SETPIPE_SZ
    except (OSError, AttributeError):
        pass  # not a pipe, or above /proc/sys/fs/pipe-max-size: keep the default


def read_full(raw, buffer: memoryview) -> int:
    """Fill ``buffer`` from the unbuffered stream ``raw`` (each read goes straight into
    ``buffer``, no intermediate copy); returns the number of bytes read, short only at
    the end of the stream."""
    filled = 0
    while filled < len(buffer):
        got = raw.readinto(buffer[filled:])
        if not got:
            break
        filled += got
    return filled


COMPRESSOR_NICE = 10


def _yield_to_producers(local: threading.local) -> None:
    """Lower this compressing thread's scheduling priority by ``COMPRESSOR_NICE``, once
    per thread (Linux: nice is per thread). The stream's producers, pg_basebackup and
    the server's walsender, then run as soon as they can, so the pipe rarely runs dry
    while a core is idle; the compressors take every cycle left. (The threads take turns
    reading the pipe, so the reading thread is niced too: an unprivileged process cannot
    raise a priority back. It mostly sleeps on the pipe, so this costs little.) Measured
    with the backup alone on 2 vCPUs: the cores were busy 1.76-1.81 of 2 during
    streaming without it, 1.81-1.89 with it (three paired runs)."""
    if getattr(local, "niced", False):
        return
    local.niced = True
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + COMPRESSOR_NICE, 19))
    except (OSError, AttributeError):
        pass  # not Linux, or not allowed: the pipeline still works, a little less evenly


class FrameCompressor:
    """Compress pieces into frames in parallel, yielding them in order and indexing them."""

    def __init__(self, level: int = 3, workers: int = 2) -> None:
        self.level = level
        self.workers = workers
        self.index = FrameIndex()
        self._local = threading.local()

    def _compress(self, raw: bytes | memoryview) -> tuple[int, bytes, str]:
        encode = getattr(self._local, "encode", None)
        if encode is None:  # one encoder per thread of this compressor, freed with it
            encode = self._local.encode = frame_encoder(self.level)
        frame = encode(raw)
        return len(raw), frame, hashlib.sha256(frame).hexdigest()

    def _record(self, result: tuple[int, bytes, str]) -> bytes:
        raw_size, frame, digest = result
        offset = self.index.frames[-1].stored_offset + self.index.frames[-1].stored_size if self.index.frames else 0
        self.index.frames.append(Frame(raw_size, offset, len(frame), digest))
        return frame

    def frames(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        """Frames of ``pieces``, in order (empty pieces are skipped)."""
        it = iter(pieces)

        def read_piece() -> bytes:
            for piece in it:
                if piece:
                    return piece
            return b""

        return self.frames_from(read_piece)

    def frames_into(self, read_into: Callable[[memoryview], int], piece_size: int = FRAME_RAW_SIZE) -> Iterator[bytes]:
        """Frames of the pieces ``read_into(buffer)`` fills (it returns the number of bytes
        it put in ``buffer``, 0 at the end), as :meth:`frames_from`.

        Each worker thread reads into its own buffer of ``piece_size`` bytes, allocated
        once and reused for every piece it compresses (the frame is compressed before the
        worker reads again): no fresh 4 MiB allocation, page faults and zeroing per piece.
        The buffers are page-aligned anonymous mappings: the kernel copies from a pipe
        into a page-aligned buffer at twice the speed it copies into a ``bytearray``,
        whose data starts a few bytes into a page (measured: 0.4 s against 0.85 s of
        system time per 800 MB).
        """
        import mmap

        local = threading.local()

        def read_piece() -> memoryview:
            buffer = getattr(local, "buffer", None)
            if buffer is None:
                buffer = local.buffer = memoryview(mmap.mmap(-1, piece_size))
            return buffer[:read_into(buffer)]

        return self.frames_from(read_piece)

    def frames_from(self, read_piece: Callable[[], bytes | memoryview]) -> Iterator[bytes]:
        """Frames of the pieces ``read_piece()`` returns until it returns ``b""``, in order.

        ``workers + 1`` threads each call ``read_piece`` themselves, in turn (piece n is
        read by the task for frame n, after piece n - 1), then compress what they read,
        at most ``workers`` at a time: one thread can always be reading while
        ``workers`` compress (the shape of libzstd's own multi-threading, where the
        caller feeds while the workers compress). A thread that only took turns between
        reading and compressing would leave a core idle whenever it waited on the
        producer. The piece is compressed by the thread that read it, still in the
        CPU's cache, and no separate reader thread or queue holds more pieces. An
        exception from ``read_piece`` re-raises here, and no later piece is read.
        """
        if self.workers < 1:
            while raw := read_piece():
                yield self._record(self._compress(raw))
            return
        turn = threading.Condition()
        compressing = threading.BoundedSemaphore(self.workers)
        state = {"next": 0, "done": False}

        def task(seq: int) -> tuple[int, bytes, str] | None:
            with turn:
                while state["next"] != seq:
                    turn.wait()
                try:
                    raw = b"" if state["done"] else read_piece()
                    if not raw:
                        state["done"] = True
                except BaseException:
                    state["done"] = True
                    raise
                finally:
                    state["next"] += 1
                    turn.notify_all()
            if not raw:
                return None
            with compressing:
                _yield_to_producers(self._local)
                return self._compress(raw)

        threads = self.workers + 1
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="zstd") as pool:
            pending: deque[Future] = deque()
            submitted = 0
            try:
                while True:
                    # One task more than threads: the next read starts as soon as a thread is free.
                    while len(pending) <= threads:
                        pending.append(pool.submit(task, submitted))
                        submitted += 1
                    result = pending.popleft().result()
                    if result is None:
                        return
                    yield self._record(result)
            finally:
                state["done"] = True  # no lock: a task may hold it, blocked in read_piece
                for fut in pending:
                    fut.cancel()


def decompress_frame(frame: bytes, expected_sha256: str | None = None, raw_size: int | None = None) -> bytes:
    """One stored frame back to raw bytes, checked against its index entry."""
    import zstandard

    from pgops.errors import IntegrityError

    if expected_sha256 is not None and hashlib.sha256(frame).hexdigest() != expected_sha256:
        raise IntegrityError("frame checksum mismatch")
    raw = zstandard.ZstdDecompressor().decompress(frame, max_output_size=raw_size or 0)
    if raw_size is not None and len(raw) != raw_size:
        raise IntegrityError(f"frame decompressed to {len(raw)} bytes, expected {raw_size}")
    return raw
