"""Open the repository the configuration names."""

from __future__ import annotations

from urllib.parse import urlparse

from pgops.config import EncryptionConfig, RepositoryConfig
from pgops.repository.base import Repository

# botocore's "standard" mode retries 5xx, SlowDown/throttling, connection errors and
# timeouts with exponential back-off and jitter.
S3_RETRIES = {"max_attempts": 8, "mode": "standard"}
S3_TIMEOUTS = {"connect_timeout": 10, "read_timeout": 60}


def s3_client(aws_conn_id: str):
    """A boto3 S3 client from an Airflow aws connection (its extra may set
    ``endpoint_url`` and ``region_name``), with pgops' retry and timeout settings."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
    from botocore.config import Config

    config = Config(retries=S3_RETRIES, **S3_TIMEOUTS, s3={"addressing_style": "path"})
    return AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3", config=config).get_conn()


def open_repository(config: RepositoryConfig, encryption: EncryptionConfig | None = None) -> Repository:
    """The configured backend, wrapped in client-side encryption when that is enabled."""
    repo = _backend(config)
    if encryption is not None and encryption.enabled:
        from pgops.backup.walnames import IDENTITY_KEY
        from pgops.connections import get_connection
        from pgops.repository.encrypted import EncryptedRepository, parse_key

        key = parse_key(get_connection(encryption.key_conn_id).password, encryption.key_conn_id)
        # The identity document's format says whether version 1 objects may be read.
        repo = EncryptedRepository(repo, key, identity_key=IDENTITY_KEY)
    return repo


def _backend(config: RepositoryConfig) -> Repository:
    if config.scheme == "local":
        from pgops.repository.local import LocalRepository

        return LocalRepository(config.local_path())
    from pgops.repository.s3 import S3Repository

    parsed = urlparse(config.url)
    return S3Repository(
        s3_client(config.aws_conn_id),
        parsed.netloc,
        parsed.path.strip("/"),
        part_size=config.part_size_mib * 1024 * 1024,
        sse=config.sse,
        sse_kms_key_id=config.sse_kms_key_id,
    )
