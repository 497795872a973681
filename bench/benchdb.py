"""Shared by the backup benchmarks: a PostgreSQL 15 cluster loaded by pgbench, with the
pgops backup role, started and destroyed around a benchmark."""

from __future__ import annotations

import json
import os
import secrets
import statistics
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "plugins"))

from pgops.config import parse_config  # noqa: E402
from pgops.devstack import seed  # noqa: E402
from pgops.postgres.cluster import (  # noqa: E402
    FIXIA_HBA_LINES, FIXIA_SERVER_SETTINGS, LocalCluster, as_server_user, chown_to_server_user, free_port,
)
from pgops.postgres.session import connect_params  # noqa: E402


# Prelude of the measured child processes: Airflow loaded first, as in a worker (the
# timing covers the backup, not interpreter start-up), and the process's own peak RSS.
# (VmHWM, not ru_maxrss, which also counts the parent's memory inherited at fork.)
CHILD_PRELUDE = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from airflow.sdk import BaseHook
BaseHook.get_connection("pgops_backup")
from pgops.backup.basebackup import run_full_backup
from pgops.config import parse_config
def hwm_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
"""


def floor_argv(cluster: LocalCluster) -> list[str]:
    """The issue's floor: ``pg_basebackup -D - -Ft -Xfetch -c fast
    --compress=client-zstd:level=3,workers=2`` as the backup role (PGPASSWORD in the env)."""
    return [str(cluster.bindir / "pg_basebackup"), "-d", f"host=127.0.0.1 port={cluster.port} user=pgops_backup",
            "-D", "-", "-Ft", "-Xfetch", "-c", "fast", "--compress=client-zstd:level=3,workers=2", "--no-password"]


@contextmanager
def pgbench_cluster(work: Path, scale: int, extra_settings: dict | None = None):
    """Yield (cluster, backup role password, human-readable database size)."""
    work.mkdir(parents=True, exist_ok=True)
    chown_to_server_user(work)
    cluster = LocalCluster(work / "pg", free_port())
    try:
        cluster.initdb()
        cluster.configure({**FIXIA_SERVER_SETTINGS, **(extra_settings or {})},
                          FIXIA_HBA_LINES + ["local replication all trust"])
        cluster.start()
        print(f"# loading pgbench scale {scale} ...", file=sys.stderr, flush=True)
        subprocess.run(as_server_user([str(cluster.bindir / "pgbench"), "-i", "-q", "-s", str(scale), "-h",
                                       str(cluster.socket_dir), "-p", str(cluster.port), "postgres"]),
                       check=True, capture_output=True)
        password = secrets.token_urlsafe(16)
        with connect_params(cluster.superuser_params(), application_name="bench", statement_timeout_s=600) as conn:
            seed.create_database(conn, "fixia")
            size = conn.execute("SELECT pg_size_pretty(sum(pg_database_size(datname))) FROM pg_database").fetchone()[0]
        with connect_params(cluster.superuser_params("fixia"), application_name="bench", statement_timeout_s=600) as conn:
            seed.apply_schema(conn)  # empty Fixia tables: the sentinel counts them, as in production
        seed.install_pgops(cluster.superuser_params("fixia"), parse_config({"setup": {"lines": ["core", "fixia"]}}),
                           {"pgops_backup": password})
        os.environ["AIRFLOW_CONN_PGOPS_BACKUP"] = json.dumps({
            "conn_type": "postgres", "host": "127.0.0.1", "port": cluster.port, "login": "pgops_backup",
            "password": password, "schema": "fixia"})
        yield cluster, password, size
    finally:
        cluster.destroy()


def pgbackrest_archive_settings(pgbr: str, conf: Path) -> dict:
    """Server settings that archive WAL with pgBackRest (its backups require it)."""
    return {"archive_mode": True, "archive_command": f"{pgbr} --config={conf} --stanza=bench archive-push %p"}


def pgbackrest_stanza(pgbr: str, conf: Path, work: Path, cluster: LocalCluster) -> None:
    """Write pgBackRest's configuration (posix repository, zst level 3, process-max 2,
    start-fast) for ``cluster`` and create the stanza."""
    for name in ("pgbr-repo", "pgbr-log", "pgbr-lock"):
        (work / name).mkdir(exist_ok=True)
    conf.write_text(
        "[global]\n"
        f"repo1-path={work / 'pgbr-repo'}\nrepo1-retention-full=1000\n"
        "compress-type=zst\ncompress-level=3\nprocess-max=2\nstart-fast=y\n"
        f"log-path={work / 'pgbr-log'}\nlock-path={work / 'pgbr-lock'}\nlog-level-console=warn\n"
        "[bench]\n"
        f"pg1-path={cluster.datadir}\npg1-port={cluster.port}\npg1-socket-path={cluster.socket_dir}\n")
    chown_to_server_user(work)
    subprocess.run(as_server_user([pgbr, f"--config={conf}", "--stanza=bench", "stanza-create"]), check=True)


def median_table(results: dict[str, list[float]], stored_bytes: dict[str, int] | None = None) -> dict[str, float]:
    """Print the Markdown table of each tool's median and rounds (with a stored-size
    column when ``stored_bytes`` is given); return the medians."""
    med = {k: statistics.median(v) for k, v in results.items()}
    stored = " stored (MiB) |" if stored_bytes is not None else ""
    print(f"| tool | median (s) | runs (s) |{stored}")
    print("|---|---|---|" + ("---|" if stored_bytes is not None else ""))
    for name, values in results.items():
        cell = ""
        if stored_bytes is not None:
            cell = f" {stored_bytes[name] / 2**20:.0f} |" if name in stored_bytes else " - |"
        print(f"| {name.replace('|', chr(92) + '|')} | {med[name]:.2f} | {' '.join(f'{v:.2f}' for v in values)} |{cell}")
    return med
