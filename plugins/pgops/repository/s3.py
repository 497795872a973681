"""A repository in an S3 bucket (any S3-compatible endpoint), through the Amazon provider.

S3's limits shape this module:

* a multipart upload has at most 10,000 parts of 5 MiB to 5 GiB. Streams of unknown
  length start at the configured part size and double it every 1,000 parts, so with
  the default 16 MiB the 10,000 parts hold about 12 TiB (more than 1 TB needs no
  knowledge of the length up front). At most two parts are in flight while the next
  one fills, and a part is built with one copy of exactly its size, so memory stays
  near four part sizes;
* a failed upload is aborted, so no orphaned parts stay billed; objects smaller than
  one part are a single PUT. Either way the object appears whole or not at all;
* DeleteObjects takes at most 1,000 keys and may succeed partially: every per-key
  error in its response is checked;
* 5xx, SlowDown, throttling, connection resets and timeouts are retried by botocore's
  standard retry mode with back-off; reads that break mid-stream resume from the
  byte they reached.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from pgops.errors import ConfigError, IntegrityError, NotFound, PgopsError, TransientError
from pgops.repository.base import ObjectInfo, PutResult, Repository, check_key

log = logging.getLogger(__name__)

MIN_PART = 5 * 1024 * 1024
MAX_PART = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000
PARTS_PER_SIZE_STEP = 1_000
DELETE_BATCH = 1_000
LIST_PAGE_KEYS = 1_000  # S3's own maximum per ListObjectsV2 page
READ_CHUNK = 1 << 20
READ_RESUMES = 5
UPLOADS_IN_FLIGHT = 2

# HTTP 400 answers that say the request did not get through whole, not that it is wrong:
# still transient once botocore's own retries are spent.
_TRANSIENT_CODES = {"RequestTimeout", "RequestTimeoutException", "IncompleteBody", "PriorRequestNotComplete",
                    "BadDigest", "InternalError", "SlowDown", "ServiceUnavailable"}

_CONFIG_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
    "InvalidBucketName", "AllAccessDisabled", "KMS.NotFoundException", "InvalidArgument",
}


def part_size_for(part_number: int, base: int) -> int:
    """Size of part ``part_number`` (1-based) of a stream of unknown length."""
    return min(MAX_PART, base * 2 ** ((part_number - 1) // PARTS_PER_SIZE_STEP))


def max_stream_size(base: int) -> int:
    """The largest stream that fits in 10,000 parts with this base part size."""
    return sum(part_size_for(n, base) for n in range(1, MAX_PARTS + 1))


def _map_error(exc: Exception, what: str) -> PgopsError:
    """Turn a botocore error into the pgops error that says what to do."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NotFound(f"{what}: not found")
        if code in _TRANSIENT_CODES:
            return TransientError(f"{what}: {code}: {exc}")
        if code in _CONFIG_CODES or status in (400, 401, 403):
            return ConfigError(f"{what}: {code or status}: {exc}")
        return TransientError(f"{what}: {code or status}: {exc}")
    if isinstance(exc, BotoCoreError):
        return TransientError(f"{what}: {exc}")
    return TransientError(f"{what}: {exc}")


class S3Repository(Repository):
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = 16 * 1024 * 1024,
        sse: str = "none",
        sse_kms_key_id: str | None = None,
    ) -> None:
        if not MIN_PART <= part_size <= MAX_PART:
            raise ConfigError(f"S3 part size {part_size} is outside 5 MiB..5 GiB")
        from pgops.memory import bound_large_allocations

        # Multi-MiB parts built and freed on upload threads fragment glibc's heap: peak
        # RSS grew with the database (283 MiB at 6 GB) until large blocks were mmapped.
        bound_large_allocations()
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.location = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._write_args: dict[str, str] = {}
        if sse != "none":
            self._write_args["ServerSideEncryption"] = sse
            if sse_kms_key_id:
                self._write_args["SSEKMSKeyId"] = sse_kms_key_id

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _unkey(self, full: str) -> str:
        return full[len(self.prefix) + 1:] if self.prefix else full

    # -- writing -------------------------------------------------------------------

    def put_stream(self, key: str, chunks: Iterable[bytes]) -> PutResult:
        full = self._key(key)
        digest = hashlib.sha256()
        size = 0
        pending: list[memoryview] = []  # chunks of the part being filled, joined once when it is full
        pending_size = 0
        upload_id: str | None = None
        parts: list[Future] = []
        pool: ThreadPoolExecutor | None = None
        slots = threading.Semaphore(UPLOADS_IN_FLIGHT)
        part_number = 0

        def take(n: int) -> bytes:
            """The first n pending bytes as one buffer: one copy of exactly n bytes. The
            chunk that straddles the cut stays pending as a view of its tail (no copy),
            and no other chunk is referenced once the part is built."""
            nonlocal pending, pending_size
            views, got = [], 0
            while got < n:
                view = pending.pop(0)
                if got + len(view) > n:
                    pending.insert(0, view[n - got:])
                    view = view[:n - got]
                views.append(view)
                got += len(view)
            pending_size -= got
            body = b"".join(views)
            views.clear()
            return body

        try:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                pending.append(memoryview(chunk))
                pending_size += len(chunk)
                while pending_size >= part_size_for(part_number + 1, self.part_size):
                    if upload_id is None:
                        upload_id = self._start_multipart(full)
                        pool = ThreadPoolExecutor(max_workers=UPLOADS_IN_FLIGHT, thread_name_prefix="s3-part")
                    part_number += 1
                    if part_number > MAX_PARTS:
                        raise ConfigError(f"{key}: stream exceeds {MAX_PARTS} parts")
                    body = take(part_size_for(part_number, self.part_size))
                    slots.acquire()
                    parts.append(pool.submit(self._upload_part, full, upload_id, part_number, body, slots))
                    del body
                    _raise_first_failure(parts)
            if upload_id is None:
                self._put_single(full, take(pending_size))
            else:
                if pending_size or part_number == 0:
                    part_number += 1
                    slots.acquire()
                    parts.append(pool.submit(self._upload_part, full, upload_id, part_number, take(pending_size), slots))
                etags = [f.result() for f in parts]
                self._complete(full, upload_id, etags)
        except BaseException as exc:
            if upload_id is not None:
                for f in parts:
                    f.cancel()
                if pool is not None:
                    pool.shutdown(wait=True)
                self._abort(full, upload_id)
            if isinstance(exc, PgopsError) or not isinstance(exc, Exception):
                raise
            from botocore.exceptions import BotoCoreError, ClientError

            if isinstance(exc, (BotoCoreError, ClientError)):
                raise _map_error(exc, f"upload of {self.location}/{key}") from exc
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        return PutResult(key, size, digest.hexdigest())

    def _put_single(self, full: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=full, Body=body, **self._write_args)

    def _start_multipart(self, full: str) -> str:
        resp = self.client.create_multipart_upload(Bucket=self.bucket, Key=full, **self._write_args)
        log.debug("multipart upload of %s started: %s", full, resp["UploadId"])
        return resp["UploadId"]

    def _upload_part(self, full: str, upload_id: str, number: int, body: bytes, slots: threading.Semaphore) -> dict:
        try:
            resp = self.client.upload_part(
                Bucket=self.bucket, Key=full, UploadId=upload_id, PartNumber=number, Body=body
            )
            return {"PartNumber": number, "ETag": resp["ETag"]}
        finally:
            slots.release()

    def _complete(self, full: str, upload_id: str, etags: list[dict]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=full, UploadId=upload_id, MultipartUpload={"Parts": etags}
        )

    def _abort(self, full: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            log.warning("aborted multipart upload of s3://%s/%s", self.bucket, full)
        except Exception:  # the original failure matters more; say what may be left
            log.exception(
                "could not abort multipart upload %s of s3://%s/%s: its parts may remain until "
                "a lifecycle rule (AbortIncompleteMultipartUpload) removes them",
                upload_id, self.bucket, full,
            )

    # -- reading -------------------------------------------------------------------

    def get_stream(self, key: str, start: int = 0, length: int | None = None) -> Iterator[bytes]:
        full = self._key(key)
        first = self._open(full, key, start, length)  # NotFound raised here, before iteration
        return self._read(full, key, start, length, first)

    def _open(self, full: str, key: str, start: int, length: int | None):
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": full}
        if start or length is not None:
            end = "" if length is None else str(start + length - 1)
            kwargs["Range"] = f"bytes={start}-{end}"
        try:
            return self.client.get_object(**kwargs)["Body"]
        except Exception as exc:
            raise _map_error(exc, f"read of {self.location}/{key}") from exc

    def _read(self, full: str, key: str, start: int, length: int | None, body) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError as Urllib3Error

        offset = start
        resumes = 0
        while True:
            try:
                for chunk in body.iter_chunks(READ_CHUNK):
                    offset += len(chunk)
                    yield chunk
                return
            except (BotoCoreError, Urllib3Error, OSError) as exc:
                resumes += 1
                if resumes > READ_RESUMES:
                    raise TransientError(f"read of {self.location}/{key} broke {resumes} times: {exc}") from exc
                log.warning("read of %s/%s broke at byte %d (%s); resuming", self.location, key, offset, exc)
                remaining = None if length is None else length - (offset - start)
                if remaining == 0:
                    return
                body = self._open(full, key, offset, remaining)

    # -- listing and deleting ------------------------------------------------------

    def list(self, prefix: str = "") -> list[ObjectInfo]:
        """Every page of the listing, or an error: a listing that stopped early would
        make WAL look absent and backups look missing. A page that fails (after
        botocore's retries) raises, naming the prefix and the page; so does a page that
        says more keys follow without saying where they continue."""
        if ".." in prefix.split("/") or prefix.startswith("/"):
            raise ConfigError(f"invalid repository prefix {prefix!r}")
        full_prefix = f"{self.prefix}/{prefix}" if self.prefix else prefix
        where = f"listing of {self.location}/{prefix}"
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": full_prefix, "MaxKeys": LIST_PAGE_KEYS}
        out: list[ObjectInfo] = []
        for page_number in itertools.count(1):
            try:
                page = self.client.list_objects_v2(**kwargs)
            except Exception as exc:
                mapped = _map_error(exc, f"{where} (page {page_number}, after {len(out)} keys)")
                if isinstance(mapped, NotFound):  # a listing finds nothing or fails; a 404 is a wrong bucket
                    mapped = ConfigError(f"{where}: {exc}")
                raise mapped from exc
            out += [ObjectInfo(self._unkey(obj["Key"]), obj["Size"], obj.get("LastModified"))
                    for obj in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                break
            if not page.get("NextContinuationToken"):
                raise IntegrityError(f"{where}: page {page_number} says more keys follow but gives no "
                                     f"continuation token; refusing to treat the {len(out)} keys so far as all")
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
        return sorted(out, key=lambda o: o.key)

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:
            mapped = _map_error(exc, f"lookup of {self.location}/{key}")
            if isinstance(mapped, NotFound):
                return False
            raise mapped from exc

    def abort_incomplete(self, older_than) -> list[str]:
        """Abort multipart uploads under this prefix initiated before ``older_than``."""
        aborted = []
        prefix = f"{self.prefix}/" if self.prefix else ""
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] < older_than:
                        self._abort(upload["Key"], upload["UploadId"])
                        aborted.append(f"{upload['Key']} ({upload['UploadId']})")
        except Exception as exc:
            raise _map_error(exc, f"listing of unfinished uploads in {self.location}") from exc
        return aborted

    def delete(self, keys: Iterable[str]) -> None:
        batch: list[str] = []
        for key in keys:
            batch.append(self._key(key))
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch)
                batch = []
        if batch:
            self._delete_batch(batch)

    def _delete_batch(self, batch: list[str]) -> None:
        try:
            resp = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
        except Exception as exc:
            raise _map_error(exc, f"delete of {len(batch)} objects from {self.location}") from exc
        errors = resp.get("Errors") or []
        if errors:
            named = ", ".join(f"{self._unkey(e['Key'])} ({e.get('Code')}: {e.get('Message')})" for e in errors[:20])
            raise TransientError(f"{len(errors)} of {len(batch)} objects were not deleted from {self.location}: {named}")


def _raise_first_failure(parts: list[Future]) -> None:
    for f in parts:
        if f.done() and f.exception() is not None:
            raise f.exception()
