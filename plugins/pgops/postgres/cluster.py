"""A PostgreSQL cluster in a local directory, run as the ``postgres`` OS user.

Used by the local stack (``var/pg``), by the integration-test fixtures (temporary
directories, free ports) and later by restore verification (a scratch server).
PostgreSQL refuses to run as root, so when pgops runs as root every server command is
wrapped in ``runuser -u postgres --`` and the directories are handed to that user.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pgops.errors import ConfigError, TransientError

log = logging.getLogger(__name__)

SERVER_USER = "postgres"


def find_bindir(major: int = 15) -> Path:
    """Directory of the PostgreSQL ``major`` server binaries (Debian layout first)."""
    candidates = [Path(f"/usr/lib/postgresql/{major}/bin")]
    env = os.environ.get("PGOPS_PG_BINDIR")
    if env:
        candidates.insert(0, Path(env))
    for cand in candidates:
        if (cand / "pg_ctl").exists():
            return cand
    raise ConfigError(
        f"PostgreSQL {major} server binaries not found in {', '.join(map(str, candidates))}; "
        f"install Debian's postgresql-{major} or set PGOPS_PG_BINDIR"
    )


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_server_user(argv: list[str]) -> list[str]:
    """``argv`` run as the postgres OS user when we are root, unchanged otherwise."""
    if os.geteuid() == 0:
        return ["runuser", "-u", SERVER_USER, "--", *argv]
    return argv


def chown_to_server_user(path: Path) -> None:
    """Give ``path`` (a file, or a directory recursively) to the postgres OS user when
    running as root."""
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVER_USER)
    if not os.path.isdir(path):
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass
class LocalCluster:
    """One cluster: data directory, socket directory, port and log file.

    ``base`` holds ``data/``, ``run/`` (the Unix socket, mode 0700) and ``log/``.
    """

    base: Path
    port: int
    major: int = 15

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "run"

    @property
    def logfile(self) -> Path:
        return self.base / "log" / "postgresql.log"

    @property
    def bindir(self) -> Path:
        return find_bindir(self.major)

    def _run(self, argv: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        log.debug("running %s", argv)
        proc = subprocess.run(
            as_server_user(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise TransientError(
                f"{Path(argv[0]).name} failed with exit {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]} (server log: {self.logfile})"
            )
        return proc

    def exists(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def initdb(self, *, superuser: str = SERVER_USER) -> None:
        """Create the cluster with data checksums and local-socket-only superuser access."""
        for sub in (self.base, self.datadir, self.socket_dir, self.logfile.parent):
            sub.mkdir(parents=True, exist_ok=True)
        self.datadir.chmod(0o700)
        self.socket_dir.chmod(0o700)
        chown_to_server_user(self.base)
        self._run(
            [
                str(self.bindir / "initdb"),
                "--pgdata", str(self.datadir),
                "--username", superuser,
                "--auth-local", "trust",
                "--auth-host", "scram-sha-256",
                "--data-checksums",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ],
            timeout=300,
        )

    def configure(self, settings: dict[str, str | int | bool], hba_lines: list[str]) -> None:
        """Write pgops' settings to ``pgops.conf`` (included last) and replace pg_hba.conf.

        The superuser reaches the server only through the Unix socket in ``run/``, which
        only the postgres OS user (and root) can enter; everything else needs a
        password over loopback TCP.
        """
        base_settings: dict[str, str | int | bool] = {
            "port": self.port,
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.socket_dir),
            "unix_socket_permissions": "0700",
            "logging_collector": False,
        }
        lines = [f"{key} = {_conf_value(value)}" for key, value in {**base_settings, **settings}.items()]
        (self.datadir / "pgops.conf").write_text("# written by pgops; edits are overwritten\n" + "\n".join(lines) + "\n")
        conf = self.datadir / "postgresql.conf"
        text = conf.read_text()
        if "include_if_exists = 'pgops.conf'" not in text:
            conf.write_text(text + "\ninclude_if_exists = 'pgops.conf'\n")
        hba = ["# written by pgops", "local all all trust", *hba_lines]
        (self.datadir / "pg_hba.conf").write_text("\n".join(hba) + "\n")
        chown_to_server_user(self.datadir)

    def is_running(self) -> bool:
        return self._run([str(self.bindir / "pg_ctl"), "status", "-D", str(self.datadir)], check=False).returncode == 0

    def start(self, timeout: int = 60) -> None:
        if self.is_running():
            return
        self.logfile.parent.mkdir(parents=True, exist_ok=True)
        chown_to_server_user(self.logfile.parent)
        self._run(
            [str(self.bindir / "pg_ctl"), "start", "-D", str(self.datadir), "-l", str(self.logfile),
             "-w", "-t", str(timeout)],
            timeout=timeout + 10,
        )

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        if not self.exists() or not self.is_running():
            return
        self._run(
            [str(self.bindir / "pg_ctl"), "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", str(timeout)],
            timeout=timeout + 10,
        )

    def pid(self) -> int | None:
        pidfile = self.datadir / "postmaster.pid"
        try:
            return int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def superuser_params(self, dbname: str = "postgres") -> dict[str, object]:
        """libpq parameters for the superuser over the private Unix socket."""
        return {"host": str(self.socket_dir), "port": self.port, "user": SERVER_USER, "dbname": dbname}

    def destroy(self) -> None:
        """Stop the server (immediately) and remove every file of the cluster."""
        try:
            self.stop(mode="immediate")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            proc = self._run(
                [str(self.bindir / "pg_isready"), "-h", str(self.socket_dir), "-p", str(self.port)], check=False
            )
            if proc.returncode == 0:
                return
            time.sleep(0.2)
        raise TransientError(f"PostgreSQL on port {self.port} not ready after {timeout}s (log: {self.logfile})")


def _conf_value(value: str | int | bool) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


# Settings every cluster pgops creates for Fixia gets: what backups and monitoring need.
FIXIA_SERVER_SETTINGS: dict[str, str | int | bool] = {
    "wal_level": "replica",
    "max_wal_senders": 10,
    "max_replication_slots": 10,
    "max_slot_wal_keep_size": "8GB",
    "shared_preload_libraries": "pg_stat_statements",
    "pg_stat_statements.track": "top",
    "track_io_timing": True,
    "log_min_duration_statement": 1000,
    "log_line_prefix": "%m [%p] %q%u@%d/%a ",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
}

FIXIA_HBA_LINES = [
    "host all all 127.0.0.1/32 scram-sha-256",
    "host replication all 127.0.0.1/32 scram-sha-256",
]
