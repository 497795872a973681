"""Where shipped WAL lives in the repository, and how its keys are named.

Kept free of heavy imports: ``pgops wal-fetch`` runs once per WAL file during recovery,
so its start-up time is part of every restore.
"""

from __future__ import annotations

from pgops.backup import wal

#: the repository's identity document (see backup/catalog.py); here so wal-fetch can
#: tell "no such file" from "no such repository" without loading the catalog models
IDENTITY_KEY = "pgops.repository.json"
WAL_PREFIX = "wal/"
HISTORY_DIR = "wal/history/"
POINTS_DIR = "wal/points/"
BREAKS_DIR = "wal/breaks/"


def wal_dir(name: str) -> str:
    if wal.is_history_name(name):
        return HISTORY_DIR
    return f"{WAL_PREFIX}{name[:16]}/"


def wal_key(name: str, sha256: str) -> str:
    return f"{wal_dir(name)}{name}-{sha256}.zst"


def parse_wal_key(key: str) -> tuple[str, str]:
    """``wal/…/<name>-<sha256>.zst`` → (name, sha256)."""
    base = key.rsplit("/", 1)[-1].removesuffix(".zst")
    name, _, digest = base.rpartition("-")
    if not name or len(digest) != 64:
        raise ValueError(f"not a stored WAL key: {key}")
    return name, digest
