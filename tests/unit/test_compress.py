from __future__ import annotations

import os
import subprocess
import threading

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.backup import compress


def test_the_pre_splitter_is_switched_off_through_the_cffi_binding():
    # The wheel pinned in requirements.txt ships the cffi backend: the fast path is the one used.
    assert compress._libzstd() is not None
    encoder = compress.frame_encoder(3)
    assert isinstance(encoder, compress._PresplitOffEncoder)
    ffi, lib, _ = compress._libzstd()
    value = ffi.new("int *")
    assert lib.ZSTD_CCtx_getParameter(encoder._cctx, lib.ZSTD_c_blockSplitterLevel, value) == 0
    assert value[0] == 1
    assert lib.ZSTD_CCtx_getParameter(encoder._cctx, lib.ZSTD_c_compressionLevel, value) == 0
    assert value[0] == 3


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=70_000), zeros=st.integers(0, 300_000), level=st.sampled_from([1, 3, 9]),
       view=st.booleans())
def test_a_frame_decodes_to_its_input_and_states_its_size(data, zeros, level, view):
    raw = data + b"\0" * zeros
    encoder = compress.frame_encoder(level)
    frame = encoder(memoryview(bytearray(raw)) if view else raw)
    params = zstandard.get_frame_parameters(frame)
    assert params.content_size == len(raw)
    assert not params.has_checksum
    assert zstandard.ZstdDecompressor().decompress(frame) == raw
    # The encoder is reused (its output buffer too): a second, smaller piece is intact.
    assert zstandard.ZstdDecompressor().decompress(encoder(raw[: len(raw) // 2])) == raw[: len(raw) // 2]


def test_the_zstd_command_reads_the_frames(tmp_path):
    # scripts/bootstrap.sh installs Debian's zstd: an on-call engineer can read a backup without pgops.
    raw = os.urandom(1000) + b"pgops " * 200_000
    path = tmp_path / "piece.zst"
    path.write_bytes(compress.frame_encoder(3)(raw) + compress.frame_encoder(3)(raw[:5000]))
    out = subprocess.run(["zstd", "-d", "-c", str(path)], check=True, capture_output=True).stdout
    assert out == raw + raw[:5000]


def test_without_the_cffi_binding_the_encoder_falls_back_to_zstdcompressor(monkeypatch):
    monkeypatch.setattr(compress, "_libzstd", lambda: None)
    encoder = compress.frame_encoder(3)
    assert not isinstance(encoder, compress._PresplitOffEncoder)
    frame = encoder(b"abc" * 1000)
    assert zstandard.get_frame_parameters(frame).content_size == 3000
    assert zstandard.ZstdDecompressor().decompress(frame) == b"abc" * 1000


def test_a_libzstd_error_code_is_raised_as_zstderror():
    ffi, lib, _ = compress._libzstd()
    with pytest.raises(zstandard.ZstdError, match="ZSTD_compress2: "):
        compress._check(lib, ffi, 2**64 - 1, "ZSTD_compress2")  # (size_t)-1: ZSTD_error_GENERIC
    assert compress._check(lib, ffi, 42, "ZSTD_compress2") == 42


@pytest.mark.parametrize("level", [0, -1, 23, 100, 3.0, True, "3"])
def test_a_level_outside_1_to_22_is_refused_on_both_paths(monkeypatch, level):
    with pytest.raises(ValueError, match="zstd level must be an integer from 1 to 22"):
        compress.frame_encoder(level)
    monkeypatch.setattr(compress, "_libzstd", lambda: None)
    with pytest.raises(ValueError, match="zstd level must be an integer from 1 to 22"):
        compress.frame_encoder(level)


def test_a_libzstd_that_refuses_the_parameter_falls_back_with_a_warning(monkeypatch, caplog):
    ffi, lib, allocate = compress._libzstd()

    class Refusing:
        def __getattr__(self, name):
            return getattr(lib, name)

        @staticmethod
        def ZSTD_CCtx_setParameter(cctx, param, value):
            return 2**64 - 1 if param == lib.ZSTD_c_blockSplitterLevel else lib.ZSTD_CCtx_setParameter(cctx, param, value)

    monkeypatch.setattr(compress, "_libzstd", lambda: (ffi, Refusing(), allocate))
    with caplog.at_level("WARNING", logger="pgops.backup.compress"):
        encoder = compress.frame_encoder(3)
    assert not isinstance(encoder, compress._PresplitOffEncoder)
    assert "cannot switch the block pre-splitter off" in caplog.text
    assert zstandard.ZstdDecompressor().decompress(encoder(b"x" * 5000)) == b"x" * 5000


def test_encoders_on_several_threads_at_once_keep_every_frame_intact():
    pieces = [os.urandom(3000) + bytes([n]) * (1 << 20) for n in range(24)]
    results: dict[int, bytes] = {}
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        encoder = compress.frame_encoder(3)
        buffer = memoryview(bytearray(len(pieces[0])))  # reused for every piece, as frames_into does
        try:
            for n in range(offset, len(pieces), 3):
                buffer[:] = pieces[n]
                results[n] = encoder(buffer)
        except BaseException as exc:  # noqa: BLE001 (re-raised below, in the test's thread)
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    decoder = zstandard.ZstdDecompressor()
    assert [decoder.decompress(results[n]) for n in range(len(pieces))] == pieces
