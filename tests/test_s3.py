"""The S3 backend against a real SeaweedFS, and its error mapping against answers a healthy server never gives."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from engine.errors import BackendError, ObjectNotFound, Throttled
from engine.storage.s3 import S3Backend

from .servers import S3_ACCESS_KEY, S3_SECRET_KEY, SeaweedFS, free_port

MiB = 1 << 20


def test_prefixes_keep_pools_apart(s3_config: dict[str, Any]) -> None:
    one, two = S3Backend({**s3_config, "prefix": "one"}), S3Backend({**s3_config, "prefix": "two/"})
    one.put("cairn-pool.json", b"1")
    two.put("cairn-pool.json", b"22")
    assert list(one.list()) == [("cairn-pool.json", 1)] and list(two.list()) == [("cairn-pool.json", 2)]
    assert sorted(k for k, _ in S3Backend(s3_config).list()) == ["one/cairn-pool.json", "two/cairn-pool.json"]


def test_listing_past_one_page(s3_config: dict[str, Any]) -> None:
    """S3 lists 1,000 keys a page; the backend follows the pages."""
    s3 = S3Backend(s3_config)
    keys = [f"packs/{i:04}" for i in range(1010)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: s3.put(k, b"x"), keys))
    assert [k for k, _ in s3.list("packs/")] == keys
    assert s3.requests["list_objects_v2"] == 2


def test_big_packs_go_up_in_parts(s3_config: dict[str, Any]) -> None:
    s3 = S3Backend({**s3_config, "multipart_threshold": 8 * MiB, "part_size": 5 * MiB})
    small, big = os.urandom(8 * MiB), os.urandom(11 * MiB)
    s3.put("packs/small", small)
    assert s3.requests == {"put_object": 1}
    s3.put("packs/big", big)
    assert s3.requests["upload_part"] == 3 and s3.requests["complete_multipart_upload"] == 1
    assert s3.get("packs/big") == big and s3.get("packs/small") == small
    assert s3.properties.put_requests(len(big)) == 5


def test_checksums_only_when_required(s3_config: dict[str, Any]) -> None:
    s3 = S3Backend({**s3_config, "checksums": "when_required"})
    s3.put("k", b"v" * 1000)
    assert s3.get("k", 10, 3) == b"vvv"
    assert s3.client.meta.config.request_checksum_calculation == "when_required"


def test_credentials_from_the_standard_aws_variables(
    s3_config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    config = {k: v for k, v in s3_config.items() if k not in ("access_key", "secret_key")}
    s3 = S3Backend(config)
    s3.put("k", b"v")
    assert s3.get("k") == b"v"


def test_errors_say_what_is_wrong_and_whether_it_may_pass(s3_server: SeaweedFS, s3_config: dict[str, Any]) -> None:
    with pytest.raises(BackendError, match="access denied") as denied:
        S3Backend({**s3_config, "secret_key": "wrong"}).put("k", b"v")
    assert not denied.value.temporary
    with pytest.raises(BackendError, match="bucket does not exist") as no_bucket:
        S3Backend({**s3_config, "bucket": "no-such-bucket"}).get("k")
    assert not no_bucket.value.temporary and not isinstance(no_bucket.value, ObjectNotFound)
    with pytest.raises(ObjectNotFound):
        S3Backend(s3_config).get("absent")
    down = S3Backend({**s3_config, "endpoint": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(BackendError, match="Could not connect") as refused:
        down.stat("k")
    assert refused.value.temporary


class _Stub(BaseHTTPRequestHandler):
    """Answers each request with the next scripted (status, headers, body); records (method, path)."""

    protocol_version = "HTTP/1.1"  # answers botocore's Expect: 100-continue at once
    script: list[tuple[int, dict[str, str], bytes]] = []
    seen: list[tuple[str, str]] = []

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path))
        status, headers, body = self.script.pop(0) if self.script else (200, {}, b"")
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _answer

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def stub_s3(script: list[tuple[int, dict[str, str], bytes]]) -> Iterator[S3Backend]:
    """An S3 backend whose server answers from `script`: the faults a real server gives only under load."""
    _Stub.script, _Stub.seen = list(script), []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_port}"
        keys = {"access_key": "a", "secret_key": "b"}
        parts = {"multipart_threshold": 6 * MiB, "part_size": 5 * MiB}
        yield S3Backend({"kind": "s3", "bucket": "stub", "endpoint": endpoint, **keys, **parts})
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _error(code: str) -> bytes:
    return f"<Error><Code>{code}</Code><Message>{code}!</Message></Error>".encode()


def test_slowdown_and_retry_after_reach_the_filters() -> None:
    xml = {"Content-Type": "application/xml"}
    script = [
        (503, {**xml, "Retry-After": "3"}, _error("SlowDown")),
        (429, xml, _error("TooManyRequests")),
        (500, xml, _error("InternalError")),
        (400, xml, _error("InvalidArgument")),
    ]
    with stub_s3(script) as s3:
        with pytest.raises(Throttled) as slow:
            s3.put("k", b"v")
        assert slow.value.retry_after == 3.0 and slow.value.temporary
        with pytest.raises(Throttled) as many:
            s3.get("k")
        assert many.value.retry_after is None
        with pytest.raises(BackendError, match="500") as internal:
            s3.get("k")
        assert internal.value.temporary and not isinstance(internal.value, Throttled)
        with pytest.raises(BackendError, match="400") as bad:
            s3.get("k")
        assert not bad.value.temporary


def test_a_failed_multipart_upload_is_aborted() -> None:
    started = b"<InitiateMultipartUploadResult><UploadId>u1</UploadId></InitiateMultipartUploadResult>"
    script = [
        (200, {"Content-Type": "application/xml"}, started),
        (200, {"ETag": '"e1"'}, b""),
        (500, {"Content-Type": "application/xml"}, _error("InternalError")),
        (204, {}, b""),
    ]
    with stub_s3(script) as s3, pytest.raises(BackendError) as failed:
        s3.put("packs/big", os.urandom(12 * MiB))
    assert failed.value.temporary
    assert [m for m, _ in _Stub.seen] == ["POST", "PUT", "PUT", "DELETE"]
    assert "uploadId=u1" in _Stub.seen[-1][1]
