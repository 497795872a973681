"""Carry out a restore plan: check, download, extract, verify, configure, start.

Order matters and each step fails closed:

1. **refuse early**, before any download: the plan (:mod:`.plan`) is checked against
   the catalog; the target directory must be new or empty; the local PostgreSQL binaries
   must be the backup's major version; the file system must have room for the backup;
2. **download and extract**: frames fetched in parallel, each sha256-checked, then
   decompressed (and decrypted) straight into the data directory (:mod:`.fetch`,
   :mod:`.extract`), followed by one ``syncfs`` of the target file system;
3. ``pg_verifybackup`` checks every file against PostgreSQL's own ``backup_manifest``
   and parses the WAL the backup carries;
4. **recovery settings** appended to ``postgresql.auto.conf`` (so they win over the
   restored configuration) and ``recovery.signal``: ``restore_command`` runs
   ``pgops wal-fetch`` against the same repository;
5. **off the network** unless asked: a restored copy of production data listens on no
   TCP address (``listen_addresses = ''``; ``localhost`` when asked), has its Unix
   socket in the private data directory, and a ``pg_hba.conf`` that admits only local
   connections; only ``network="source"`` keeps the source's settings;
6. optionally **start** the server (as the postgres OS user when run as root) and wait,
   printing progress, until recovery has ended and the server has promoted.

If any step before the start fails, what the restore wrote is removed again, so the
same command can simply be rerun.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pgops.backup import wal
from pgops.backup.inventory import Inventory, scan
from pgops.config import EncryptionConfig, PgopsConfig, RepositoryConfig
from pgops.durability import syncfs
from pgops.errors import ConfigError, IntegrityError, TransientError, UnsafeOperation
from pgops.postgres.cluster import as_server_user, chown_to_server_user, find_bindir, free_port
from pgops.repository.base import Repository
from pgops.restore.extract import TarExtractor
from pgops.restore.fetch import frame_index, raw_pieces
from pgops.restore.plan import RestorePlan, RestoreRequest, plan_restore
from pgops.restore.walfetch import beyond as walfetch_beyond

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 10.0
SPOOL_NAME = "pgops-prefetch"  # under pg_wal/
DISK_MARGIN = 256 * 2**20

#: How a restored server can be reached: ``local`` (its Unix socket only, the default),
#: ``localhost`` (also TCP on the loopback addresses), ``source`` (the source's settings).
NETWORK_LOCAL, NETWORK_LOCALHOST, NETWORK_SOURCE = "local", "localhost", "source"
NETWORKS = (NETWORK_LOCAL, NETWORK_LOCALHOST, NETWORK_SOURCE)
# Trust is safe on the socket only because its directory is private (0700, the server
# user's): only that user and root can reach it. TCP on loopback is open to every local
# user, so it takes the roles' passwords.
LOCAL_HBA = ["local all all trust"]
LOOPBACK_HBA = ["host all all 127.0.0.1/32 scram-sha-256", "host all all ::1/128 scram-sha-256"]


@dataclass
class RestoreResult:
    backup_id: str
    target_dir: str
    plan: str
    recovery_settings: dict[str, str]
    raw_size: int
    stored_size: int
    files: int = 0
    timings_s: dict[str, float] = field(default_factory=dict)
    #: of download_extract, the time spent creating files and directories (the file system's
    #: inode allocation: TarExtractor.create_s); not a phase of its own
    create_files_s: float = 0.0
    port: int | None = None
    socket_dir: str | None = None
    network: str = NETWORK_LOCAL
    started: bool = False
    recovery: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# -- refusals before any download ---------------------------------------------------------
def check_target_dir(target: Path) -> bool:
    """The data directory must be new or empty. Returns whether it already existed."""
    if target.exists():
        if not target.is_dir():
            raise UnsafeOperation(f"{target} exists and is not a directory; restore into a new or empty directory")
        if any(target.iterdir()):
            raise UnsafeOperation(f"{target} is not empty: pgops never restores over existing files. Move it aside "
                                  "(or remove it, if you are sure it holds nothing you need) and rerun")
        return True
    return False


def check_server_user_access(target: Path) -> None:
    """Run as root, the server (and its restore_command) run as the postgres OS user,
    which must be able to reach the target directory."""
    if os.geteuid() != 0:
        return
    probe = target
    while not probe.exists():
        probe = probe.parent
    if subprocess.run(as_server_user(["test", "-x", str(probe)]), capture_output=True, check=False).returncode != 0:
        raise ConfigError(f"the postgres OS user cannot enter {probe} (check the permissions of it and its "
                          "parents): the restored server runs as that user. Choose a directory it can reach")


def check_binaries(major: str) -> Path:
    """The local server binaries must be the backup's major version."""
    bindir = find_bindir(int(major))
    out = subprocess.run([str(bindir / "pg_ctl"), "--version"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"(\d+)(?:\.\d+)?", out)
    if not found or found.group(1) != major:
        raise ConfigError(f"the backup is PostgreSQL {major} but {bindir}/pg_ctl is {out.strip() or 'unknown'}; "
                          f"install postgresql-{major} (or point PGOPS_PG_BINDIR at its binaries)")
    return bindir


def check_free_space(target: Path, plan: RestorePlan, segment_size: int = wal.DEFAULT_SEGMENT_SIZE) -> int:
    """Room for the whole backup plus the WAL recovery keeps, with a margin."""
    need = plan.record.raw_size + min(plan.wal_segments, 64) * segment_size + DISK_MARGIN
    probe = target
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < need:
        raise UnsafeOperation(f"{probe} has {free / 2**30:.1f} GiB free; restoring backup {plan.record.id} needs about "
                              f"{need / 2**30:.1f} GiB. Free space or choose another --to directory")
    return need


def check_socket_dir(socket_dir: Path) -> None:
    """A socket directory given for a server that trusts local connections must be
    private: anyone who can reach the socket could log in as any role."""
    try:
        mode = stat.S_IMODE(socket_dir.stat().st_mode)
    except OSError as exc:
        raise ConfigError(f"the socket directory {socket_dir} cannot be used: {exc}") from exc
    if mode & 0o077:
        raise ConfigError(f"the socket directory {socket_dir} has mode {mode:04o}: the restored server admits "
                          "local connections without a password, so it must be private (0700)")


# -- the recovery configuration -------------------------------------------------------------
def wal_fetch_command(repo_cfg: RepositoryConfig, encryption: EncryptionConfig | None, spool: Path,
                      prefetch: int, retry_s: int, expect_until: str | None = None,
                      stop_after: str | None = None) -> str:
    """The ``restore_command``: this same pgops, told exactly which repository to read."""
    url = repo_cfg.url if repo_cfg.scheme == "s3" else str(repo_cfg.local_path().resolve())
    argv = [sys.executable, "-m", "pgops", "wal-fetch", "--repository", url, "--spool", str(spool),
            "--prefetch", str(prefetch), "--retry-seconds", str(retry_s)]
    if expect_until:
        argv += ["--expect-until", expect_until]
    if stop_after:
        argv += ["--stop-after", stop_after]
    if repo_cfg.scheme == "s3":
        argv += ["--aws-conn-id", repo_cfg.aws_conn_id]
    if encryption is not None and encryption.enabled:
        argv += ["--encryption-key-conn-id", encryption.key_conn_id]
    return " ".join(shlex.quote(a) for a in argv) + " %f %p"


def _conf_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def network_settings(network: str, datadir: Path) -> dict[str, str]:
    """The settings that keep a restored server off the network (none for ``source``).
    The hba and ident files are named explicitly: the source's may live elsewhere."""
    if network not in NETWORKS:
        raise ConfigError(f"network {network!r} is not one of {', '.join(NETWORKS)}")
    if network == NETWORK_SOURCE:
        return {}
    return {"listen_addresses": "localhost" if network == NETWORK_LOCALHOST else "",
            "hba_file": str(datadir / "pg_hba.conf"), "ident_file": str(datadir / "pg_ident.conf")}


def local_hba(network: str) -> str:
    """The pg_hba.conf of a restored server: local connections only (and loopback TCP
    with passwords for ``localhost``)."""
    lines = ["# written by pgops restore: local connections only (see docs/restore.md)", *LOCAL_HBA]
    if network == NETWORK_LOCALHOST:
        lines += LOOPBACK_HBA
    return "\n".join(lines) + "\n"


def write_local_hba(datadir: Path, network: str = NETWORK_LOCAL) -> None:
    """Replace the restored pg_hba.conf (and pg_ident.conf, which it no longer uses)."""
    for name, text in (("pg_hba.conf", local_hba(network)), ("pg_ident.conf", "")):
        path = datadir / name
        path.write_text(text)
        path.chmod(0o600)
        chown_to_server_user(path)


def how_to_connect(result: RestoreResult) -> str:
    """One line for the operator: where the restored server listens and how to connect."""
    port = f"-p {result.port}" if result.port else "-p <the port in its postgresql.conf>"
    if result.network == NETWORK_SOURCE:
        return (f"the restored server keeps the source's listen_addresses and pg_hba.conf: it accepts the "
                f"connections the source accepted; its socket is in {result.socket_dir or 'the source location'}")
    where = "its Unix socket only" if result.network == NETWORK_LOCAL else \
        "its Unix socket, and TCP on localhost (127.0.0.1, ::1) with the roles' passwords"
    return (f"the restored server listens on {where}; connect as root or the postgres OS user with: "
            f"psql -h {result.socket_dir} {port} -U postgres")


def write_recovery_settings(datadir: Path, plan: RestorePlan, restore_command: str,
                            extra: dict[str, str] | None = None) -> None:
    """Append the recovery settings to postgresql.auto.conf (read last, so they win) and
    create recovery.signal; remove a standby.signal the backup may carry."""
    settings = {"restore_command": restore_command, **plan.recovery_settings, **(extra or {})}
    lines = [f"# pgops restore of backup {plan.record.id} at {datetime.now(timezone.utc).isoformat()}"]
    lines += [f"{key} = {_conf_quote(value)}" for key, value in settings.items()]
    auto = datadir / "postgresql.auto.conf"
    existing = auto.read_text() if auto.exists() else ""
    auto.write_text(existing + ("" if existing.endswith("\n") or not existing else "\n") + "\n".join(lines) + "\n")
    (datadir / "standby.signal").unlink(missing_ok=True)
    (datadir / "recovery.signal").write_text("")
    chown_to_server_user(auto)
    chown_to_server_user(datadir / "recovery.signal")


def run_verifybackup(bindir: Path, datadir: Path) -> None:
    proc = subprocess.run(as_server_user([str(bindir / "pg_verifybackup"), "--quiet", str(datadir)]),
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise IntegrityError(f"pg_verifybackup rejected the restored directory {datadir}:\n"
                             f"{(proc.stderr or proc.stdout).strip()[-3000:]}")


# -- start and wait for the end of recovery ---------------------------------------------------
_RESTORED = re.compile(r'restored log file "([0-9A-F]{24})" from archive')
_END_FACTS = {
    "stopped_at": re.compile(r"recovery stopping (?:before|after) (.*)$"),
    "redo_done_at": re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)"),
    "last_transaction_time": re.compile(r"last completed transaction was at log time (.*)$"),
    "new_timeline": re.compile(r"selected new timeline ID: (\d+)"),
    "consistent_at": re.compile(r"consistent recovery state reached at ([0-9A-F]+/[0-9A-F]+)"),
}


def recovery_facts(log_text: str) -> dict[str, str]:
    """What the server said about its recovery (the last occurrence of each)."""
    facts: dict[str, str] = {}
    for line in log_text.splitlines():
        for key, pattern in _END_FACTS.items():
            found = pattern.search(line)
            if found:
                facts[key] = found.group(1).strip()
    restored = _RESTORED.findall(log_text)
    facts["wal_files_restored"] = str(len(restored))
    if restored:
        facts["last_wal_file"] = restored[-1]
    return facts


def _controldata_state(bindir: Path, datadir: Path) -> str:
    proc = subprocess.run([str(bindir / "pg_controldata"), str(datadir)], capture_output=True, text=True,
                          check=False, env={**os.environ, "LC_ALL": "C"})
    found = re.search(r"^Database cluster state:\s*(.+)$", proc.stdout, re.MULTILINE)
    return found.group(1).strip() if found else "unknown"


def start_and_wait(bindir: Path, datadir: Path, logfile: Path, *, timeout_s: float) -> dict[str, str]:
    """Start the restored server and wait until recovery has ended; returns its recovery facts."""
    logfile.parent.mkdir(parents=True, exist_ok=True)
    chown_to_server_user(logfile.parent)
    proc = subprocess.run(as_server_user([str(bindir / "pg_ctl"), "start", "-W", "-D", str(datadir),
                                          "-l", str(logfile)]), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise TransientError(f"pg_ctl start failed: {(proc.stderr or proc.stdout).strip()} (log: {logfile})")
    t0 = time.monotonic()
    last_report = t0
    while True:
        time.sleep(0.2)
        text = logfile.read_text(errors="replace") if logfile.exists() else ""
        running = subprocess.run(as_server_user([str(bindir / "pg_ctl"), "status", "-D", str(datadir)]),
                                 capture_output=True, check=False).returncode == 0
        if not running:
            fatal = [line for line in text.splitlines() if "FATAL" in line or "PANIC" in line]
            raise IntegrityError("the restored server stopped during recovery: "
                                 + ("; ".join(fatal[-3:]) or "no FATAL line") + f" (log: {logfile})")
        if not (datadir / "recovery.signal").exists() and _controldata_state(bindir, datadir) == "in production":
            return recovery_facts(text)
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_S:
            last_report = now
            facts = recovery_facts(text)
            log.info("recovery running for %.0fs: %s WAL file(s) restored, last %s", now - t0,
                     facts["wal_files_restored"], facts.get("last_wal_file", "-"))
        if now - t0 > timeout_s:
            raise TransientError(f"recovery did not finish within {timeout_s:.0f}s; the server is still running "
                                 f"(log: {logfile}); wait, or stop it with pg_ctl stop -D {datadir}")


# -- the whole restore ----------------------------------------------------------------------
def run_restore(
    config: PgopsConfig,
    repo: Repository,
    request: RestoreRequest,
    target: Path,
    *,
    start: bool = False,
    port: int | None = None,
    socket_dir: Path | None = None,
    now: datetime | None = None,
    verify_backup: bool = True,
    recovery_timeout_s: float = 24 * 3600,
    server_settings: dict[str, str] | None = None,
    network: str = NETWORK_LOCAL,
    before_start: Callable[[Path], None] | None = None,
    on_planned: Callable[[RestorePlan], str | None] | None = None,
    inventory: Inventory | None = None,
) -> RestoreResult:
    """Restore ``request`` into ``target`` (see the module docstring). ``network`` says
    how the server can be reached (``NETWORKS``); ``server_settings`` are written with
    the recovery settings; ``before_start`` may adjust the directory; ``on_planned``
    sees the plan before any download, and may return a WAL segment after which recovery
    ends (``wal-fetch --stop-after``); ``inventory`` is the repository's scan when the
    caller has one."""
    target = Path(target).absolute()
    network_settings(network, target)  # an unknown network is refused before any work
    if socket_dir is not None and Path(socket_dir).absolute() != target and network != NETWORK_SOURCE:
        check_socket_dir(Path(socket_dir))
    opts = config.restore
    t0 = time.monotonic()
    inv = inventory if inventory is not None else scan(repo)
    plan = plan_restore(inv, request, now or datetime.now(timezone.utc))
    record = plan.record
    existed = check_target_dir(target)
    check_server_user_access(target)
    bindir = check_binaries(record.pg_version)
    check_free_space(target, plan)
    index = frame_index(repo, record)  # checked against backup.json before any data is fetched
    # The caller may end recovery early: after the segment ``on_planned`` returns.
    stop_after = on_planned(plan) if on_planned is not None else None
    log.info("%s", plan.describe())
    result = RestoreResult(record.id, str(target), plan.describe(), plan.recovery_settings,
                           record.raw_size, record.stored_size)
    result.timings_s["plan"] = round(time.monotonic() - t0, 3)

    t1 = time.monotonic()
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    target.chmod(0o700)
    chown_to_server_user(target)  # new or empty: only the directory itself
    try:
        extractor = TarExtractor(target, writers=opts.write_threads)
        done = 0
        last_report = time.monotonic()
        try:
            for piece in raw_pieces(repo, record, index, workers=opts.workers):
                extractor.feed(piece)
                done += len(piece)
                if time.monotonic() - last_report >= PROGRESS_EVERY_S:
                    last_report = time.monotonic()
                    elapsed = last_report - t1
                    log.info("restore %s: %.0f of %.0f MiB extracted (%.0f%%), %.0f MiB/s", record.id, done / 2**20,
                             record.raw_size / 2**20, 100 * done / max(record.raw_size, 1), done / 2**20 / elapsed)
            extractor.close()
        except BaseException:
            extractor.abort()
            raise
        try:
            syncfs(target)
        except OSError as exc:  # a failed writeback: the files are not known to be on disk
            raise TransientError(f"flushing the restored files to disk failed: {exc} (fix the target, then rerun)") \
                from exc
        result.files = extractor.files
        result.timings_s["download_extract"] = round(time.monotonic() - t1, 3)
        result.create_files_s = round(extractor.create_s, 3)
        log.info("restore %s: %d files, %.0f MiB extracted in %.1fs (%.1fs of it creating files and directories)",
                 record.id, extractor.files, done / 2**20, result.timings_s["download_extract"],
                 result.create_files_s)
        if verify_backup:
            t2 = time.monotonic()
            run_verifybackup(bindir, target)
            result.timings_s["verifybackup"] = round(time.monotonic() - t2, 3)
            log.info("pg_verifybackup: the restored files match the backup manifest (%.1fs)",
                     result.timings_s["verifybackup"])
        spool = target / "pg_wal" / SPOOL_NAME
        # pgops flushed the file system already; without this the server fsyncs every
        # file again at start-up, one by one (2.7 s of a 5 s recovery at 320 MB, measured).
        extra: dict[str, str] = {"recovery_init_sync_method": "syncfs"}
        result.port = port or (free_port() if start else None)
        if result.port:
            extra["port"] = str(result.port)
        result.network = network
        if socket_dir or start or network != NETWORK_SOURCE:
            result.socket_dir = str(socket_dir or target)  # the data directory is private (0700)
            extra["unix_socket_directories"] = result.socket_dir
        extra.update(network_settings(network, target))
        extra.update(server_settings or {})
        until = plan.wal_until_segment
        if stop_after and until and not walfetch_beyond(until, stop_after):
            stop_after = None  # the planned WAL ends there already
        elif stop_after and until:
            until = stop_after
        write_recovery_settings(target, plan, wal_fetch_command(config.repository, config.encryption, spool,
                                                                opts.wal_prefetch, opts.wal_fetch_retry_s,
                                                                until, stop_after), extra)
        if network == NETWORK_SOURCE:
            log.warning("the restored server keeps the source's listen_addresses and pg_hba.conf: a copy of the "
                        "source's data, reachable from wherever the source was")
        else:
            write_local_hba(target, network)
        if before_start is not None:
            before_start(target)
    except BaseException:
        _undo(target, existed)
        raise

    if start:
        t3 = time.monotonic()
        result.recovery = start_and_wait(bindir, target, target / "log" / "pgops-restore.log",
                                         timeout_s=recovery_timeout_s)
        shutil.rmtree(spool, ignore_errors=True)
        result.started = True
        result.timings_s["recovery"] = round(time.monotonic() - t3, 3)
        log.info("recovery finished in %.1fs: %s", result.timings_s["recovery"], result.recovery)
    result.timings_s["total"] = round(time.monotonic() - t0, 3)
    return result


def _undo(target: Path, existed: bool) -> None:
    """Remove what this restore wrote; an empty directory that was there before stays."""
    log.warning("restore failed: removing the partial files in %s", target)
    if existed:
        for child in target.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    else:
        shutil.rmtree(target, ignore_errors=True)
