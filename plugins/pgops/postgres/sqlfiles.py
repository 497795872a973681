"""Load SQL from ``include/sql/``: all non-trivial SQL lives there, not in Python strings."""

from __future__ import annotations

import os
import re
from functools import lru_cache
from pathlib import Path

from pgops.errors import ConfigError

SQL_ROOT = Path(os.environ.get("PGOPS_SQL_DIR", Path(__file__).resolve().parents[3] / "include" / "sql"))

_STEP = re.compile(r"^-- step: (?P<name>[\w-]+)\s*$", re.MULTILINE)


@lru_cache(maxsize=None)
def load(name: str) -> str:
    """The text of ``include/sql/<name>``."""
    path = SQL_ROOT / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"SQL file {path} cannot be read: {exc}") from exc


def steps(name: str) -> list[tuple[str, str]]:
    """Split a file on ``-- step: <name>`` lines into ``(name, sql)`` pairs, in order.

    Text before the first step marker (the file's header comment) is dropped.
    """
    text = load(name)
    marks = list(_STEP.finditer(text))
    if not marks:
        raise ConfigError(f"SQL file {name} has no '-- step:' markers")
    out = []
    for i, mark in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        out.append((mark.group("name"), text[mark.end():end].strip()))
    return out
