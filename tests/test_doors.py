"""The front doors for real: stock ssh and rsync against the appliance's own sshd and rsync daemon on loopback."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .doors import Appliance, prepare, serving
from .test_backup_restore import cairn
from .trees import make_tree, rsync_differences

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the front doors run as root")  # CI runs as root


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Appliance]:
    tmp = tmp_path_factory.mktemp("doors")
    with serving(prepare(tmp, ("laptop", "server", "nas", "mirror")), tmp / "serve.log") as a:
        yield a


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree") / "src"
    make_tree(root)
    return root


def test_rsync_over_ssh_arrives_as_through_the_mount_and_ends_in_a_snapshot(app: Appliance, tree: Path) -> None:
    done = app.rsync_ssh("laptop", f"{tree}/")
    assert done.returncode == 0, done.stderr
    ended = time.monotonic()
    assert rsync_differences(tree, app.mnt / "laptop" / "current") == []
    local = subprocess.run(["rsync", "-aHAXS", "--numeric-ids", f"{tree}/", f"{app.mnt}/mirror/current/"],
                           capture_output=True, text=True)  # fmt: skip
    assert local.returncode == 0, local.stderr
    assert rsync_differences(app.mnt / "mirror" / "current", app.mnt / "laptop" / "current") == []
    (session,) = app.ended("laptop")
    assert time.monotonic() - ended < 30
    assert (session["state"], session["door"], session["principal"]) == ("done", "ssh", "client-of-laptop")
    assert session["bytes_received"] > 70_000_000 / 100 and session["files_changed"] > 40  # sparse: holes not sent
    assert session["snapshot"] in [s["name"] for s in app.snapshots("laptop")]
    snap = app.mnt / "laptop" / "snapshots" / session["snapshot"]
    assert rsync_differences(tree, snap) == []
    # A restore reads a snapshot back over the same door, read-only.
    back = app.rsync_ssh("laptop", f"cairn@127.0.0.1:snapshots/{session['snapshot']}/odd/", str(tree.parent / "back"))
    assert back.returncode == 0, back.stderr
    assert rsync_differences(tree / "odd", tree.parent / "back") == []
    # As the web UI's restore page says to: back where it was, keeping what it replaces beside it.
    (tree.parent / "back" / "with space").write_bytes(b"changed on the client since")
    again = app.rsync_ssh("laptop", f"cairn@127.0.0.1:snapshots/{session['snapshot']}/odd/", str(tree.parent / "back"),
                          "--backup", "--suffix=.before-restore")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert (tree.parent / "back" / "with space").read_bytes() == b"with space"
    assert (tree.parent / "back" / "with space.before-restore").read_bytes() == b"changed on the client since"
    assert len(app.sessions("laptop")) == 1  # reading is no session
    for path in (app.data / "doors").rglob("*"):  # host keys, configs, passwords, logs: root's alone
        assert path.stat().st_mode & 0o077 == 0, path


def test_the_rsync_daemon_writes_current_and_serves_snapshots_read_only(app: Appliance, tree: Path) -> None:
    done = app.rsync_daemon("nas", f"{tree}/", app.daemon_url("nas"))
    assert done.returncode == 0, done.stderr
    assert rsync_differences(tree, app.mnt / "nas" / "current") == []
    (session,) = app.ended("nas")
    assert (session["state"], session["door"], session["principal"]) == ("done", "rsyncd", "nas")
    assert session["files_changed"] > 40 and session["bytes_received"] > 1_000_000
    snapshots = app.mnt / "nas" / "snapshots"
    before = sorted(os.listdir(snapshots))
    url = app.daemon_url("nas", "nas@snapshots")
    back = app.rsync_daemon("nas", f"{url}{session['snapshot']}/odd/", str(tree.parent / "nas-back") + "/")
    assert back.returncode == 0, back.stderr
    assert rsync_differences(tree / "odd", tree.parent / "nas-back") == []
    refused = app.rsync_daemon("nas", f"{tree}/odd/", f"{url}{session['snapshot']}/odd/")
    assert refused.returncode != 0 and "read only" in refused.stderr.lower()
    wrong = app.rsync_daemon("nas", f"{tree}/odd/", app.daemon_url("nas"), password="not-the-password")
    assert wrong.returncode != 0 and "auth failed" in wrong.stderr
    other = app.rsync_daemon("nas", f"{tree}/odd/", app.daemon_url("nas", "laptop"))  # nas's password, laptop's module
    assert other.returncode != 0 and "auth failed" in other.stderr
    assert sorted(os.listdir(snapshots)) == before
    assert len(app.sessions("nas")) == 1


def test_an_unchanged_rerun_is_a_quick_session(app: Appliance, tree: Path) -> None:
    first = app.rsync_ssh("server", f"{tree}/odd/")
    assert first.returncode == 0, first.stderr
    app.ended("server", 1)
    again = app.rsync_ssh("server", f"{tree}/odd/", "cairn@127.0.0.1:", "--stats")
    assert again.returncode == 0 and "Number of regular files transferred: 0" in again.stdout
    rows = app.ended("server", 2)
    assert rows[0]["files_changed"] == 0 and rows[0]["state"] == "done"


def test_keys_reach_their_own_source_only(app: Appliance, tmp_path: Path) -> None:
    (tmp_path / "mine").write_text("mine")
    before = sorted(os.listdir(app.mnt / "laptop" / "current"))
    # server's key writes into server's current/, whatever path it names
    done = app.rsync_ssh("server", str(tmp_path / "mine"), "cairn@127.0.0.1:/laptop/current/", "--mkpath")
    assert done.returncode == 0, done.stderr
    assert (app.mnt / "server" / "current" / "laptop" / "current" / "mine").read_text() == "mine"
    assert sorted(os.listdir(app.mnt / "laptop" / "current")) == before
    up = app.rsync_ssh("server", str(tmp_path / "mine"), "cairn@127.0.0.1:../laptop/current/")
    assert up.returncode != 0 and "'..' is not allowed" in up.stderr
    read = app.rsync_ssh("server", "cairn@127.0.0.1:../laptop/", str(tmp_path / "stolen"))
    assert read.returncode != 0 and not (tmp_path / "stolen").exists()
    unknown = tmp_path / "unknown"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(unknown)], check=True)
    app.keys["unknown"] = unknown
    denied = app.rsync_ssh("unknown", str(tmp_path / "mine"))
    assert denied.returncode != 0 and "Permission denied (publickey)" in denied.stderr  # rsync: 255 or 12


def test_a_stored_symlink_leads_nowhere_outside_the_source(app: Appliance, tmp_path: Path) -> None:
    os.symlink("/etc", tmp_path / "escape")
    done = app.rsync_ssh("server", str(tmp_path / "escape"))
    assert done.returncode == 0, done.stderr
    (tmp_path / "cairn-pwned").write_text("x")
    through = app.rsync_ssh("server", str(tmp_path / "cairn-pwned"), "cairn@127.0.0.1:escape/")
    assert through.returncode != 0
    assert not Path("/etc/cairn-pwned").exists()
    leak = app.rsync_ssh("server", "cairn@127.0.0.1:current/escape/hostname", str(tmp_path / "leaked"))
    assert leak.returncode != 0 and not (tmp_path / "leaked").exists()


def test_nothing_but_rsync_runs(app: Appliance, tmp_path: Path) -> None:
    ssh = app.ssh("server").split()
    sessions = len(app.sessions("server"))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*ssh, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    shell = run("cairn@127.0.0.1", "id; cat /etc/shadow")
    assert shell.returncode == 1 and "only rsync runs here" in shell.stderr and "root" not in shell.stdout
    interactive = run("-T", "cairn@127.0.0.1")
    assert interactive.returncode == 1 and "this account only runs rsync" in interactive.stderr
    sudo = subprocess.run(["rsync", "-a", "--rsync-path=sudo rsync", "-e", app.ssh("server"), str(tmp_path),
                           "cairn@127.0.0.1:"], capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sudo.returncode != 0 and "only rsync runs here" in sudo.stderr
    protect = app.rsync_ssh("server", str(tmp_path), "cairn@127.0.0.1:", "-s")
    assert protect.returncode != 0 and "--protect-args is not supported" in protect.stderr
    devices = app.rsync_ssh("server", str(tmp_path), "cairn@127.0.0.1:", "--write-devices")
    assert devices.returncode != 0 and "--write-devices is not allowed" in devices.stderr
    forward = run("-W", f"127.0.0.1:{app.ssh_port}", "cairn@127.0.0.1")
    assert forward.returncode != 0 and "SSH-2.0" not in forward.stdout
    sftp = subprocess.run(["sftp", "-b", "-", "-P", str(app.ssh_port), *ssh[3:], "cairn@127.0.0.1"],
                          input="ls /\n", capture_output=True, text=True, timeout=60)  # fmt: skip
    assert sftp.returncode != 0
    assert len(app.sessions("server")) == sessions  # refused before anything was written: no session began


def test_a_new_key_and_a_removed_key_take_effect_at_once(app: Appliance, tmp_path: Path) -> None:
    key = tmp_path / "second"
    subprocess.run(["ssh-keygen", "-q", "-t", "ecdsa", "-N", "", "-C", "second", "-f", str(key)], check=True)
    taken = cairn(app.data, "source", "key", "add", "laptop", f"{key}.pub", check=False)
    assert taken.returncode == 0, taken.stderr
    again = cairn(app.data, "source", "key", "add", "server", f"{key}.pub", check=False)
    assert again.returncode != 0 and "already registered for source 'laptop'" in again.stderr
    app.keys["second"] = key
    (tmp_path / "f").write_text("f")
    assert app.rsync_ssh("second", str(tmp_path / "f")).returncode == 0
    assert (app.mnt / "laptop" / "current" / "f").exists()
    key_id = next(
        k["id"]
        for k in __import__("json").loads(cairn(app.data, "source", "key", "list", "laptop", "--json").stdout)
        if k["name"] == "second"
    )
    cairn(app.data, "source", "key", "remove", "laptop", str(key_id))
    (tmp_path / "g").write_text("g")
    refused = app.rsync_ssh("second", str(tmp_path / "g"))
    # Refused by sshd. rsync then exits 255 or 12, whichever it notices first: ssh's status or the closed pipe.
    assert refused.returncode != 0 and "Permission denied (publickey)" in refused.stderr, refused.stderr
    assert not (app.mnt / "laptop" / "current" / "g").exists()
