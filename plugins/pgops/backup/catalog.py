"""Repository layout and the backup catalog.

::

    pgops.repository.json              which cluster this repository belongs to, its format
    backups/<id>/data.tar.zst          pg_basebackup's tar stream, framed zstd
    backups/<id>/data.index.json       frame index (sizes and sha256 of every frame)
    backups/<id>/backup_manifest.zst   PostgreSQL's backup_manifest
    backups/<id>/backup.json           the metadata document: written LAST

``backup.json`` is the commit marker: a backup without it does not exist for listing,
restore or retention (it is "incomplete", and pruned after a grace period). Deletion
removes the data objects first and ``backup.json`` last, so an interrupted prune leaves
an entry the next prune plans again and finishes, never data nobody accounts for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from pgops.backup.walnames import IDENTITY_KEY
from pgops.errors import IntegrityError, NotFound, UnsafeOperation
from pgops.repository.base import Repository

BACKUPS = "backups/"
MARKER = "backup.json"
FORMAT = 1


def backup_prefix(backup_id: str) -> str:
    return f"{BACKUPS}{backup_id}/"


def backup_key(backup_id: str, name: str) -> str:
    return f"{BACKUPS}{backup_id}/{name}"


class StoredObject(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    size: int
    sha256: str


class BackupRecord(BaseModel):
    """The metadata document of one full backup (``backup.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = FORMAT
    id: str
    label: str
    status: Literal["complete"] = "complete"
    system_identifier: str
    pg_version: str
    server_version_num: int
    timeline: int
    start_lsn: str
    checkpoint_lsn: str
    stop_lsn: str
    start_wal_segment: str
    stop_wal_segment: str
    start_time: datetime
    stop_time: datetime
    raw_size: int
    stored_size: int
    compression: dict
    encryption_key_id: str | None = None
    objects: dict[str, StoredObject]
    pgops_version: str
    #: the sentinel committed just before the backup started (backup/sentinel.py)
    sentinel: dict | None = None
    #: why no sentinel could be written (the backup went on without it)
    sentinel_error: str | None = None

    def to_json(self) -> bytes:
        return (json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n").encode()


#: the repository's format, in its identity document. 2: stored WAL keys carry the
#: repository's name digest (``walnames.name_digest``: keyed when encrypted) and an
#: encrypted repository holds only version 2 objects (``repository/encrypted.py``).
#: 1: written by pgops before; still read (its names carry the plain sha256 and its
#: objects may be version 1), and written to in format 2's way from now on.
REPOSITORY_FORMAT = 2


class RepositoryIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1, 2] = REPOSITORY_FORMAT
    system_identifier: str
    pg_version: str


def check_identity(repo: Repository, system_identifier: str, pg_version: str) -> None:
    """Claim an empty repository for this cluster, or check that it is ours.

    A repository holding another cluster's backups (a different system identifier or
    major version) is refused: mixing WAL of two clusters makes both unrestorable.
    """
    try:
        data = json.loads(repo.get_bytes(IDENTITY_KEY))
        identity = RepositoryIdentity.model_validate(data)
    except NotFound:
        repo.put_bytes(IDENTITY_KEY, RepositoryIdentity(
            system_identifier=system_identifier, pg_version=pg_version).model_dump_json(indent=2).encode())
        return
    except (ValueError, ValidationError) as exc:
        raise IntegrityError(f"{repo.location}/{IDENTITY_KEY} is unreadable: {exc}") from exc
    if identity.system_identifier != system_identifier:
        raise UnsafeOperation(
            f"repository {repo.location} belongs to the cluster with system identifier "
            f"{identity.system_identifier}, but the database has {system_identifier} (was it re-created "
            "or restored?). Use a new repository location for the new cluster; keep the old one until "
            "its backups expire."
        )
    if identity.pg_version != pg_version:
        raise UnsafeOperation(
            f"repository {repo.location} holds PostgreSQL {identity.pg_version} backups; the database runs "
            f"{pg_version}. After a major upgrade, back up to a new repository location."
        )


@dataclass(frozen=True)
class CatalogEntry:
    """A backup directory as found in the repository."""

    backup_id: str
    record: BackupRecord | None  # None: incomplete (no backup.json) or unreadable
    problem: str | None  # why record is None, when backup.json exists but is unreadable
    keys: tuple[str, ...]
    newest_modified: datetime | None


def read_catalog(repo: Repository) -> list[CatalogEntry]:
    """Every backup directory, oldest first, with its parsed metadata when it has some."""
    by_id: dict[str, list] = {}
    for obj in repo.list(BACKUPS):
        parts = obj.key.split("/")
        if len(parts) < 3:
            continue
        by_id.setdefault(parts[1], []).append(obj)
    entries = []
    for backup_id in sorted(by_id):
        objs = by_id[backup_id]
        keys = tuple(o.key for o in objs)
        newest = max((o.modified for o in objs if o.modified), default=None)
        record = problem = None
        marker = backup_key(backup_id, MARKER)
        if marker in keys:
            try:
                record = BackupRecord.model_validate(json.loads(repo.get_bytes(marker)))
                if record.id != backup_id:
                    raise ValueError(f"its id is {record.id!r}")
            except NotFound:
                problem = "backup.json vanished while reading"
            except (ValueError, ValidationError) as exc:
                record = None
                problem = f"backup.json is unreadable: {exc}"
        entries.append(CatalogEntry(backup_id, record, problem, keys, newest))
    return entries
