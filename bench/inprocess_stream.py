"""What the pipe from pg_basebackup costs: an experiment, not a pgops code path.

pgops runs ``pg_basebackup -D - -Ft -Xfetch`` and compresses its stdout (the raw tar
stream, 1.5 GB at scale 100) into indexed zstd frames. The floor's pg_basebackup
compresses inside its own process and writes 70 MB. So pgops pays for moving every raw
byte through a pipe: pg_basebackup's write, pgops' read, and the wake-ups on both ends.
This script measures that cost. It feeds the same pgops pipeline from BASE_BACKUP, read
in-process through libpq (psycopg's ``pgconn``), with no pg_basebackup and no pipe. It
issues the same replication command and stores the same tar, with ``backup_manifest``
appended as pg_basebackup appends it.

In one run, interleaved, ``--runs`` times each, warm cache:

* floor:            pg_basebackup -D - -Ft -Xfetch -c fast --compress=client-zstd:level=3,workers=2 > file
* pgops:            ``run_full_backup`` as shipped (pg_basebackup into a pipe)
* pgops-inprocess:  ``run_full_backup`` with pg_basebackup replaced by the libpq reader

Both pgops variants run as ``bench/full_backup.py`` runs them (own process, Airflow
imported, the backup timed). Prints the medians and, because rounds drift on a shared
machine, the median of the per-round ratios too.

    .venv/bin/python bench/inprocess_stream.py --scale 100 --runs 6

pgops does not use the in-process reader. The issue and the style guide ask for
pg_basebackup as an external tool. This script only puts a number on what that costs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdb import CHILD_PRELUDE, ROOT, floor_argv, median_table, pgbench_cluster

CHILD = CHILD_PRELUDE + r"""
import collections, io, tarfile, types
from pgops.backup import basebackup
from pgops.connections import get_connection
from pgops.postgres.session import libpq_params
from pgops.repository.local import LocalRepository


class BaseBackupStream:
    '''BASE_BACKUP's archive read through libpq, as one tar stream with backup_manifest
    appended (what pg_basebackup -Ft -D - writes); readinto() like a pipe's stdout.'''

    def __init__(self, params):
        import psycopg
        from psycopg import pq
        self.status = pq.ExecStatus
        self.conn = psycopg.connect(**params, replication="true", autocommit=True)
        self.pg = self.conn.pgconn
        self.pg.send_query(b"BASE_BACKUP (LABEL 'pgops bench', CHECKPOINT 'fast', WAL true, MANIFEST 'yes', WAIT true)")
        self.parts = collections.deque()
        self.held = b""  # the archive's last 1024 bytes: its end-of-archive blocks, dropped before the manifest
        self.manifest = []
        self.in_copy = self.in_manifest = self.ended = False

    def _chunk(self):
        '''The next piece of archive data; the closing piece (manifest member and
        end-of-archive blocks) at the end of the copy; None after the command's end.'''
        while True:
            if not self.in_copy:
                res = self.pg.get_result()
                if res is None:
                    return None
                if res.status == self.status.COPY_OUT:
                    self.in_copy = True
                elif res.status == self.status.FATAL_ERROR:
                    raise RuntimeError(res.error_message.decode())
                continue
            size, data = self.pg.get_copy_data(0)
            if size < 0:
                self.in_copy = False
                if not self.in_manifest or self.held != bytes(1024):
                    raise RuntimeError("BASE_BACKUP ended without a terminated archive and a manifest")
                manifest = b"".join(self.manifest)
                info = tarfile.TarInfo("backup_manifest")
                info.size, info.mtime, info.mode = len(manifest), int(time.time()), 0o600
                self.held = b""
                return memoryview(info.tobuf(format=tarfile.USTAR_FORMAT) + manifest
                                  + bytes(-len(manifest) % 512) + bytes(1024))
            kind = data[0]
            if kind == 0x6D:  # 'm': the manifest follows
                self.in_manifest = True
            elif kind == 0x64 and self.in_manifest:  # 'd' of the manifest
                self.manifest.append(data[1:])
            elif kind == 0x64:  # 'd' of the archive
                return memoryview(data)[1:]
            # 'n' (new archive) and 'p' (progress) carry nothing to store

    def readinto(self, buffer):
        while True:
            if self.parts:
                part = self.parts[0]
                n = min(len(buffer), len(part))
                buffer[:n] = part[:n]
                if n == len(part):
                    self.parts.popleft()
                else:
                    self.parts[0] = part[n:]
                return n
            if self.ended:
                return 0
            chunk = self._chunk()
            if chunk is None:
                self.ended = True
            elif self.in_manifest:
                self.parts.append(chunk)
            else:
                if len(chunk) < 1024:
                    chunk = memoryview(self.held + bytes(chunk))
                elif self.held:
                    self.parts.append(memoryview(self.held))
                if len(chunk) > 1024:
                    self.parts.append(chunk[:-1024])
                self.held = bytes(chunk[-1024:])


class InProcess:
    '''Stands in for the pg_basebackup Popen object.'''

    def __init__(self, *args, **kwargs):
        self.stdout = BaseBackupStream(libpq_params(get_connection("pgops_backup")))
        self.stderr = io.BytesIO()

    def poll(self):
        return 0

    def wait(self):
        return 0

    def send_signal(self, signum):
        self.stdout.conn.close()


if sys.argv[3] == "inprocess":
    basebackup.subprocess = types.SimpleNamespace(Popen=InProcess, PIPE=-1, DEVNULL=-3)
    basebackup.enlarge_pipe = lambda fileobj: None
config = parse_config({"repository": {"url": sys.argv[2]}, "backup": {"compression_level": 3, "compression_workers": 2}})
t = time.perf_counter()
record = run_full_backup(config, LocalRepository(config.repository.local_path()))
print(json.dumps({"seconds": time.perf_counter() - t, "stored": record.stored_size, "raw": record.raw_size}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="pgops-bench-"))
    try:
        with pgbench_cluster(work, args.scale) as (cluster, password, size):
            return run_rounds(args, work, cluster, password, size)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_rounds(args, work: Path, cluster, password: str, size: str) -> int:
    env = {**os.environ, "PGPASSWORD": password}
    results: dict[str, list[float]] = {"floor": [], "pgops": [], "pgops-inprocess": []}
    sizes: dict[str, int] = {}
    raw: dict[str, int] = {}
    for i in range(args.runs + 1):  # the first round warms the cache and is not counted
        out = work / "floor.tar.zst"
        t = time.perf_counter()
        with open(out, "wb") as fh:
            subprocess.run(floor_argv(cluster), stdout=fh, env=env, check=True)
        timed = {"floor": time.perf_counter() - t}
        sizes["floor"] = out.stat().st_size
        out.unlink()
        for name, mode in (("pgops", "pipe"), ("pgops-inprocess", "inprocess")):
            repo = work / "pgops-repo"
            shutil.rmtree(repo, ignore_errors=True)
            proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "plugins"), str(repo), mode],
                                  capture_output=True, text=True, env={**os.environ, "PGOPS_HOME": str(ROOT)},
                                  check=True)
            child = json.loads(proc.stdout.strip().splitlines()[-1])
            timed[name], sizes[name], raw[name] = child["seconds"], child["stored"], child["raw"]
        if i == 0:
            continue
        for name, seconds in timed.items():
            results[name].append(seconds)
        print(f"# run {i}: " + ", ".join(f"{k} {v:.2f}s" for k, v in timed.items()), file=sys.stderr, flush=True)
    print(f"\npgbench scale {args.scale}, databases {size}, {args.runs} runs (medians), warm cache\n")
    med = median_table(results, sizes)
    print(f"\nraw tar bytes stored: pgops {raw['pgops']}, pgops-inprocess {raw['pgops-inprocess']}")
    for name in ("pgops", "pgops-inprocess"):
        paired = statistics.median(v / f for v, f in zip(results[name], results["floor"], strict=True))
        print(f"{name} / floor = {med[name] / med['floor']:.2f} (medians), {paired:.2f} (median of per-round ratios)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
