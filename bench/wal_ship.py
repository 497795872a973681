"""Shipping 1 GiB of WAL (64 segments) to a local repository: pgops vs pgBackRest archive-push.

A PostgreSQL 15 cluster writes WAL with pgbench; 64 complete segments are copied out of
``pg_wal`` into a staging directory. Then, ``--runs`` times each, interleaved:

* pgops:      ``ship_file`` for each segment (zstd level 3 with one encoder for the run,
              sha256 of the raw segment, atomic write + fsync), the work of WAL shipping
              after pg_receivewal;
* pgBackRest: ``pgbackrest archive-push`` for each segment (compress-type=zst,
              compress-level=3), into its posix repository.

Target: pgops >= 100 MB/s. Prints a Markdown table of medians. Needs root.

    .venv/bin/python bench/wal_ship.py --runs 3
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from pgops.backup import wal  # noqa: E402
from pgops.backup.compress import frame_encoder  # noqa: E402
from pgops.backup.walship import ship_file  # noqa: E402
from pgops.postgres.cluster import (  # noqa: E402
    FIXIA_HBA_LINES, FIXIA_SERVER_SETTINGS, LocalCluster, as_server_user, chown_to_server_user, free_port,
)
from pgops.repository.local import LocalRepository  # noqa: E402

SEGMENTS = 64


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    pgbr = shutil.which("pgbackrest")
    if not pgbr:
        subprocess.run(["apt-get", "install", "-y", "-qq", "pgbackrest"], check=True, stdout=subprocess.DEVNULL)
        pgbr = shutil.which("pgbackrest")
    work = Path(tempfile.mkdtemp(prefix="pgops-walbench-"))
    chown_to_server_user(work)
    cluster = LocalCluster(work / "pg", free_port())
    conf = work / "pgbackrest.conf"
    try:
        cluster.initdb()
        cluster.configure({**FIXIA_SERVER_SETTINGS, "wal_keep_size": "3GB", "max_wal_size": "4GB"}, FIXIA_HBA_LINES)
        cluster.start()
        conf.write_text(
            "[global]\n"
            "compress-type=zst\ncompress-level=3\n"
            f"log-path={work}\nlock-path={work / 'lock'}\nlog-level-console=warn\nlog-level-file=off\n"
            "[bench]\n"
            f"pg1-path={cluster.datadir}\npg1-port={cluster.port}\npg1-socket-path={cluster.socket_dir}\n")
        chown_to_server_user(work)
        print("# writing WAL ...", file=sys.stderr, flush=True)
        subprocess.run(as_server_user([str(cluster.bindir / "pgbench"), "-i", "-q", "-s", "100", "-h",
                                       str(cluster.socket_dir), "-p", str(cluster.port), "postgres"]),
                       check=True, capture_output=True)
        subprocess.run(as_server_user([str(cluster.bindir / "psql"), "-h", str(cluster.socket_dir), "-p",
                                       str(cluster.port), "-c", "SELECT pg_switch_wal()", "postgres"]),
                       check=True, capture_output=True)
        segs = sorted(p for p in (cluster.datadir / "pg_wal").iterdir() if wal.is_segment_name(p.name))
        if len(segs) < SEGMENTS + 1:
            raise SystemExit(f"only {len(segs)} segments were written")
        staging = work / "staging"
        staging.mkdir()
        for p in segs[:SEGMENTS]:
            shutil.copy(p, staging / p.name)
        chown_to_server_user(staging)
        files = sorted(staging.iterdir())
        total = sum(p.stat().st_size for p in files)

        times: dict[str, list[float]] = {"pgops": [], "pgbackrest": []}
        for run in range(args.runs):
            repo_dir = work / "pgops-repo"
            shutil.rmtree(repo_dir, ignore_errors=True)
            repo = LocalRepository(repo_dir)
            t = time.perf_counter()
            encode = frame_encoder(3)  # one per run, as ship_wal does
            for p in files:
                ship_file(repo, p, 3, encode)
            times["pgops"].append(time.perf_counter() - t)

            pgbr_repo = work / f"pgbr-repo-{run}"
            pgbr_repo.mkdir()
            chown_to_server_user(pgbr_repo)
            base = [pgbr, f"--config={conf}", f"--repo1-path={pgbr_repo}", "--stanza=bench"]
            subprocess.run(as_server_user([*base, "stanza-create"]), check=True, capture_output=True)
            t = time.perf_counter()
            for p in files:
                subprocess.run(as_server_user([*base, "archive-push", str(p)]), check=True, capture_output=True)
            times["pgbackrest"].append(time.perf_counter() - t)
            print("# " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), file=sys.stderr, flush=True)

        print(f"\n{SEGMENTS} segments, {total / 2**20:.0f} MiB of pgbench WAL, {args.runs} runs (medians)\n")
        print("| tool | median (s) | MB/s | runs (s) |")
        print("|---|---|---|---|")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"| {name} | {med:.2f} | {total / 1e6 / med:.0f} | {' '.join(f'{v:.2f}' for v in values)} |")
        ratio = statistics.median(times["pgbackrest"]) / statistics.median(times["pgops"])
        print(f"\npgops is {ratio:.1f}x the speed of pgBackRest archive-push (target: pgops >= 100 MB/s)")
        return 0
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
