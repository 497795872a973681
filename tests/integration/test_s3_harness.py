"""The S3-compatible server the repository tests run against: real HTTP on loopback."""

from __future__ import annotations

import boto3


def test_moto_server_speaks_s3_multipart_on_loopback(s3_endpoint, monkeypatch):
    assert s3_endpoint.startswith("http://127.0.0.1:")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket="harness")
    upload = s3.create_multipart_upload(Bucket="harness", Key="k")
    part = s3.upload_part(Bucket="harness", Key="k", UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 10)
    s3.complete_multipart_upload(
        Bucket="harness", Key="k", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]})
    assert s3.get_object(Bucket="harness", Key="k")["Body"].read() == b"x" * 10
