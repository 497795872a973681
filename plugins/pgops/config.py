"""The typed pgops configuration: one YAML file, validated by pydantic.

Every policy pgops applies lives here, with its default, in one place. The file is
``$PGOPS_CONFIG`` if set, else ``config/pgops.yaml`` under ``$PGOPS_HOME``, and it must
exist: a worker without it would otherwise back up with the defaults into a directory
on its own disk. The embedded defaults alone are the configuration only when asked for
with ``PGOPS_USE_DEFAULTS=1`` and no file is there. Unknown keys are errors (a typo must
not silently fall back to a default), and every error names the key, the value given
and what is allowed.

Relative paths in the file are resolved against ``$PGOPS_HOME`` (default: the project
checkout, the directory holding ``plugins/``).

The configuration is validated when a DAG file is parsed and again when a task
starts (:func:`load_config` is cheap: one small file, no network).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pgops.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]{0,62}\.[a-z_][a-z0-9_]{0,62}$")


def project_home() -> Path:
    """The directory relative paths are resolved against."""
    return Path(os.environ.get("PGOPS_HOME", PROJECT_ROOT)).resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


# Airflow's cron presets (airflow.sdk.definitions.timetables._cron.CRON_PRESETS; a test
# keeps the two equal). Copied, not imported: importing airflow.sdk costs a second and
# a large heap in every process that validates a configuration, the on-call
# `pgops restore` among them.
CRON_PRESETS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@quarterly": "0 0 1 */3 *",
    "@yearly": "0 0 1 1 *",
}


def _check_schedule(value: str | None) -> str | None:
    """Check a schedule the way the DAGs' CronTriggerTimetable will: Airflow's presets,
    then croniter (the parser Airflow validates with), imported here so that importing
    this module stays cheap. Five fields only: croniter would read a sixth as seconds."""
    if value is None:
        return value
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    rule = "must be a five-field cron expression or a preset such as @daily"
    expression = CRON_PRESETS.get(value, value)
    try:
        croniter(expression)
    except (CroniterBadCronError, CroniterBadDateError) as exc:
        raise ValueError(f"{rule}: {exc}") from exc
    if not expression.startswith("@") and len(expression.split()) != 5:
        raise ValueError(f"{rule}, not {len(expression.split())} fields")
    return value


class RepositoryConfig(_Section):
    """Where backups are stored."""

    url: str = Field(
        "var/repository",
        description="s3://bucket/prefix, file:///absolute/path, or a local path "
        "(relative paths are under PGOPS_HOME).",
    )
    aws_conn_id: str = Field(
        "pgops_s3",
        description="Airflow connection (type aws) for s3:// URLs; its extra may set endpoint_url.",
    )
    part_size_mib: int = Field(
        16, ge=5, le=5120,
        description="First multipart part size; doubles every 1,000 parts so streams of unknown "
        "length fit S3's 10,000 parts (16 MiB: about 12 TiB). About four parts are held in memory, so "
        "memory grows with the parts: 64 MiB at first, about 2 GiB by the end of a 1 TB backup.",
    )
    sse: Literal["none", "AES256", "aws:kms"] = Field(
        "none", description="Server-side encryption of stored objects."
    )
    sse_kms_key_id: str | None = Field(None, description="KMS key id when sse is aws:kms.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        parsed = urlparse(value)
        if parsed.scheme in ("", "file"):
            if parsed.scheme == "file" and not parsed.path.startswith("/"):
                raise ValueError("file:// URLs need an absolute path (file:///var/backups)")
            if not (parsed.path or value):
                raise ValueError("must not be empty")
            return value
        if parsed.scheme == "s3":
            if not parsed.netloc:
                raise ValueError("s3:// URLs need a bucket: s3://bucket/prefix")
            return value
        raise ValueError(
            f"unknown repository scheme {parsed.scheme!r}; allowed: s3://bucket/prefix, "
            "file:///path, or a local path"
        )

    @model_validator(mode="after")
    def _kms_needs_key(self) -> RepositoryConfig:
        if self.sse == "aws:kms" and not self.sse_kms_key_id:
            raise ValueError("sse 'aws:kms' needs sse_kms_key_id")
        return self

    @property
    def scheme(self) -> Literal["s3", "local"]:
        return "s3" if self.url.startswith("s3://") else "local"

    def local_path(self) -> Path:
        """The repository directory, for local repositories."""
        if self.scheme != "local":
            raise ConfigError(f"repository.url {self.url!r} is not a local repository")
        path = Path(urlparse(self.url).path if self.url.startswith("file://") else self.url)
        return path if path.is_absolute() else project_home() / path


class DatabaseConfig(_Section):
    """How pgops reaches the Fixia database: one least-privilege Airflow connection per job."""

    backup_conn_id: str = Field(
        "pgops_backup", description="Role with REPLICATION and the backup functions."
    )
    monitor_conn_id: str = Field("pgops_monitor", description="Role in pg_monitor.")
    maintenance_conn_id: str = Field(
        "pgops_maintenance", description="Role of the partition and materialized-view jobs."
    )
    owner_conn_id: str = Field(
        "pgops_owner", description="Role that owns schema pgops and runs its migrations (`pgops db upgrade`, "
        "the pgops_db_migrate DAG); no other job uses it."
    )
    application_name: str = Field(
        "pgops", max_length=40, description="Prefix of application_name on every session."
    )
    connect_timeout_s: int = Field(10, ge=1, le=300, description="Seconds to wait for a connection.")
    statement_timeout_s: int = Field(
        300, ge=1, le=86400, description="statement_timeout of every pgops session."
    )
    lock_timeout_s: int = Field(
        5, ge=1, le=3600, description="lock_timeout of sessions that run DDL."
    )


MIGRATION_LINES = ("core", "fixia")


class SetupConfig(_Section):
    """pgops' own roles and objects in the database (docs/setup.md).

    `pgops db setup` (once, by a superuser, or `--print-sql` for a DBA) creates the four roles
    and schema `pgops`; `pgops db upgrade` then runs the migrations of the lines listed
    here. The roles are pgops' own: set-up refuses a name that an existing role not
    created by pgops already has, rather than change that role.
    """

    backup_role: str = Field("pgops_backup", description="LOGIN REPLICATION; may switch WAL and write the "
                             "sentinel; reads the counted tables (restore_verification.count_tables).")
    monitor_role: str = Field("pgops_monitor", description="LOGIN, member of pg_monitor; reads schema pgops.")
    maintenance_role: str = Field("pgops_maintenance", description="LOGIN; the partition and "
                                  "materialized-view jobs' role.")
    owner_role: str = Field("pgops_owner", description="LOGIN; owns schema pgops and everything in it, and "
                            "runs the migrations.")
    lines: list[Literal["core", "fixia"]] = Field(
        default_factory=lambda: ["core"],
        description="Migration lines to keep at their head: `core` (what every pgops job needs on any "
        "database: schema pgops, the sentinel table) and `fixia` (the Fixia reference schema's own objects; "
        "only on Fixia's database). `core` is always needed.",
    )

    @field_validator("backup_role", "monitor_role", "maintenance_role", "owner_role")
    @classmethod
    def _role(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("role names are lower-case letters, digits and _, at most 63, not starting with a digit")
        if value.startswith("pg_") or value == "public":
            raise ValueError("names starting with pg_, and public, are reserved by PostgreSQL")
        return value

    @field_validator("lines")
    @classmethod
    def _lines(cls, value: list[str]) -> list[str]:
        if "core" not in value:
            raise ValueError("must include 'core': every pgops job needs it")
        if len(set(value)) != len(value):
            raise ValueError("lists a line twice")
        return sorted(value, key=MIGRATION_LINES.index)

    @model_validator(mode="after")
    def _distinct(self) -> SetupConfig:
        names = [self.backup_role, self.monitor_role, self.maintenance_role, self.owner_role]
        if len(set(names)) != len(names):
            raise ValueError(f"the four roles need four different names, got {names}")
        return self

    def roles(self) -> dict[str, str]:
        """Job → role name."""
        return {"backup": self.backup_role, "monitor": self.monitor_role,
                "maintenance": self.maintenance_role, "owner": self.owner_role}


class BackupConfig(_Section):
    """Full backups and WAL shipping."""

    full_schedule: str = Field("0 1 * * *", description="Cron of the daily full backup (UTC).")
    wal_schedule: str = Field("@hourly", description="Cron of WAL shipping (UTC).")
    compression_level: int = Field(3, ge=1, le=22, description="zstd level.")
    compression_workers: int = Field(
        2, ge=0, le=64, description="zstd frames compressed at once, each on its own thread, while one more "
        "thread reads the stream (as pg_basebackup's workers=N); 0: read and compress in the calling thread."
    )
    checkpoint: Literal["fast", "spread"] = Field(
        "fast", description="pg_basebackup --checkpoint."
    )
    max_rate: str | None = Field(
        None, description="pg_basebackup --max-rate, e.g. '100M' or '32768k'; unset: unlimited."
    )
    slot_name: str = Field("pgops", description="Physical replication slot owned by pgops.")
    spool_dir: str = Field("var/spool", description="Local spool for pg_receivewal.")
    verify_sample: int = Field(
        3, ge=0, le=10_000, description="After each full backup and prune, the DAG's verify task re-reads this "
        "many backup objects and as many WAL segments, chosen at random, and checks their sha256; WAL "
        "continuity and object sizes are always checked. `pgops backups verify --full` reads everything."
    )

    _check_schedules = field_validator("full_schedule", "wal_schedule")(_check_schedule)

    @field_validator("max_rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = re.fullmatch(r"(\d+)([kM]?)", value)
        if not match:
            raise ValueError("must be a number of kB/s with an optional k or M suffix, e.g. 100M")
        kbps = int(match.group(1)) * (1024 if match.group(2) == "M" else 1)
        if not 32 <= kbps <= 1024 * 1024:
            raise ValueError("pg_basebackup allows 32 kB/s to 1024 MB/s")
        return value

    @field_validator("slot_name")
    @classmethod
    def _slot(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError("slot names are lower-case letters, digits and _, at most 63")
        return value


class RetentionConfig(_Section):
    """What retention pruning keeps."""

    full_days: int = Field(30, ge=1, le=3650, description="Keep full backups this many days.")
    min_full_backups: int = Field(
        2, ge=1, le=1000, description="Always keep at least this many valid full backups."
    )
    pitr_days: int = Field(
        7, ge=0, le=3650, description="Keep continuous WAL for point-in-time recovery this long."
    )
    incomplete_grace_hours: int = Field(
        24, ge=1, le=720, description="Remove unfinished backups older than this."
    )

    @model_validator(mode="after")
    def _pitr_within_full(self) -> RetentionConfig:
        if self.pitr_days > self.full_days:
            raise ValueError(
                f"pitr_days ({self.pitr_days}) cannot exceed full_days ({self.full_days}): "
                "point-in-time recovery needs a full backup at the start of its window"
            )
        return self


class EncryptionConfig(_Section):
    """Optional client-side encryption of every stored object."""

    enabled: bool = Field(False, description="Encrypt every stored object with AES-256-GCM.")
    key_conn_id: str = Field(
        "pgops_encryption", description="Airflow connection whose password is the key."
    )


class RestoreConfig(_Section):
    """``pgops restore`` and ``pgops wal-fetch`` (also used by the restore verification)."""

    workers: int = Field(
        2, ge=1, le=32,
        description="Threads that fetch, check and decompress backup frames in parallel (4 MiB of raw data "
        "each in current backups, so about (workers + 2) frames in memory).",
    )
    write_threads: int = Field(
        1, ge=1, le=8,
        description="Threads that write the restored files (pwrite). More help only where copying into the "
        "page cache, not the disk, is the limit (measured here, on a virtual disk, 2 were no faster).",
    )
    wal_prefetch: int = Field(
        8, ge=1, le=64,
        description="wal-fetch also fetches this many segments ahead (minus one) into pg_wal/pgops-prefetch.",
    )
    wal_fetch_retry_s: int = Field(
        300, ge=0, le=86400,
        description="How long wal-fetch retries transient repository errors before it stops recovery "
        "(exit 255, never 'not found').",
    )


class RestoreVerificationConfig(_Section):
    """The monthly restore test."""

    schedule: str = Field("0 4 1 * *", description="Cron of the restore verification (UTC).")
    on_full_backup: bool = Field(
        False, description="Also run after every full backup (scheduled on its Asset)."
    )
    scratch_dir: str = Field("var/scratch", description="Where the scratch server lives.")
    count_tables: list[str] = Field(
        default_factory=lambda: ["fixia.users", "fixia.payments", "fixia.notifications"],
        description="Tables whose row counts the backup jobs record with each sentinel and the restore "
        "test compares (the backup role needs SELECT on them).",
    )
    count_timeout_ms: int = Field(
        2000, ge=10, le=600_000,
        description="Time each table's row count may take when the backup jobs record it with a sentinel "
        "(`count(*)` under its own statement_timeout, in the sentinel's snapshot, which is held for at most "
        "the sum of these). A count that fails or runs out of time is recorded, never fatal: WAL still "
        "ships, the run warns and reports it (sentinel_count_errors), and a restore test that checks that sentinel fails its row_counts check naming it.",
    )
    count_max_pages: int = Field(
        12_800, ge=1, le=2**31 - 1,
        description="A counted table larger than this many blocks (12,800 of 8 KiB: 100 MiB) is counted over a "
        "fixed sample of about this many of its blocks (TABLESAMPLE SYSTEM, REPEATABLE), and the restore test "
        "counts the same blocks of the restored copy: cheap however large the table grows.",
    )
    count_tolerance_pct: float = Field(
        0.0, ge=0, le=100,
        description="Allowed difference of a restored row count from the recorded one, in percent. 0: exact. "
        "Writes that commit in the milliseconds between the count and the sentinel make a busy database "
        "differ slightly; raise this only if that happens.",
    )

    _check_schedules = field_validator("schedule")(_check_schedule)

    @field_validator("count_tables")
    @classmethod
    def _qualified(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _QUALIFIED.match(name):
                raise ValueError(f"{name!r} is not a schema-qualified table name (schema.table)")
        return value


class PartitionedTable(_Section):
    table: str = Field(description="schema.table, partitioned by range on created_at.")
    interval: Literal["monthly", "yearly"] = "monthly"
    premake: int = Field(3, ge=1, le=36, description="Future partitions kept ready.")
    retention_months: int | None = Field(
        None, ge=1, description="Detach and drop partitions older than this; unset: keep all."
    )

    @field_validator("table")
    @classmethod
    def _qualified(cls, value: str) -> str:
        if not _QUALIFIED.match(value):
            raise ValueError(f"{value!r} is not a schema-qualified table name (schema.table)")
        return value


class PartitionsConfig(_Section):
    """Monthly partition creation and retention of the large time-based tables.

    Reserved for the partition DAG, not built yet: validated, but nothing reads these keys today.
    """

    schedule: str = Field("0 3 1 * *", description="Cron of partition maintenance (UTC).")
    tables: list[PartitionedTable] = Field(
        description="Tables partitioned by range on created_at (table, interval, premake, retention_months).",
        default_factory=lambda: [
            PartitionedTable(table="fixia.notifications", interval="monthly", retention_months=12),
            PartitionedTable(table="fixia.payments", interval="monthly"),
            PartitionedTable(table="fixia.user_activity", interval="monthly", retention_months=6),
            PartitionedTable(table="fixia.reviews", interval="yearly"),
        ]
    )

    _check_schedules = field_validator("schedule")(_check_schedule)


class MatviewsConfig(_Section):
    """Nightly materialized-view refreshes.

    Reserved for the refresh DAG, not built yet: validated, but nothing reads these keys today.
    """

    schedule: str = Field("0 2 * * *", description="Cron of the nightly refresh (UTC).")
    views: list[str] = Field(
        description="Materialized views refreshed nightly (refreshed in dependency order).",
        default_factory=lambda: ["fixia.mv_professional_rankings", "fixia.mv_category_performance"]
    )

    _check_schedules = field_validator("schedule")(_check_schedule)


class MonitoringConfig(_Section):
    """Health thresholds: a value past one is reported as a problem.

    Reserved for the monitoring DAG, not built yet: validated, but nothing reads these keys today
    (WAL shipping reports the slot's retained WAL as `slot_retained_bytes` in its result).
    """

    schedule: str = Field("*/15 * * * *", description="Cron of health collection (UTC).")
    cache_hit_ratio_min: float = Field(0.90, ge=0, le=1, description="Buffer cache hit ratio below this is a problem.")
    slow_query_ms: int = Field(1000, ge=1, description="Mean execution time that counts as slow.")
    replication_lag_max_s: int = Field(60, ge=0, description="Replica replay lag above this is a problem.")
    slot_retained_wal_max_mib: int = Field(
        4096, ge=16, description="Alert when the pgops slot retains more WAL than this."
    )
    full_backup_max_age_hours: int = Field(26, ge=1, description="Newest valid full backup older than this is a problem.")
    wal_max_age_minutes: int = Field(90, ge=1, description="Newest archived WAL older than this is a problem.")

    _check_schedules = field_validator("schedule")(_check_schedule)


class WorkersConfig(_Section):
    """Where the tasks that keep state on their worker's disk run."""

    stateful_queue: str = Field(
        "pgops_stateful", min_length=1, max_length=256,
        description="Airflow queue of the tasks whose state lives on the worker: WAL shipping (the spool) and "
        "the restore test's prepare, verify and clean-up tasks (the scratch server). On the Celery executor "
        "run one worker serving it (`airflow celery worker --queues pgops_stateful`) on a host with the "
        "PostgreSQL binaries and a persistent disk for `backup.spool_dir` and "
        "`restore_verification.scratch_dir`; the local executors ignore queues.",
    )


class PgopsConfig(_Section):
    """The whole configuration."""

    repository: RepositoryConfig = Field(default_factory=RepositoryConfig)
    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    setup: SetupConfig = Field(default_factory=SetupConfig)
    backup: BackupConfig = Field(default_factory=BackupConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    encryption: EncryptionConfig = Field(default_factory=EncryptionConfig)
    restore: RestoreConfig = Field(default_factory=RestoreConfig)
    restore_verification: RestoreVerificationConfig = Field(
        default_factory=RestoreVerificationConfig
    )
    partitions: PartitionsConfig = Field(default_factory=PartitionsConfig)
    matviews: MatviewsConfig = Field(default_factory=MatviewsConfig)
    monitoring: MonitoringConfig = Field(default_factory=MonitoringConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)

    def resolve_path(self, value: str) -> Path:
        """A configured path, resolved against PGOPS_HOME when relative."""
        path = Path(value)
        return path if path.is_absolute() else project_home() / path


USE_DEFAULTS_ENV = "PGOPS_USE_DEFAULTS"


def default_config_path() -> Path:
    """Where the configuration is read from: ``$PGOPS_CONFIG``, else
    ``config/pgops.yaml`` under ``$PGOPS_HOME``."""
    return Path(os.environ.get("PGOPS_CONFIG") or project_home() / "config" / "pgops.yaml")


def describe_validation_error(exc: ValidationError, source: str) -> str:
    """One line per problem: key, value given, and what is allowed."""
    lines = [f"invalid pgops configuration in {source}:"]
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/configuration.md)"
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {key}: {message}{shown}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<memory>") -> PgopsConfig:
    """Validate a mapping (as read from YAML) into a :class:`PgopsConfig`."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pgops configuration in {source}: the top level must be a mapping")
    try:
        return PgopsConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source)) from exc


def load_config(path: str | os.PathLike[str] | None = None) -> PgopsConfig:
    """Read and validate the configuration file: ``path``, else :func:`default_config_path`.

    A missing file is a :class:`ConfigError` naming where pgops looked. Only with
    ``PGOPS_USE_DEFAULTS=1`` does a missing default file (none named by ``path`` or
    ``$PGOPS_CONFIG``) mean the embedded defaults; a file that exists is always read.
    """
    import yaml

    flag = os.environ.get(USE_DEFAULTS_ENV, "").strip().lower()
    if flag not in ("", "0", "1", "false", "true", "no", "yes"):
        raise ConfigError(f"{USE_DEFAULTS_ENV}={os.environ[USE_DEFAULTS_ENV]!r}: use 1 (the built-in defaults "
                          "when no configuration file exists) or 0")
    if path is not None:
        file, named = Path(path), "given on the command line"
    elif os.environ.get("PGOPS_CONFIG"):
        file, named = default_config_path(), "named by $PGOPS_CONFIG"
    else:
        file, named = default_config_path(), None
    if not file.exists():
        if named:
            raise ConfigError(f"pgops configuration file {file} ({named}) does not exist")
        if flag in ("1", "true", "yes"):
            return PgopsConfig()
        home = "" if "PGOPS_HOME" in os.environ else " (unset: the project checkout)"
        raise ConfigError(f"no pgops configuration: {file} does not exist ($PGOPS_CONFIG is unset, $PGOPS_HOME is "
                          f"{project_home()}{home}). Set PGOPS_CONFIG to the file, or {USE_DEFAULTS_ENV}=1 to "
                          "run with the built-in defaults (docs/configuration.md)")
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read pgops configuration {file}: {exc}") from exc
    return parse_config(data, str(file))


def render_docs() -> str:
    """docs/configuration.md, generated from the schema so it cannot drift from the code."""
    import json

    out = [
        "# pgops configuration",
        "",
        "Generated from `plugins/pgops/config.py` by `pgops config docs`; do not edit by hand.",
        "",
        "The file is `$PGOPS_CONFIG`, else `config/pgops.yaml` under `$PGOPS_HOME` (the project",
        "checkout), and it must exist: a missing file is an error naming where pgops looked.",
        "These defaults alone are the configuration only when asked for with",
        "`PGOPS_USE_DEFAULTS=1` and no file is there. Unknown keys are errors. Relative",
        "paths are resolved against `$PGOPS_HOME`. Secrets never go here: they live in Airflow",
        "connections, named by the `*_conn_id` keys.",
        "",
    ]
    for section, field in PgopsConfig.model_fields.items():
        model = field.annotation
        out += [f"## `{section}`", ""]
        if model.__doc__:
            out += [" ".join(model.__doc__.split()), ""]
        out += ["| key | default | constraints | meaning |", "|---|---|---|---|"]
        default_section = getattr(PgopsConfig(), section)
        for key, sub in model.model_fields.items():
            default = getattr(default_section, key)
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            elif isinstance(default, list):
                default = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in default]
            shown = json.dumps(default, ensure_ascii=False)
            limits = []
            for meta in sub.metadata:
                for attr, sign in (("ge", "≥"), ("le", "≤"), ("max_length", "max length")):
                    if getattr(meta, attr, None) is not None:
                        limits.append(f"{sign} {getattr(meta, attr)}")
            annotation = getattr(sub.annotation, "__args__", None)
            if getattr(sub.annotation, "__origin__", None) is Literal and annotation:
                limits.append("one of " + ", ".join(f"`{a}`" for a in annotation))
            description = (sub.description or "").replace("|", "\\|")
            out.append(f"| `{key}` | `{shown}` | {'; '.join(limits)} | {description} |")
        out.append("")
    return "\n".join(out)
