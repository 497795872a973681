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


def wal_key(name: str, digest: str) -> str:
    """The key of WAL file ``name`` whose :func:`name_digest` is ``digest``."""
    return f"{wal_dir(name)}{name}-{digest}.zst"


def name_digest(repo, sha256_hex: str) -> str:
    """The digest a stored WAL file's key carries, for a file with this sha256.

    The sha256 itself, as pgBackRest's names do; but an encrypted repository's names
    must not tell which segments equal known ones, so there it is the repository's own
    keyed digest of the sha256 (``EncryptedRepository.name_digest``). Equal files get
    equal names either way, so a rerun sees what is already stored.
    """
    keyed = getattr(repo, "name_digest", None)
    return sha256_hex if keyed is None else keyed(sha256_hex)


def digest_matches(repo, named: str, sha256_hex: str) -> bool:
    """Whether ``named``, the digest in a stored key, is that of a file with this sha256
    (an encrypted repository of format 1 also has names with the plain sha256)."""
    matches = getattr(repo, "digest_matches", None)
    return named == sha256_hex if matches is None else matches(named, sha256_hex)


def parse_wal_key(key: str) -> tuple[str, str]:
    """``wal/…/<name>-<digest>.zst`` → (name, digest); see :func:`name_digest`."""
    base = key.rsplit("/", 1)[-1].removesuffix(".zst")
    name, _, digest = base.rpartition("-")
    if not name or len(digest) != 64:
        raise ValueError(f"not a stored WAL key: {key}")
    return name, digest
