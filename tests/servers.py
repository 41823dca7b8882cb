"""Real servers for the suite, started on loopback: PostgreSQL and SeaweedFS (S3)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.storage.s3 import S3Backend

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(*cmd: str) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else list(cmd)


@contextmanager
def postgres() -> Iterator[tuple[str, int]]:
    """A throwaway PostgreSQL server; yields (host, port). initdb refuses root, so it runs as postgres."""
    root = Path(tempfile.mkdtemp(prefix="cairn-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"),
        check=True,
        capture_output=True,
    )
    opts = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c fsync=off"
    subprocess.run(
        _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start"),
        check=True,
        capture_output=True,
    )
    try:
        _wait_port(port)
        yield "127.0.0.1", port
    finally:
        subprocess.run(
            _as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


S3_ACCESS_KEY, S3_SECRET_KEY = "cairn-test", "cairn-test-secret"


@dataclass
class SeaweedFS:
    """One `weed mini` (master, volume, filer and S3 in one process) on loopback ports in a temp directory.

    `kill()` and `start()` stop it hard and bring it back on the same ports and data.
    """

    root: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    _client: Any = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def config(self, bucket: str, **extra: object) -> dict[str, object]:
        """A pool's backend configuration for `bucket` on this server."""
        return {"kind": "s3", "endpoint": self.endpoint, "bucket": bucket, "access_key": S3_ACCESS_KEY,
                "secret_key": S3_SECRET_KEY, **extra}  # fmt: skip

    def create_bucket(self, name: str) -> None:
        if self._client is None:
            self._client = S3Backend(self.config("unused")).client
        self._client.create_bucket(Bucket=name)

    def _command(self) -> list[str]:
        p = self.ports
        flags = {
            "dir": self.root / "data", "ip": "127.0.0.1", "ip.bind": "127.0.0.1",
            "master.port": p["master"], "master.port.grpc": p["master_grpc"],
            "volume.port": p["volume"], "volume.port.grpc": p["volume_grpc"],
            "filer.port": p["filer"], "filer.port.grpc": p["filer_grpc"],
            "s3.port": p["s3"], "s3.port.grpc": p["s3_grpc"],
            # The admin server's workers dial its gRPC port at the default offset
            # of 10000 whatever is configured, so that port is chosen free too.
            "admin.port": p["admin"], "admin.ui": "false",
            "s3.port.iceberg": 0, "s3.port.lance": 0, "webdav": "false", "master.telemetry": "false",
            "s3.config": self.root / "s3.json", "filer.localSocket": self.root / "filer.sock",
            "s3.localSocket": self.root / "s3.sock", "master.volumeSizeLimitMB": 64,
        }  # fmt: skip
        weed = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
        return [weed, "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def start(self) -> None:
        with open(self.root / "log", "ab") as log:
            self.proc = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.root)
        try:
            _wait_http(self.ports["s3"])
        except BaseException:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@contextmanager
def seaweedfs() -> Iterator[SeaweedFS]:
    """A throwaway SeaweedFS with one identity (S3_ACCESS_KEY) allowed everything."""
    root = Path(tempfile.mkdtemp(prefix="cairn-weed-"))
    (root / "data").mkdir()
    identity = {"name": "cairn", "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    names = ["master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc"]
    server = SeaweedFS(root, _free_ports(names))
    server.ports["admin"] = _free_port_pair(10000)
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(root, ignore_errors=True)


def _free_ports(names: list[str]) -> dict[str, int]:
    """Distinct free ports: each is held open until all are chosen."""
    socks = []
    try:
        for _ in names:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return {name: int(s.getsockname()[1]) for name, s in zip(names, socks, strict=True)}
    finally:
        for s in socks:
            s.close()


def _free_port_pair(offset: int) -> int:
    """A free port p such that p + offset is free too."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except (OSError, OverflowError):
                continue
        return port
    raise RuntimeError("no free pair of loopback ports")


def _wait_http(port: int, timeout: float = 30) -> None:
    """Until the S3 port answers HTTP (any status: the listener is up before the filer is)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                if s.recv(12).startswith(b"HTTP/1."):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no S3 server answers on port {port}")


def _wait_port(port: int, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")
