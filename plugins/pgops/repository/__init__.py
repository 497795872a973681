"""The backup repository: one narrow interface, two backends (local directory, S3).

Nothing above this package knows which backend it talks to. Every object is either
wholly present or absent: the local backend writes to a temporary name and renames;
the S3 backend completes a multipart upload or aborts it.
"""

from pgops.repository.base import ObjectInfo, Repository
from pgops.repository.factory import open_repository

__all__ = ["ObjectInfo", "Repository", "open_repository"]
