"""Full backup to a local repository: pgops vs the pg_basebackup floor vs pgBackRest.

On one PostgreSQL 15 cluster loaded with ``pgbench -i -s SCALE`` (scale 100 is about
1.5 GB), in one run, interleaved, ``--runs`` times each, warm cache:

* floor:     pg_basebackup -D - -Ft -Xfetch -c fast --compress=client-zstd:level=3,workers=2 > file
* pgops:     ``run_full_backup`` into a local repository (zstd level 3, 2 workers),
             in its own process (with Airflow already imported, as in a worker: the
             timing covers the backup, not interpreter start-up), whose peak RSS is
             reported
* pgBackRest 2.45 (Debian package): full backup to a posix repository with
  compress-type=zst, compress-level=3, process-max=2, start-fast=y (WAL archived by
  pgBackRest's own archive-push, as it requires)

Prints a Markdown table of medians and the ratios pgops/floor (target <= 1.15) and
pgops/pgBackRest. Rounds drift on a shared machine, so it also prints the median of the
per-round ratios pgops/floor (each pgops backup against the floor run just before it).
Needs root (PostgreSQL runs as the postgres OS user); installs Debian's pgbackrest if
missing. Everything lives under --workdir and is removed after.

    .venv/bin/python bench/full_backup.py --scale 100 --runs 5
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

from benchdb import (CHILD_PRELUDE, ROOT, floor_argv, median_table, pgbackrest_archive_settings, pgbackrest_stanza,
                     pgbench_cluster)

from pgops.postgres.cluster import as_server_user

CHILD = CHILD_PRELUDE + r"""
from pgops.repository.local import LocalRepository
config = parse_config({"repository": {"url": sys.argv[2]}, "backup": {"compression_level": 3, "compression_workers": 2}})
t = time.perf_counter()
record = run_full_backup(config, LocalRepository(config.repository.local_path()))
print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_kib": hwm_kib(),
                  "raw": record.raw_size, "stored": record.stored_size}))
"""


def sh(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def ensure_pgbackrest() -> str:
    path = shutil.which("pgbackrest")
    if path:
        return path
    sh(["apt-get", "install", "-y", "-qq", "pgbackrest"], stdout=subprocess.DEVNULL)
    return shutil.which("pgbackrest")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--skip-pgbackrest", action="store_true")
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pgops-bench-"))
    pgbr = None if args.skip_pgbackrest else ensure_pgbackrest()
    pgbr_conf = work / "pgbackrest.conf"
    settings = {}
    if pgbr:
        settings = pgbackrest_archive_settings(pgbr, pgbr_conf)
    try:
        with pgbench_cluster(work, args.scale, settings) as (cluster, password, size):
            if pgbr:
                pgbackrest_stanza(pgbr, pgbr_conf, work, cluster)
            return run_rounds(args, work, cluster, password, size, pgbr, pgbr_conf)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_rounds(args, work, cluster, password, size, pgbr, pgbr_conf) -> int:
    env = {**os.environ, "PGPASSWORD": password}
    results: dict[str, list[float]] = {"floor": [], "pgops": []}
    if pgbr:
        results["pgbackrest"] = []
    rss: list[int] = []
    sizes = {}
    for i in range(args.runs + 1):  # the first round warms the cache and is not counted
        out = work / "floor.tar.zst"
        t = time.perf_counter()
        with open(out, "wb") as fh:
            sh(floor_argv(cluster), stdout=fh, env=env)
        floor_s = time.perf_counter() - t
        sizes["floor"] = out.stat().st_size
        out.unlink()

        repo = work / "pgops-repo"
        shutil.rmtree(repo, ignore_errors=True)
        proc = sh([sys.executable, "-c", CHILD, str(ROOT / "plugins"), str(repo)], capture_output=True, text=True,
                  env={**os.environ, "PGOPS_HOME": str(ROOT)})
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        sizes["pgops"] = child["stored"]

        if pgbr:
            t = time.perf_counter()
            sh(as_server_user([pgbr, f"--config={pgbr_conf}", "--stanza=bench", "--type=full", "backup"]))
            pgbr_s = time.perf_counter() - t
        if i == 0:
            continue
        results["floor"].append(floor_s)
        results["pgops"].append(child["seconds"])
        rss.append(child["maxrss_kib"])
        if pgbr:
            results["pgbackrest"].append(pgbr_s)
        print(f"# run {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items()), file=sys.stderr, flush=True)

    print(f"\npgbench scale {args.scale}, databases {size}, {args.runs} runs (medians), warm cache\n")
    med = median_table(results, sizes)
    paired = statistics.median(p / f for p, f in zip(results["pgops"], results["floor"], strict=True))
    print(f"\npgops / floor = {med['pgops'] / med['floor']:.2f} (target <= 1.15); "
          f"median of the per-round ratios {paired:.2f}")
    if pgbr:
        print(f"pgops / pgBackRest = {med['pgops'] / med['pgbackrest']:.2f}")
    print(f"pgops peak RSS: median {statistics.median(rss) / 1024:.0f} MiB, max {max(rss) / 1024:.0f} MiB (target <= 256)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
