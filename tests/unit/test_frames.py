from __future__ import annotations

import io
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup.frames import FrameCompressor, FrameIndex, decompress_frame, prefetch
from pgops.errors import IntegrityError


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(0, 300_000), min_size=0, max_size=12), workers=st.sampled_from([0, 1, 2, 3]))
def test_frames_concatenate_to_the_input_and_index_every_frame(sizes, workers):
    pieces = [os.urandom(n // 2) + b"\0" * (n - n // 2) for n in sizes]
    fc = FrameCompressor(level=3, workers=workers)
    stored = b"".join(fc.frames(prefetch(iter(pieces), depth=2)))
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


def test_prefetch_reraises_the_producers_error():
    def producer():
        yield b"a"
        raise OSError("pipe broke")

    with pytest.raises(OSError, match="pipe broke"):
        list(prefetch(producer()))


def test_prefetch_reader_does_not_hang_when_the_consumer_stops_early():
    import threading

    def producer():  # fills the one-slot queue, then fails: its error must not block forever
        yield b"a"
        yield b"b"
        raise OSError("pipe broke")

    before = threading.active_count()
    gen = prefetch(producer(), depth=1)
    next(gen)
    gen.close()  # the consumer failed and went away with the queue full
    import time

    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
