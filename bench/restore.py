"""Restore from the local repository to a started, consistent server: pgops vs pgBackRest.

One PostgreSQL 15 cluster loaded with ``pgbench -i -s SCALE`` (scale 100 is about
1.5 GB) is backed up once by pgops (local repository, zstd level 3) and once by
pgBackRest 2.45 (posix repository, zst level 3, process-max 2). Then, ``--runs`` times,
interleaved, warm cache, each into a new directory:

* pgops:      ``run_restore(..., start=True)`` of that backup to its consistent point
              (``--backup-id``: recovery_target = immediate), in its own process with
              Airflow already imported; timings per phase, peak RSS (VmHWM) reported.
              pg_verifybackup runs too; its time is reported apart and left out of the
              compared total, since pgBackRest has no such step.
* pgBackRest: ``pgbackrest restore --type=immediate --target-action=promote`` with
              process-max 2, then the same start-and-wait for the end of recovery.
* reference:  ``zstd -dc data.tar.zst | tar -x`` of the pgops object (one sequential
              stream, no start).

Target: pgops no slower than pgBackRest; peak RSS <= 256 MiB. Needs root; installs
Debian's pgbackrest if missing; everything lives under --workdir and is removed after.

Also reported: the CPU time of each tool's file restore (pgops' restore process, all its
threads; the ``pgbackrest restore`` command and its workers; neither counts the server's
recovery), which says how much a busy machine slows each, and the part of pgops' wall
time spent creating files (on a journal-less ext4 it grows with the number of files
deleted in the last minutes, and each tool here starts right after the previous tool's
target was deleted).

    .venv/bin/python bench/restore.py --scale 100 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchdb import (CHILD_PRELUDE, ROOT, median_table, pgbackrest_archive_settings, pgbackrest_stanza,
                     pgbench_cluster)
from full_backup import ensure_pgbackrest, sh

from pgops.backup.basebackup import run_full_backup
from pgops.config import parse_config
from pgops.postgres.cluster import as_server_user, find_bindir, free_port
from pgops.repository.local import LocalRepository
from pgops.restore.run import start_and_wait

CHILD = CHILD_PRELUDE + r"""
from pgops.repository.local import LocalRepository
from pgops.restore.plan import RestoreRequest
from pgops.restore.run import run_restore
import resource
config = parse_config({"repository": {"url": sys.argv[2]}})
t, usage = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
result = run_restore(config, LocalRepository(config.repository.local_path()), RestoreRequest(backup_id=sys.argv[4]),
                     __import__("pathlib").Path(sys.argv[3]), start=True)
end = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - t, "maxrss_kib": hwm_kib(), "timings": result.timings_s,
                  "port": result.port, "create_files_s": result.create_files_s,
                  "cpu_s": end.ru_utime + end.ru_stime - usage.ru_utime - usage.ru_stime}))
"""


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def stop(datadir: Path) -> None:
    subprocess.run(as_server_user([str(find_bindir() / "pg_ctl"), "stop", "-D", str(datadir), "-m", "immediate",
                                   "-w"]), capture_output=True, check=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="pgops-bench-restore-"))
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)
    pgbr = ensure_pgbackrest()
    pgbr_conf = work / "pgbackrest.conf"
    settings = pgbackrest_archive_settings(pgbr, pgbr_conf)
    try:
        with pgbench_cluster(work, args.scale, settings) as (cluster, _password, size):
            pgbackrest_stanza(pgbr, pgbr_conf, work, cluster)
            sh(as_server_user([pgbr, f"--config={pgbr_conf}", "--stanza=bench", "--type=full", "backup"]))
            config = parse_config({"repository": {"url": str(work / "pgops-repo")}})
            record = run_full_backup(config, LocalRepository(work / "pgops-repo"))
            (work / "pgops-repo").chmod(0o755)
            return run_rounds(args, work, size, pgbr, pgbr_conf, record)
    finally:
        for child in work.glob("restore-*"):
            stop(child)
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def run_rounds(args, work: Path, size: str, pgbr: str, pgbr_conf: Path, record) -> int:
    results: dict[str, list[float]] = {"pgops": [], "pgbackrest": [], "zstd | tar": []}
    phases: dict[str, list[float]] = {}
    rss: list[int] = []
    cpu: dict[str, list[float]] = {"pgops": [], "pgbackrest": []}
    creating: list[float] = []
    data = work / "pgops-repo" / record.objects["data"].key
    for i in range(args.runs + 1):  # the first round warms the cache and is not counted
        target = work / f"restore-pgops-{i}"
        proc = sh([sys.executable, "-c", CHILD, str(ROOT / "plugins"), str(work / "pgops-repo"), str(target),
                   record.id], capture_output=True, text=True, env={**os.environ, "PGOPS_HOME": str(ROOT)})
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        stop(target)
        shutil.rmtree(target)
        pgops_s = child["seconds"] - child["timings"].get("verifybackup", 0)

        target = work / f"restore-pgbr-{i}"
        t, children_cpu = time.perf_counter(), children_cpu_s()
        sh(as_server_user([pgbr, f"--config={pgbr_conf}", "--stanza=bench", f"--pg1-path={target}",
                           "--type=immediate", "--target-action=promote", "restore"]))
        pgbr_cpu_s = children_cpu_s() - children_cpu
        with open(target / "postgresql.auto.conf", "a") as conf:
            conf.write(f"port = {free_port()}\nunix_socket_directories = '{target}'\narchive_mode = off\n")
        start_and_wait(find_bindir(), target, work / f"pgbr-{i}.log", timeout_s=600)
        pgbr_s = time.perf_counter() - t
        stop(target)
        shutil.rmtree(target)

        target = work / f"restore-tar-{i}"
        target.mkdir()
        t = time.perf_counter()
        sh(["bash", "-c", f"zstd -q -dc '{data}' | tar -x -C '{target}'"])
        tar_s = time.perf_counter() - t
        shutil.rmtree(target)
        if i == 0:
            continue
        results["pgops"].append(pgops_s)
        results["pgbackrest"].append(pgbr_s)
        results["zstd | tar"].append(tar_s)
        rss.append(child["maxrss_kib"])
        cpu["pgops"].append(child["cpu_s"])
        cpu["pgbackrest"].append(pgbr_cpu_s)
        creating.append(child["create_files_s"])
        for key, value in child["timings"].items():
            phases.setdefault(key, []).append(value)
        print(f"# run {i}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in results.items())
              + f"; pgops phases {child['timings']}", file=sys.stderr, flush=True)

    print(f"\npgbench scale {args.scale}, databases {size}, backup {record.raw_size / 2**20:.0f} MiB raw, "
          f"{args.runs} runs (medians), warm cache; to a started server at the backup's consistent point\n")
    med = median_table(results)
    print("\npgops phases (medians, s): " + ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in phases.items()))
    print(f"pgops / pgBackRest = {med['pgops'] / med['pgbackrest']:.2f} (target <= 1.00; pg_verifybackup "
          f"{statistics.median(phases.get('verifybackup', [0])):.2f} s reported apart)")
    print(f"CPU of the file restore (medians, s): pgops {statistics.median(cpu['pgops']):.2f}, pgBackRest "
          f"{statistics.median(cpu['pgbackrest']):.2f}; pgops spent {statistics.median(creating):.2f} s creating files "
          f"(rounds: {' '.join(f'{v:.2f}' for v in creating)})")
    print(f"pgops peak RSS: median {statistics.median(rss) / 1024:.0f} MiB, max {max(rss) / 1024:.0f} MiB "
          "(target <= 256)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
