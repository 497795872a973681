from __future__ import annotations

import io
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup.frames import FrameCompressor, FrameIndex, decompress_frame
from pgops.errors import IntegrityError


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 300_000), min_size=0, max_size=12), workers=st.sampled_from([0, 1, 2, 3]))
def test_frames_concatenate_to_the_input_and_index_every_frame(sizes, workers):
    pieces = [os.urandom(n // 2) + b"\0" * (n - n // 2) for n in sizes if n]
    fc = FrameCompressor(level=3, workers=workers)
    stored = b"".join(fc.frames(iter(pieces)))
    # The stored object is an ordinary multi-frame .zst, as `zstd -d` reads it.
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored), read_across_frames=True)
    assert reader.read() == b"".join(pieces)
    index = FrameIndex.from_json(fc.index.to_json())
    assert [f.raw_size for f in index.frames] == [len(p) for p in pieces]
    assert index.stored_size == len(stored)
    for frame, piece in zip(index.frames, pieces):
        part = stored[frame.stored_offset:frame.stored_offset + frame.stored_size]
        assert decompress_frame(part, frame.sha256, frame.raw_size) == piece


def test_a_damaged_frame_is_refused():
    fc = FrameCompressor(level=3, workers=0)
    (frame,) = list(fc.frames([b"x" * 1000]))
    damaged = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(IntegrityError, match="checksum mismatch"):
        decompress_frame(damaged, fc.index.frames[0].sha256, 1000)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_each_piece_is_read_once_in_order_and_compressed_in_order(workers):
    import threading

    pieces = [bytes([i]) * (1000 + i) for i in range(40)]
    readers = set()
    it = iter(pieces)

    def read_piece() -> bytes:
        readers.add(threading.current_thread().name)
        return next(it, b"")

    fc = FrameCompressor(level=3, workers=workers)
    frames = list(fc.frames_from(read_piece))
    assert [zstandard.ZstdDecompressor().decompress(f) for f in frames] == pieces
    assert next(it, None) is None
    if workers > 1:  # the workers read what they compress: no reader thread
        assert all(name.startswith("zstd") for name in readers)


def test_the_readers_error_reraises_and_nothing_more_is_read():
    calls = []

    def read_piece() -> bytes:
        calls.append(1)
        if len(calls) == 3:
            raise OSError("pipe broke")
        return b"x" * 1000

    with pytest.raises(OSError, match="pipe broke"):
        list(FrameCompressor(level=3, workers=2).frames_from(read_piece))
    assert len(calls) == 3


def test_workers_stop_when_the_consumer_stops_early():
    import threading
    import time

    before = threading.active_count()
    read = []

    def read_piece() -> bytes:  # an endless stream
        read.append(1)
        return b"y" * 1000

    gen = FrameCompressor(level=3, workers=2).frames_from(read_piece)
    next(gen)
    gen.close()  # the consumer (the repository upload) failed and went away
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
    assert len(read) <= 4  # the frame taken, plus at most workers + 1 read ahead


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_frames_into_reused_buffers_keep_every_piece_intact(workers):
    """Workers read into buffers they reuse: a piece must be compressed before its
    buffer is filled again, or frames would hold later data."""
    stream = io.BytesIO(b"".join(bytes([i % 251]) * 5000 + os.urandom(300) for i in range(60)))
    expected = stream.getvalue()
    fc = FrameCompressor(level=3, workers=workers)
    frames = list(fc.frames_into(lambda buffer: stream.readinto(buffer), piece_size=4096))
    assert all(f.raw_size == 4096 for f in fc.index.frames[:-1])
    assert b"".join(zstandard.ZstdDecompressor().decompress(f) for f in frames) == expected


def test_read_full_fills_the_buffer_across_short_reads_and_is_short_only_at_the_end():
    from pgops.backup.frames import read_full

    class Trickle(io.RawIOBase):  # a pipe: each read returns what happens to be there
        def __init__(self, data: bytes) -> None:
            self.data = memoryview(data)

        def readinto(self, buffer) -> int:
            n = min(len(buffer), 7, len(self.data))
            buffer[:n] = self.data[:n]
            self.data = self.data[n:]
            return n

    raw = Trickle(bytes(range(100)))
    buffer = memoryview(bytearray(40))
    assert read_full(raw, buffer) == 40 and bytes(buffer) == bytes(range(40))
    assert read_full(raw, buffer) == 40 and bytes(buffer) == bytes(range(40, 80))
    assert read_full(raw, buffer) == 20 and bytes(buffer[:20]) == bytes(range(80, 100))
    assert read_full(raw, buffer) == 0


def test_compressing_threads_yield_to_the_producers_and_the_caller_keeps_its_priority():
    import threading

    from pgops.backup.frames import COMPRESSOR_NICE

    seen = []
    fc = FrameCompressor(level=3, workers=2)
    compress = fc._compress

    def recording(raw):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return compress(raw)

    fc._compress = recording
    before = os.getpriority(os.PRIO_PROCESS, 0)
    list(fc.frames(iter([b"a" * 5000] * 6)))
    assert len(seen) == 6 and all(p >= min(before + COMPRESSOR_NICE, 19) for p in seen)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
