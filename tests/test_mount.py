"""The FUSE mount, mounted for real and driven with stock rsync, cp, find and stat."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .test_backup_restore import cairn
from .trees import make_tree, rsync_differences

CAIRN = [sys.executable, "-c", "from appliance.cli import main; main()"]


class Mounted:
    def __init__(self, data: Path, mountpoint: Path, log: Path):
        self.data, self.path, self.log = data, mountpoint, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [*CAIRN, "--data", str(self.data), "mount", str(self.path)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the mount did not come up:\n{self.log.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)
        if sig == signal.SIGTERM:
            assert self.proc.returncode == 0, self.log.read_text()
            assert not os.path.ismount(self.path)

    def assert_clean_log(self) -> None:
        text = self.log.read_text()
        assert "Traceback" not in text and "ERROR" not in text, text


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Mounted]:
    m = Mounted(tmp_path / "data", tmp_path / "mnt", tmp_path / "mount.log")
    m.path.mkdir()
    m.start()
    try:
        yield m
    finally:
        if m.proc is not None and m.proc.poll() is None:
            m.stop()
        subprocess.run(["fusermount3", "-u", "-z", str(m.path)], capture_output=True)
    m.assert_clean_log()


def rsync(src: Path, dest: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["rsync", "-aHAXS", "--numeric-ids", "--delete", *extra, f"{src}/", f"{dest}/"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip


def test_rsync_into_the_mount_and_snapshot(tmp_path: Path, mounted: Mounted) -> None:
    src = tmp_path / "src"
    make_tree(src)
    m = mounted.path
    os.mkdir(m / "h1")
    assert sorted(os.listdir(m / "h1")) == ["current", "snapshots"]
    rsync(src, m / "h1" / "current")
    os.mkdir(m / "h1" / "snapshots" / "one")
    assert os.readlink(m / "h1" / "snapshots" / "latest") == "one"
    assert rsync_differences(src, m / "h1" / "snapshots" / "one") == []
    assert rsync_differences(src, m / "h1" / "current") == []

    # A second rsync of a changed tree sends only what changed.
    (src / "size-100").write_bytes(b"changed content")
    out = rsync(src, m / "h1" / "current", "--itemize-changes")
    sent = [line for line in out.stdout.splitlines() if line.startswith(">f")]
    assert [line.split(" ", 1)[1] for line in sent] == ["size-100"]
    os.mkdir(m / "h1" / "snapshots" / "two")
    assert rsync_differences(src, m / "h1" / "snapshots" / "two") == []
    assert (m / "h1" / "snapshots" / "one" / "size-100").stat().st_size == 100

    # Snapshots are read-only; rmdir deletes one; a source with snapshots stays.
    with pytest.raises(OSError) as e:
        (m / "h1" / "snapshots" / "one" / "new").write_bytes(b"x")
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.rmdir(m / "h1")
    assert e.value.errno == errno.ENOTEMPTY
    os.rmdir(m / "h1" / "snapshots" / "one")
    assert sorted(os.listdir(m / "h1" / "snapshots")) == ["latest", "two"]

    found = subprocess.run(["find", str(m / "h1" / "snapshots" / "two")], capture_output=True, check=True)
    assert len(found.stdout.splitlines()) > 40
    mounted.stop()
    listed = cairn(mounted.data, "snapshot", "list", "h1", "--json").stdout
    assert '"two"' in listed and '"one"' not in listed
    cairn(mounted.data, "restore", "h1", "two", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []


def test_stale_mount_after_kill_is_cleared(tmp_path: Path, mounted: Mounted) -> None:
    os.mkdir(mounted.path / "h1")
    (mounted.path / "h1" / "current" / "f").write_bytes(b"kept")
    os.mkdir(mounted.path / "h1" / "snapshots" / "s")
    mounted.stop(signal.SIGKILL)
    with pytest.raises(OSError) as e:
        os.stat(mounted.path)
    assert e.value.errno == errno.ENOTCONN
    mounted.start()
    assert (mounted.path / "h1" / "snapshots" / "s" / "f").read_bytes() == b"kept"
