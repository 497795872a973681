"""The backup repository: one narrow interface, two backends (local directory, S3).

Nothing above this package knows which backend it talks to. Every object is either
wholly present or absent: the local backend writes to a temporary name and renames;
the S3 backend completes a multipart upload or aborts it.
"""

from pgops.repository.base import ObjectInfo, Repository

__all__ = ["ObjectInfo", "Repository", "open_repository"]


def __getattr__(name: str):
    # open_repository needs the typed configuration (pydantic); loading it lazily keeps
    # `pgops wal-fetch` on a local repository quick to start (it runs once per WAL file).
    if name == "open_repository":
        from pgops.repository.factory import open_repository

        return open_repository
    raise AttributeError(name)
