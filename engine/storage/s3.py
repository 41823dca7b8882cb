"""A backend on any S3-compatible service (AWS, Ceph RGW, MinIO, SeaweedFS) through boto3.

Configuration (the pool's backend JSON): `bucket` (required), `prefix`,
`endpoint`, `region`, `path_style`, `access_key` and `secret_key` (else the
standard AWS variables and files), `connections`, `multipart_threshold`,
`part_size`, `connect_timeout`, `read_timeout`, `checksums` ("when_supported",
the default, or "when_required" for services that refuse botocore's CRC
trailers). botocore's own retries are
off: the retry and ratelimit filters decide, from the errors mapped here.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    SSLError,
)

from ..errors import BackendError, InvalidArgument, ObjectNotFound, Throttled
from .backend import Properties, check_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MiB = 1 << 20
# Packs seal at about 16 MiB (up to 20 with a 4 MiB chunk on top): below 32 MiB
# a pack is one PUT, which keeps the request count near 64 per GiB.
MULTIPART_THRESHOLD = 32 * MiB
PART_SIZE = 16 * MiB
MIN_PART_SIZE = 5 * MiB  # S3 refuses smaller parts, except the last
CONNECTIONS = 4  # 4 uploads of 16 MiB in flight saturate a 1 Gbit/s link at 20 ms RTT

_THROTTLE_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
_DENIED_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_KEYS = {
    "kind", "bucket", "prefix", "endpoint", "region", "path_style", "access_key", "secret_key",
    "connections", "multipart_threshold", "part_size", "connect_timeout", "read_timeout", "checksums", "filters",
}  # fmt: skip


class S3Backend:
    """Thread-safe: boto3 clients are; `_lock` guards `requests`, the count of requests per API call."""

    def __init__(self, config: dict[str, Any]):
        _check_config(config)
        self.bucket: str = config["bucket"]
        self.prefix: str = config.get("prefix", "").strip("/")
        self.endpoint: str | None = config.get("endpoint")
        self._properties = Properties(
            connections=int(config.get("connections", CONNECTIONS)),
            consistent_listing=True,  # S3 has been strongly consistent since 2020; so are RGW, MinIO, SeaweedFS
            local=False,
            multipart_threshold=int(config.get("multipart_threshold", MULTIPART_THRESHOLD)),
            part_size=int(config.get("part_size", PART_SIZE)),
        )
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.client = self._make_client(config)

    def _make_client(self, config: dict[str, Any]) -> S3Client:
        path_style = config.get("path_style", self.endpoint is not None)
        session = boto3.session.Session(
            aws_access_key_id=config.get("access_key"),
            aws_secret_access_key=config.get("secret_key"),
            region_name=config.get("region", "us-east-1"),
        )
        botocore_config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if path_style else "auto"},
            # Uploads and prefetches each run `connections` workers; reads from
            # restores and the mount come on top, so twice that plus two.
            max_pool_connections=2 * self._properties.connections + 2,
            retries={"total_max_attempts": 1},
            connect_timeout=float(config.get("connect_timeout", 10)),
            read_timeout=float(config.get("read_timeout", 60)),
            request_checksum_calculation=config.get("checksums", "when_supported"),
            response_checksum_validation=config.get("checksums", "when_supported"),
        )
        return session.client("s3", endpoint_url=self.endpoint, config=botocore_config)

    @property
    def properties(self) -> Properties:
        return self._properties

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _count(self, call: str) -> None:
        with self._lock:
            self.requests[call] += 1

    def put(self, key: str, data: bytes | memoryview) -> None:
        name = self._key(key)
        with self._errors("write", key):
            if self._properties.put_requests(len(data)) > 1:
                self._put_parts(name, memoryview(data))
            else:
                self._count("put_object")
                self.client.put_object(Bucket=self.bucket, Key=name, Body=bytes(data))

    def _put_parts(self, name: str, view: memoryview) -> None:
        """A multipart upload; aborted on failure so that no parts linger (and cost)."""
        self._count("create_multipart_upload")
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            step = self._properties.part_size
            for number, start in enumerate(range(0, len(view), step), 1):
                self._count("upload_part")
                body = bytes(view[start : start + step])
                reply = self.client.upload_part(
                    Bucket=self.bucket, Key=name, UploadId=upload_id, PartNumber=number, Body=body
                )
                parts.append({"ETag": reply["ETag"], "PartNumber": number})
            self._count("complete_multipart_upload")
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._count("abort_multipart_upload")
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
            raise

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        name = self._key(key)
        if length == 0:  # S3 has no empty range; the object must still exist
            if self.stat(key) is None:
                raise ObjectNotFound(f"no object {key} in {self.describe()}")
            return b""
        span = "" if length is None else str(offset + length - 1)
        wanted = f"bytes={offset}-{span}" if offset or length is not None else ""
        with self._errors("read", key):
            self._count("get_object")
            try:
                if wanted:
                    reply = self.client.get_object(Bucket=self.bucket, Key=name, Range=wanted)
                else:
                    reply = self.client.get_object(Bucket=self.bucket, Key=name)
            except ClientError as e:
                if _status(e) == 416:  # a range past the end reads nothing, as a file does
                    return b""
                raise
            return reply["Body"].read()

    def stat(self, key: str) -> int | None:
        name = self._key(key)
        with self._errors("stat", key):
            self._count("head_object")
            try:
                return int(self.client.head_object(Bucket=self.bucket, Key=name)["ContentLength"])
            except ClientError as e:
                if _status(e) == 404 and _code(e) in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise

    def delete(self, key: str) -> None:
        name = self._key(key)
        with self._errors("delete", key):
            self._count("delete_object")
            self.client.delete_object(Bucket=self.bucket, Key=name)

    def list(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        root = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root + prefix)
        with self._errors("list", prefix or "/"):
            for page in pages:
                self._count("list_objects_v2")
                for obj in page.get("Contents", []):
                    yield obj["Key"][len(root) :], int(obj["Size"])

    def describe(self) -> str:
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"s3:{where} at {self.endpoint or 'AWS'}"

    @contextlib.contextmanager
    def _errors(self, what: str, key: str) -> Iterator[None]:
        """Turn botocore's errors into the engine's, which say whether they are temporary."""
        try:
            yield
        except ClientError as e:
            raise _client_error(e, f"cannot {what} {key} in {self.describe()}") from e
        except (NoCredentialsError, PartialCredentialsError) as e:
            raise BackendError(f"no usable S3 credentials for {self.describe()}: {e}") from e
        except SSLError as e:  # a bad certificate does not heal by retrying
            raise BackendError(f"TLS failed for {self.describe()}: {e}") from e
        except (ConnectionError, HTTPClientError, IncompleteReadError, ChecksumError, FlexibleChecksumError) as e:
            raise BackendError(f"cannot {what} {key} in {self.describe()}: {e}", temporary=True) from e
        except BotoCoreError as e:
            raise BackendError(f"cannot {what} {key} in {self.describe()}: {e}") from e


def _status(e: ClientError) -> int:
    return int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _code(e: ClientError) -> str:
    return str(e.response.get("Error", {}).get("Code", ""))


def _client_error(e: ClientError, context: str) -> BackendError:
    status, code = _status(e), _code(e)
    message = e.response.get("Error", {}).get("Message", "") or code
    if status in (429, 503) or code in _THROTTLE_CODES:
        headers = e.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return Throttled(f"{context}: the service asks to slow down ({code})", retry_after=_seconds(headers))
    if code == "NoSuchBucket":
        return BackendError(f"{context}: the bucket does not exist")
    if status == 404:
        return ObjectNotFound(f"{context}: no such object")
    if status == 403 or code in _DENIED_CODES:
        return BackendError(f"{context}: access denied ({code}); check the credentials and the bucket's policy")
    return BackendError(f"{context}: {status} {message}", temporary=status >= 500 or status == 408)


def _seconds(headers: dict[str, str]) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare from S3 services and treated as absent."""
    value = headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _check_config(config: dict[str, Any]) -> None:
    unknown = set(config) - _KEYS
    if unknown:
        raise InvalidArgument(f"unknown S3 settings: {', '.join(sorted(unknown))}")
    if not isinstance(config.get("bucket"), str) or not config["bucket"]:
        raise InvalidArgument("an S3 pool needs a bucket")
    for name in ("connections", "multipart_threshold", "part_size"):
        if name in config and (not isinstance(config[name], int) or config[name] < 1):
            raise InvalidArgument(f"S3 setting {name} must be a positive integer")
    if config.get("checksums", "when_supported") not in ("when_supported", "when_required"):
        raise InvalidArgument('S3 setting checksums is "when_supported" or "when_required"')
    if config.get("part_size", PART_SIZE) < MIN_PART_SIZE:
        raise InvalidArgument(f"S3 setting part_size must be at least {MIN_PART_SIZE} bytes")
