from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pgops.repository.s3 import MAX_PART, MAX_PARTS, MIN_PART, max_stream_size, part_size_for

MIB = 1024 * 1024
TB = 10**12


def test_default_part_size_carries_more_than_a_terabyte():
    assert max_stream_size(16 * MIB) > 10 * TB
    assert max_stream_size(5 * MIB) > TB  # even the smallest allowed part size


@given(base=st.integers(MIN_PART, MAX_PART), n=st.integers(1, MAX_PARTS - 1))
def test_part_sizes_are_legal_and_never_shrink(base, n):
    assert MIN_PART <= part_size_for(n, base) <= MAX_PART
    assert part_size_for(n + 1, base) >= part_size_for(n, base)


class _RecordingClient:
    """Just enough of boto3's S3 client to see the parts put_stream builds."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.single: bytes | None = None

    def create_multipart_upload(self, **kw):
        return {"UploadId": "u1"}

    def upload_part(self, *, PartNumber, Body, **kw):
        assert isinstance(Body, bytes)
        self.parts[PartNumber] = Body
        return {"ETag": f"e{PartNumber}"}

    def complete_multipart_upload(self, *, MultipartUpload, **kw):
        assert [p["PartNumber"] for p in MultipartUpload["Parts"]] == sorted(self.parts)

    def put_object(self, *, Body, **kw):
        self.single = Body


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(0, 3 * MIB), max_size=12))
def test_parts_are_cut_at_exact_sizes_from_chunks_of_any_size(sizes):
    import hashlib

    from pgops.repository.s3 import S3Repository

    chunks = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    data = b"".join(chunks)
    client = _RecordingClient()
    result = S3Repository(client, "b", part_size=MIN_PART).put_stream("k", iter(chunks))
    assert result.size == len(data) and result.sha256 == hashlib.sha256(data).hexdigest()
    if len(data) < MIN_PART:
        assert client.single == data and not client.parts
    else:
        bodies = [client.parts[n] for n in sorted(client.parts)]
        assert b"".join(bodies) == data
        assert all(len(b) == MIN_PART for b in bodies[:-1]) and 0 < len(bodies[-1]) <= MIN_PART


def _client_error(code: str, status: int):
    from botocore.exceptions import ClientError

    return ClientError({"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "PutObject")


def test_s3_errors_map_to_what_the_operator_should_do():
    from pgops.errors import ConfigError, NotFound, TransientError
    from pgops.repository.s3 import _map_error

    # A request that did not arrive whole is worth retrying, though S3 answers 400.
    for code in ("RequestTimeout", "IncompleteBody", "BadDigest"):
        assert isinstance(_map_error(_client_error(code, 400), "put k"), TransientError), code
    for code, status in (("AccessDenied", 403), ("NoSuchBucket", 404), ("InvalidArgument", 400),
                         ("MalformedXML", 400)):
        assert isinstance(_map_error(_client_error(code, status), "put k"), ConfigError), code
    assert isinstance(_map_error(_client_error("NoSuchKey", 404), "get k"), NotFound)
    assert isinstance(_map_error(_client_error("InternalError", 500), "put k"), TransientError)
