"""The one exception hierarchy of pgops.

How Airflow treats each (see :func:`pgops.orchestration.retry_policy`):

* :class:`ConfigError`, :class:`UnsafeOperation` and :class:`IntegrityError` fail the
  task at once, without retry: retrying cannot fix a bad setting, a refused operation
  or a checksum mismatch, and a retry could hide it.
* :class:`TransientError` lets Airflow retry with its usual back-off.

Every ``PgopsError`` message says what went wrong and where, so the log line alone is
enough for on-call. Always ``raise ... from exc`` so the driver error stays attached.
"""

from __future__ import annotations


class PgopsError(Exception):
    """Base class of every error pgops raises on purpose."""

    exit_code = 1


class ConfigError(PgopsError):
    """A setting, parameter or connection is missing or invalid. Not retried."""

    exit_code = 2


class UnsafeOperation(PgopsError):
    """pgops refuses to act because acting could lose or corrupt data. Not retried."""

    exit_code = 3


class IntegrityError(PgopsError):
    """Stored data is not what it should be (checksum, gap, unreadable catalog). Not retried."""

    exit_code = 4


class TransientError(PgopsError):
    """A failure that may pass (network, timeout, server restarting). Retried by Airflow."""

    exit_code = 75  # EX_TEMPFAIL


class NotFound(IntegrityError):
    """A requested object does not exist in the repository.

    An integrity problem when something needed it (a restore, a verify); callers for
    whom absence is normal (``wal-fetch`` at the end of the archive) catch it.
    """
