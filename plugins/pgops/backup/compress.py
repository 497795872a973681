"""One-shot zstd compression of a piece of backup data into one standard zstd frame.

python-zstandard 0.25 bundles zstd 1.5.7, whose compressor pre-splits each full 128 KiB
block before compressing it (``ZSTD_c_blockSplitterLevel``, new in 1.5.7, on by
default). On backup data at level 3 that costs 13-16% more CPU than zstd 1.5.4
(Debian's libzstd, the one ``pg_basebackup --compress=client-zstd`` links), and the
frames come out no smaller; with the pre-splitter off, 1.5.7 is within 5% of 1.5.4
(0.97 and 1.05 times its CPU) and its frames are the same size as with it on (best of ten passes over 400 MB of a
pgbench tar stream, two runs: ``bench/zstd_presplit.py``). ``ZstdCompressor`` cannot set
that parameter, but python-zstandard's cffi backend binds libzstd's whole advanced API,
so the encoder goes through it. The frames are ordinary zstd frames (content size in
the header, no checksum, as ``ZstdCompressor(write_content_size=True)`` writes them);
any zstd decoder reads them. Where the cffi backend or the parameter is missing
(another python-zstandard build), :func:`frame_encoder` falls back to
``ZstdCompressor``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

Encoder = Callable[[bytes | bytearray | memoryview], bytes]


@functools.cache
def _libzstd():
    """(ffi, lib) of python-zstandard's cffi binding when it can switch the block
    pre-splitter off; None otherwise."""
    try:
        from zstandard.backend_cffi import ffi, lib
    except ImportError:  # built without its cffi backend, or cffi missing
        return None
    if not hasattr(lib, "ZSTD_c_blockSplitterLevel"):
        return None
    return ffi, lib


def _check(lib, ffi, code: int, what: str) -> int:
    if lib.ZSTD_isError(code):
        import zstandard

        raise zstandard.ZstdError(f"{what}: {ffi.string(lib.ZSTD_getErrorName(code)).decode()}")
    return code


class _PresplitOffEncoder:
    """A libzstd compression context at ``level`` with the block pre-splitter off.
    Not thread-safe: one per thread."""

    def __init__(self, level: int, ffi, lib) -> None:
        self._ffi, self._lib = ffi, lib
        cctx = lib.ZSTD_createCCtx()
        if cctx == ffi.NULL:
            raise MemoryError("ZSTD_createCCtx failed")
        self._cctx = ffi.gc(cctx, lib.ZSTD_freeCCtx)
        for param, value in ((lib.ZSTD_c_compressionLevel, level), (lib.ZSTD_c_contentSizeFlag, 1),
                             (lib.ZSTD_c_checksumFlag, 0), (lib.ZSTD_c_blockSplitterLevel, 1)):
            _check(lib, ffi, lib.ZSTD_CCtx_setParameter(self._cctx, param, value), "ZSTD_CCtx_setParameter")
        self._dst = ffi.new("char[]", 0)
        self._capacity = 0

    def __call__(self, data: bytes | bytearray | memoryview) -> bytes:
        ffi, lib = self._ffi, self._lib
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        bound = lib.ZSTD_compressBound(size)
        if bound > self._capacity:  # the output buffer is kept: pieces are all the same size
            self._dst, self._capacity = ffi.new("char[]", bound), bound
        # cffi releases the GIL for the call: encoders on several threads run in parallel.
        written = _check(lib, ffi, lib.ZSTD_compress2(self._cctx, self._dst, self._capacity,
                                                      ffi.from_buffer(data), size), "ZSTD_compress2")
        return ffi.buffer(self._dst, written)[:]


def frame_encoder(level: int) -> Encoder:
    """A new function that compresses one piece into one zstd frame at ``level``; use it
    from one thread only."""
    binding = _libzstd()
    if binding is not None:
        return _PresplitOffEncoder(level, *binding)
    import zstandard

    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress


_thread = threading.local()


def thread_encoder(level: int) -> Encoder:
    """The calling thread's encoder at ``level``, made on first use and kept (a
    compression context holds a few MiB of tables: one per thread and level, reused)."""
    encoders = _thread.__dict__.setdefault("encoders", {})
    if level not in encoders:
        encoders[level] = frame_encoder(level)
    return encoders[level]
