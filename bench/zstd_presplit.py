"""CPU cost of zstd level 3 on a backup stream: Debian's libzstd against python-zstandard.

The tar stream of a pgbench database (``pg_basebackup -D - -Ft``) is cut into 4 MiB
pieces, as pgops frames it, and each piece is compressed into one frame by:

* ``debian``: Debian's libzstd (the library ``pg_basebackup --compress=client-zstd``
  uses, the floor of the full-backup benchmark), called through ctypes;
* ``ZstdCompressor``: python-zstandard's C extension at its defaults (its bundled zstd
  pre-splits blocks);
* ``pgops``: :func:`pgops.backup.compress.frame_encoder`, the same bundled zstd with the
  block pre-splitter off.

Prints the best CPU time of ``--rounds`` interleaved passes of each (the machine is
shared: the best pass is the least disturbed) and the stored bytes. Needs root (the
database runs as the postgres OS user).

    .venv/bin/python bench/zstd_presplit.py --scale 25 --rounds 10
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdb import pgbench_cluster

from pgops.backup.compress import frame_encoder

PIECE = 4 * 1024 * 1024


def debian_libzstd(level: int):
    name = ctypes.util.find_library("zstd")
    if not name:
        raise SystemExit("Debian's libzstd1 is not installed")
    lib = ctypes.CDLL(name)
    lib.ZSTD_versionString.restype = ctypes.c_char_p
    lib.ZSTD_createCCtx.restype = ctypes.c_void_p
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compressCCtx.restype = ctypes.c_size_t
    lib.ZSTD_compressCCtx.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                      ctypes.c_size_t, ctypes.c_int]
    cctx = lib.ZSTD_createCCtx()
    out = ctypes.create_string_buffer(lib.ZSTD_compressBound(PIECE))

    def encode(piece: bytes) -> int:
        return lib.ZSTD_compressCCtx(cctx, out, len(out), piece, len(piece), level)

    return lib.ZSTD_versionString().decode(), encode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=int, default=25, help="pgbench scale of the database (25: about 400 MB)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--level", type=int, default=3)
    args = parser.parse_args()
    import zstandard

    with tempfile.TemporaryDirectory(prefix="pgops-bench-zstd-") as tmp, \
            pgbench_cluster(Path(tmp), args.scale) as (cluster, password, size):
        stream = subprocess.run(
            [str(cluster.bindir / "pg_basebackup"), "-d",
             f"host=127.0.0.1 port={cluster.port} user=pgops_backup", "-D", "-", "-Ft", "-Xfetch", "-c", "fast",
             "--no-password"], check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password}).stdout
    pieces = [stream[i:i + PIECE] for i in range(0, len(stream), PIECE)]
    version, debian = debian_libzstd(args.level)
    zc = zstandard.ZstdCompressor(level=args.level, write_content_size=True)
    ours = frame_encoder(args.level)
    encoders = {
        f"debian libzstd {version}": debian,
        f"ZstdCompressor (zstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})": lambda p: len(zc.compress(p)),
        "pgops frame_encoder (pre-splitter off)": lambda p: len(ours(p)),
    }
    best = {name: float("inf") for name in encoders}
    stored = {}
    for _ in range(args.rounds):
        for name, encode in encoders.items():
            t = time.process_time()
            stored[name] = sum(encode(p) for p in pieces)
            best[name] = min(best[name], time.process_time() - t)
    base = next(iter(best.values()))
    print(f"\npgbench scale {args.scale} ({size}), tar stream {len(stream) / 1e6:.0f} MB in {len(pieces)} "
          f"pieces of 4 MiB, zstd level {args.level}, best of {args.rounds} passes\n")
    print("| encoder | CPU (s) | vs Debian | stored (bytes) |")
    print("|---|---|---|---|")
    for name in encoders:
        print(f"| {name} | {best[name]:.3f} | {best[name] / base:.2f} | {stored[name]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
