"""One-shot zstd compression of a piece of backup data into one standard zstd frame.

python-zstandard 0.25 bundles zstd 1.5.7, whose compressor pre-splits each full 128 KiB
block before compressing it (``ZSTD_c_blockSplitterLevel``, new in 1.5.7, on by
default). On backup data at level 3 that costs 13-16% more CPU than zstd 1.5.4
(Debian's libzstd, the one ``pg_basebackup --compress=client-zstd`` links), and the
frames come out no smaller; with the pre-splitter off, 1.5.7 is within 5% of 1.5.4
(0.97 and 1.05 times its CPU) and its frames are 0.02% larger than with it on (best of
ten passes over 400 MB of a pgbench tar stream, two runs: ``bench/zstd_presplit.py``).
``ZstdCompressor`` cannot set that parameter, but python-zstandard's cffi backend binds
libzstd's whole advanced API, so the encoder goes through it. The frames are ordinary
zstd frames (content size in the header, no checksum, as
``ZstdCompressor(write_content_size=True)`` writes them); any zstd decoder reads them.
Where the cffi backend or the parameter is missing (another python-zstandard build),
:func:`frame_encoder` falls back to ``ZstdCompressor``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

Encoder = Callable[[bytes | bytearray | memoryview], bytes]

MIN_LEVEL, MAX_LEVEL = 1, 22  # the levels pgops compresses at (config: backup.compression_level)


@functools.cache
def _libzstd():
    """(ffi, lib, allocator) of python-zstandard's cffi binding when it can switch the
    block pre-splitter off; None otherwise. The allocator leaves new buffers
    uninitialised: the output buffer is written by zstd before it is read."""
    try:
        from zstandard.backend_cffi import ffi, lib
    except ImportError:  # built without its cffi backend, or cffi missing
        return None
    if not hasattr(lib, "ZSTD_c_blockSplitterLevel"):
        return None
    return ffi, lib, ffi.new_allocator(should_clear_after_alloc=False)


def _check(lib, ffi, code: int, what: str) -> int:
    if lib.ZSTD_isError(code):
        import zstandard

        raise zstandard.ZstdError(f"{what}: {ffi.string(lib.ZSTD_getErrorName(code)).decode()}")
    return code


class _PresplitOffEncoder:
    """A libzstd compression context at ``level`` with the block pre-splitter off, and
    its output buffer, both kept for the next piece (a context at level 3 holds about
    1 MiB of tables, at level 19 to 22 up to hundreds). Not thread-safe: one per
    thread; freed when the encoder is."""

    def __init__(self, level: int, ffi, lib, allocate) -> None:
        self._ffi, self._lib, self._allocate = ffi, lib, allocate
        cctx = lib.ZSTD_createCCtx()
        if cctx == ffi.NULL:
            raise MemoryError("ZSTD_createCCtx failed")
        self._cctx = ffi.gc(cctx, lib.ZSTD_freeCCtx)
        for param, value in ((lib.ZSTD_c_compressionLevel, level), (lib.ZSTD_c_contentSizeFlag, 1),
                             (lib.ZSTD_c_checksumFlag, 0), (lib.ZSTD_c_blockSplitterLevel, 1)):
            _check(lib, ffi, lib.ZSTD_CCtx_setParameter(self._cctx, param, value), "ZSTD_CCtx_setParameter")
        self._dst = allocate("char[]", 0)
        self._capacity = 0

    def __call__(self, data: bytes | bytearray | memoryview) -> bytes:
        ffi, lib = self._ffi, self._lib
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        bound = lib.ZSTD_compressBound(size)
        if bound > self._capacity:  # the output buffer is kept: pieces are all the same size
            self._dst, self._capacity = self._allocate("char[]", bound), bound
        # cffi releases the GIL for the call: encoders on several threads run in parallel.
        written = _check(lib, ffi, lib.ZSTD_compress2(self._cctx, self._dst, self._capacity,
                                                      ffi.from_buffer(data), size), "ZSTD_compress2")
        return ffi.buffer(self._dst, written)[:]  # a copy: the output buffer is reused


def frame_encoder(level: int) -> Encoder:
    """A new function that compresses one piece into one zstd frame at ``level`` (1 to
    22, else ValueError); use it from one thread only, and keep it for the next piece."""
    if isinstance(level, bool) or not isinstance(level, int) or not MIN_LEVEL <= level <= MAX_LEVEL:
        raise ValueError(f"zstd level must be an integer from {MIN_LEVEL} to {MAX_LEVEL}, not {level!r}")
    import zstandard

    binding = _libzstd()
    if binding is not None:
        try:
            return _PresplitOffEncoder(level, *binding)
        except zstandard.ZstdError as exc:  # a libzstd that refuses the parameter: same frames, more CPU
            log.warning("zstd: cannot switch the block pre-splitter off (%s); using ZstdCompressor", exc)
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress
