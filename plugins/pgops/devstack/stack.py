"""``make up`` / ``make down``: the whole local stack, under ``var/``.

``up`` is idempotent: each part is created only when missing and started only when
stopped. It brings up, in order:

1. PostgreSQL 15 for Fixia (``var/pg``, port 55432, run as the postgres OS user):
   ``wal_level=replica``, replication on loopback, pg_stat_statements, data checksums;
2. the Fixia database, its application roles and synthetic data (scale ``$PGOPS_SCALE``,
   default 1); then pgops installed on it as on any database: ``pgops db setup`` (one
   role per job, random passwords kept in ``var/secrets``) and ``pgops db upgrade``;
3. a local backup repository (``var/repository``);
4. Airflow standalone (``var/airflow``, SQLite) with the project's DAGs, unpaused,
   its connections passed as ``AIRFLOW_CONN_*`` variables from ``var/secrets/pgops.env``;
5. the main job (pgops' migrations through their DAG, a full backup, then a WAL shipping
   run, then a restore drill of what they stored), and its result: the schema version,
   the drill's verdict, RTO and RPO. The restore
   verification DAG stays paused until a complete backup exists, so a fresh stack never
   shows a drill that failed for want of a backup.

Every part that fails to start is named with the log to read. ``down`` stops what
``up`` started, by process id.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from pgops.config import PROJECT_ROOT
from pgops.errors import PgopsError
from pgops.postgres.cluster import FIXIA_HBA_LINES, FIXIA_SERVER_SETTINGS, LocalCluster

log = logging.getLogger("pgops.devstack")

DBNAME = "fixia"
# The main job: a full backup, then one WAL shipping run, into the local repository,
# then a restore drill of them.
MIGRATE_DAG = "pgops_db_migrate"
MAIN_DAGS = ("pgops_full_backup", "pgops_wal_shipping")
DRILL_DAG = "pgops_restore_verification"
# The configuration's role of each job → its Airflow connection (config.database.*_conn_id).
ROLE_CONNECTIONS = {
    "pgops_backup": "pgops_backup",
    "pgops_monitor": "pgops_monitor",
    "pgops_maintenance": "pgops_maintenance",
    "pgops_owner": "pgops_owner",
}


class StackError(PgopsError):
    """A part of the local stack failed; the message names the part and its log."""


class Stack:
    def __init__(self, root: Path = PROJECT_ROOT, pg_port: int = 55432, airflow_port: int = 8080) -> None:
        self.root = root
        self.var = root / "var"
        self.cluster = LocalCluster(self.var / "pg", pg_port)
        self.airflow_home = self.var / "airflow"
        self.airflow_port = airflow_port
        self.secrets_dir = self.var / "secrets"
        self.logs = self.var / "log"
        self.run_dir = self.var / "run"
        self.repository = self.var / "repository"

    # -- helpers -----------------------------------------------------------------

    def _step(self, what: str) -> None:
        print(f"[pgops] {what}", flush=True)

    @property
    def airflow_pidfile(self) -> Path:
        return self.run_dir / "airflow.pid"

    @property
    def airflow_log(self) -> Path:
        return self.logs / "airflow.log"

    @property
    def env_file(self) -> Path:
        return self.secrets_dir / "pgops.env"

    def _passwords(self) -> dict[str, str]:
        """Role passwords, generated once and kept (mode 0600) so re-runs reuse them."""
        path = self.secrets_dir / "passwords.json"
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir.chmod(0o700)
        if path.exists():
            passwords = json.loads(path.read_text())
            missing = {role: secrets.token_urlsafe(24) for role in ROLE_CONNECTIONS if role not in passwords}
            if missing:  # a stack made before a role was added: the known ones are kept
                return self._write_passwords(path, {**passwords, **missing})
            return passwords
        passwords = {role: secrets.token_urlsafe(24) for role in ROLE_CONNECTIONS}
        return self._write_passwords(path, passwords)

    def _write_passwords(self, path: Path, passwords: dict[str, str]) -> dict[str, str]:
        """Written beside ``path`` (mode 0600) and renamed over it: an interruption never
        leaves the roles' passwords unknown."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(passwords, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return passwords

    def connection_env(self) -> dict[str, str]:
        """``AIRFLOW_CONN_*`` variables for the job roles."""
        passwords = self._passwords()
        env = {}
        for role, conn_id in ROLE_CONNECTIONS.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps({
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": self.cluster.port,
                "login": role,
                "password": passwords[role],
                "schema": DBNAME,
            })
        return env

    def airflow_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        return {
            **os.environ,
            "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.root / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Paused at creation: up() unpauses each DAG once it can run (the restore drill
            # only once a backup exists), so a fresh stack shows no run that failed for want of one.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__API__PORT": str(self.airflow_port),
            "PGOPS_HOME": str(self.root),
            **self.connection_env(),
        }

    def write_env_file(self) -> None:
        """The variables a shell needs to run ``pgops`` against this stack (mode 0600)."""
        lines = [
            "# pgops local stack: `set -a; . var/secrets/pgops.env; set +a` then run pgops.",
            "# Holds database passwords: never commit or share this file.",
            f"PGOPS_HOME={self.root}",
            f"AIRFLOW_HOME={self.airflow_home}",
        ]
        lines += [f"{key}='{value}'" for key, value in self.connection_env().items()]
        fd = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")

    def _airflow(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.airflow_env(), capture_output=True, text=True, timeout=timeout, check=False,
        )

    def _airflow_pid(self) -> int | None:
        try:
            pid = int(self.airflow_pidfile.read_text())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    # -- parts -------------------------------------------------------------------

    def up_postgres(self) -> None:
        cluster = self.cluster
        try:
            if not cluster.exists():
                self._step(f"creating PostgreSQL 15 cluster in {cluster.datadir}")
                cluster.initdb()
            cluster.configure(FIXIA_SERVER_SETTINGS, FIXIA_HBA_LINES)
            if cluster.is_running():
                self._step(f"PostgreSQL already running on port {cluster.port}")
            else:
                self._step(f"starting PostgreSQL on 127.0.0.1:{cluster.port}")
                cluster.start()
            cluster.wait_ready()
        except PgopsError as exc:
            raise StackError(f"PostgreSQL failed to start: {exc}\n  log: {cluster.logfile}") from exc

    def up_database(self, scale: int) -> None:
        from pgops.config import load_config
        from pgops.devstack import seed
        from pgops.postgres.session import connect_params

        try:
            with connect_params(self.cluster.superuser_params(), application_name="pgops:setup",
                                statement_timeout_s=60) as admin:
                if seed.create_database(admin, DBNAME):
                    self._step(f"created database {DBNAME}")
            with connect_params(self.cluster.superuser_params(DBNAME), application_name="pgops:setup",
                                statement_timeout_s=3600) as conn:
                seed.apply_schema(conn)
                if seed.is_seeded(conn):
                    self._step("Fixia data already loaded")
                else:
                    self._step(f"loading Fixia data at scale {scale} (progress below)")
                    anchor = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
                    seed.generate(conn, scale, anchor)
                    seed.apply_schema(conn)  # the application's ownership and grants of the loaded tables
            config = load_config(self.root / "config" / "pgops.yaml")
            self._step("installing pgops on it: pgops db setup, then pgops db upgrade "
                       f"(lines: {', '.join(config.setup.lines)})")
            plan = seed.install_pgops(self.cluster.superuser_params(DBNAME), config, self._passwords())
            self._step(f"pgops db setup: {len(plan.steps)} statement(s) run"
                       + ("" if plan.steps else " (everything was in place)"))
        except PgopsError as exc:
            raise StackError(f"setting up the Fixia database failed: {exc}\n  log: {self.cluster.logfile}") from exc

    def up_airflow(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        if self._airflow_pid():
            self._step(f"Airflow already running (pid {self._airflow_pid()})")
        else:
            self._step(f"starting Airflow standalone (log: {self.airflow_log})")
            with open(self.airflow_log, "ab") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "airflow"), "standalone"],
                    env=self.airflow_env(), stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.root,
                )
            self.airflow_pidfile.write_text(str(proc.pid))
        self._wait_airflow_healthy()
        from pgops.orchestration import BACKUP_POOL, WAL_POOL

        for name, what in ((BACKUP_POOL, "pgops: one at a time among full backups, pruning and verification"),
                           (WAL_POOL, "pgops: WAL shipping, beside full backups")):
            pool = self._airflow("pools", "set", name, "1", what)
            if pool.returncode != 0:
                raise StackError(f"cannot create the Airflow pool {name}: {pool.stderr.strip()[-500:]}")
        self._wait_dags_listed()

    def _wait_airflow_healthy(self, timeout: float = 240) -> None:
        url = f"http://localhost:{self.airflow_port}/api/v2/monitor/health"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._airflow_pid():
                raise StackError(f"Airflow exited during start-up\n  log: {self.airflow_log}")
            try:
                with urllib.request.urlopen(url, timeout=5) as resp:
                    health = json.load(resp)
                if all(part.get("status") == "healthy" for part in health.values()):
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(2)
        raise StackError(f"Airflow was not healthy after {timeout:.0f}s\n  log: {self.airflow_log}")

    def _wait_dags_listed(self, timeout: float = 180) -> list[str]:
        expected = sorted(p.stem for p in (self.root / "dags").glob("pgops_*.py"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            errors = _json_output(self._airflow("dags", "list-import-errors", "-o", "json"))
            if errors:
                raise StackError(f"DAG import errors:\n{json.dumps(errors, indent=2)}\n  log: {self.airflow_log}")
            listed = _json_output(self._airflow("dags", "list", "-o", "json"))
            if listed is not None:
                ids = sorted(d["dag_id"] for d in listed)
                if all(dag_id in ids for dag_id in expected):
                    # The restore drill stays paused until there is a backup to drill.
                    unpaused = [d for d in expected if d != DRILL_DAG or self.has_backup()]
                    for dag_id in unpaused:
                        self._airflow("dags", "unpause", dag_id)
                    paused = sorted(set(expected) - set(unpaused))
                    self._step(f"DAGs listed and unpaused: {', '.join(unpaused)}"
                               + (f"; paused until a backup exists: {', '.join(paused)}" if paused else ""))
                    return expected
            time.sleep(3)
        raise StackError(f"DAGs {expected} not listed after {timeout:.0f}s\n  log: {self.airflow_log}")

    def run_main_job(self, dag_id: str, timeout: float = 900) -> str:
        run_id = f"make_up__{datetime.now(timezone.utc).strftime('%Y%m%dT%H%M%S')}"
        self._step(f"running the main job: {dag_id} (run {run_id})")
        trig = self._airflow("dags", "trigger", dag_id, "--run-id", run_id)
        if trig.returncode != 0:
            raise StackError(f"cannot trigger {dag_id}: {trig.stderr.strip()[-1000:]}")
        deadline = time.monotonic() + timeout
        state = "queued"
        while time.monotonic() < deadline:
            runs = _json_output(self._airflow("dags", "list-runs", dag_id, "-o", "json"))
            if runs is not None:
                for run in runs:
                    if run["run_id"] == run_id:
                        state = run["state"]
            if state in ("success", "failed"):
                break
            time.sleep(3)
        task_logs = self.airflow_home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        if state != "success":
            raise StackError(f"the main job {dag_id} ended {state}\n  log: {task_logs}")
        self._step(f"main job {dag_id}: {state} (task logs: {task_logs})")
        return state

    def has_backup(self) -> bool:
        """Whether the local repository holds a complete full backup."""
        from pgops.backup import catalog

        backups = self.repository / catalog.BACKUPS
        return backups.is_dir() and any(backups.glob(f"*/{catalog.MARKER}"))

    def print_schema(self) -> None:
        """pgops' migration versions in the Fixia database, against the configured heads."""
        from pgops.config import load_config
        from pgops.database import migrations
        from pgops.postgres.session import connect_params

        config = load_config(self.root / "config" / "pgops.yaml")
        with connect_params(self.cluster.superuser_params(DBNAME), application_name="pgops:setup",
                            statement_timeout_s=60) as conn:
            status = migrations.status(config, migrations.applied_versions(conn))
        self._step(f"pgops schema: {', '.join(status['applied']) or 'nothing applied'} "
                   f"({'at the head of every configured line' if not status['behind'] else '; '.join(status['behind'])})")

    def print_drill(self) -> None:
        """The newest restore drill's verdict, RTO and RPO, from its evidence."""
        found = sorted(self.repository.glob("backups/*/verification/*.json"), key=lambda p: p.name)
        if not found:
            self._step("restore drill: no evidence was stored")
            return
        evidence = json.loads(found[-1].read_text())
        rpo = evidence.get("rpo") or {}
        failed = [c["name"] for c in evidence.get("checks", []) if c.get("verdict") == "failed"]
        self._step(
            f"restore drill of backup {evidence.get('backup_id')}: {str(evidence.get('verdict')).upper()}; "
            f"RTO {evidence.get('rto_s')} s; RPO {rpo.get('achieved_rpo_s')} s (last replayed commit "
            f"{rpo.get('last_replayed_commit')}, promised until {rpo.get('promised_until')})"
            + (f"; failed checks: {', '.join(failed)}" if failed else "")
            + (f"; error: {evidence['error']}" if evidence.get("error") else "")
            + f"\n  evidence: {found[-1].with_suffix('.md')}")

    # -- commands ----------------------------------------------------------------

    def up(self, scale: int = 1, run_main: bool = True) -> None:
        self.up_postgres()
        self.up_database(scale)
        self.repository.mkdir(parents=True, exist_ok=True)
        self.write_env_file()
        self.up_airflow()
        if run_main:
            self.run_main_job(MIGRATE_DAG)
            self.print_schema()
            for dag_id in MAIN_DAGS:
                self.run_main_job(dag_id)
            self._airflow("dags", "unpause", DRILL_DAG)  # a backup exists now
            try:
                self.run_main_job(DRILL_DAG)
            finally:
                self.print_drill()
        password_file = self.airflow_home / "simple_auth_manager_passwords.json.generated"
        self._step("ready")
        print(
            f"\n  Airflow UI:  http://localhost:{self.airflow_port}\n"
            f"  login:       admin (password in {password_file})\n"
            f"  PostgreSQL:  127.0.0.1:{self.cluster.port}, database {DBNAME}\n"
            f"  repository:  {self.repository}\n"
            f"  CLI:         set -a; . {self.env_file}; set +a; .venv/bin/pgops --help\n"
            f"  stop:        ./dev down (or Ctrl-C when `./dev up` runs in the foreground)\n",
            flush=True,
        )

    def down(self) -> None:
        pid = self._airflow_pid()
        if pid:
            self._step(f"stopping Airflow (process group {pid})")
            _terminate_group(pid)
        self.airflow_pidfile.unlink(missing_ok=True)
        if self.cluster.exists() and self.cluster.is_running():
            self._step("stopping PostgreSQL")
            self.cluster.stop()
        self._step("stopped")

    def wait_foreground(self) -> None:
        """Stay attached until Ctrl-C (or Airflow exits), then stop everything."""
        stop = {"now": False}

        def handler(signum, frame):  # noqa: ARG001 - signal handler signature
            stop["now"] = True

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        print("[pgops] running; press Ctrl-C to stop", flush=True)
        while not stop["now"] and self._airflow_pid():
            time.sleep(1)
        if not stop["now"]:
            print(f"[pgops] Airflow exited; see {self.airflow_log}", flush=True)
        self.down()

    def destroy(self) -> None:
        """Stop everything and delete ``var/`` (data, repository, secrets)."""
        self.down()
        shutil.rmtree(self.var, ignore_errors=True)
        self._step(f"removed {self.var}")


def _json_output(proc: subprocess.CompletedProcess) -> list | None:
    """The JSON list an ``airflow ... -o json`` command printed, or None.

    Airflow may print warnings before it, so the last line that starts a JSON list is used.
    """
    if proc.returncode != 0:
        return None
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("["):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _terminate_group(pid: int, timeout: float = 30) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pid):
            return
        time.sleep(0.5)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie child of ours is reaped and counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in process group ``pgid``."""
    _alive(pgid)  # reap the leader if it is our child
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgops.devstack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the local stack up (idempotent)")
    up.add_argument("--scale", type=int, default=int(os.environ.get("PGOPS_SCALE", "1")),
                    help="Fixia data scale factor (default $PGOPS_SCALE or 1)")
    up.add_argument("--detach", action="store_true", help="return once up instead of staying attached")
    up.add_argument("--no-main-job", action="store_true", help="do not run the main job")
    sub.add_parser("down", help="stop what up started")
    sub.add_parser("destroy", help="stop and delete var/ (all local data and secrets)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[pgops]   %(message)s", stream=sys.stdout)
    stack = Stack()
    try:
        if args.command == "up":
            if args.scale < 1:
                parser.error("--scale must be at least 1")
            stack.up(scale=args.scale, run_main=not args.no_main_job)
            if not args.detach:
                stack.wait_foreground()
        elif args.command == "down":
            stack.down()
        else:
            stack.destroy()
    except KeyboardInterrupt:
        print("[pgops] interrupted: stopping what was started", flush=True)
        stack.down()
        return 130
    except PgopsError as exc:
        print(f"[pgops] FAILED: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    return 0
