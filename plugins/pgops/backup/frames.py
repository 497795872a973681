"""Framed zstd: a stream cut into independently compressed frames, with an index.

The backup stream is cut into fixed-size raw pieces (8 MiB); each is compressed as its
own zstd frame, in parallel on ``workers`` threads (zstd releases the GIL), and the
frames are written in order, so the stored object is an ordinary ``.zst`` file that
``zstd -d`` reads whole. The index (raw and stored size of each frame, and the sha256
of each stored frame) lets a restore fetch and decompress frames in parallel and
verify each one before it is used.

Memory stays bounded: at most ``workers + 2`` raw pieces and their frames are alive.
"""

from __future__ import annotations

import hashlib
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

FRAME_RAW_SIZE = 8 * 1024 * 1024


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


def read_pieces(stream, size: int = FRAME_RAW_SIZE) -> Iterator[bytes]:
    """Fixed-size pieces of a binary stream (the last may be shorter)."""
    while True:
        piece = stream.read(size)
        if not piece:
            return
        yield piece


def prefetch(pieces: Iterable[bytes], depth: int = 4) -> Iterator[bytes]:
    """Run ``pieces`` in a reader thread, ``depth`` pieces ahead of the consumer.

    A producer process writing into a pipe stalls whenever nobody reads; while the
    consumer waits for compression, this thread keeps the pipe drained. Exceptions in
    the reader re-raise in the consumer; memory stays at ``depth`` pieces.
    """
    import queue

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def hand_over(item: object) -> bool:
        """Queue ``item`` unless the consumer has gone (then never block on a full queue)."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.5)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for piece in pieces:
                if not hand_over(piece):
                    return
            hand_over(done)
        except BaseException as exc:  # handed over to the consumer, which re-raises it
            hand_over(exc)

    thread = threading.Thread(target=run, name="pipe-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def enlarge_pipe(fileobj, size: int = 1 << 20) -> None:
    """Ask Linux for a bigger pipe buffer (default 64 KiB) so the writer stalls less."""
    import fcntl

    try:
        fcntl.fcntl(fileobj.fileno(), 1031, size)  # F_SETPIPE_SZ
    except (OSError, AttributeError):
        pass  # not a pipe, or above /proc/sys/fs/pipe-max-size: keep the default


class FrameCompressor:
    """Compress pieces into frames in parallel, yielding them in order and indexing them."""

    def __init__(self, level: int = 3, workers: int = 2) -> None:
        self.level = level
        self.workers = workers
        self.index = FrameIndex()
        self._local = threading.local()

    def _compress(self, raw: bytes) -> tuple[int, bytes, str]:
        import zstandard

        cctx = getattr(self._local, "cctx", None)
        if cctx is None:
            cctx = self._local.cctx = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        frame = cctx.compress(raw)
        return len(raw), frame, hashlib.sha256(frame).hexdigest()

    def _record(self, result: tuple[int, bytes, str]) -> bytes:
        raw_size, frame, digest = result
        offset = self.index.frames[-1].stored_offset + self.index.frames[-1].stored_size if self.index.frames else 0
        self.index.frames.append(Frame(raw_size, offset, len(frame), digest))
        return frame

    def frames(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        if self.workers <= 1:
            for raw in pieces:
                yield self._record(self._compress(raw))
            return
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="zstd") as pool:
            pending: deque = deque()
            try:
                for raw in pieces:
                    pending.append(pool.submit(self._compress, raw))
                    while len(pending) > self.workers + 1 or (pending and pending[0].done()):
                        yield self._record(pending.popleft().result())
                while pending:
                    yield self._record(pending.popleft().result())
            finally:
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
