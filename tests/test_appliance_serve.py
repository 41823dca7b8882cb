"""`cairn serve` as a process: first start, HTTP on a real cheroot port, a clean stop; the account commands."""

from __future__ import annotations

import base64
import http.cookiejar
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from appliance.accounts import FIRST_ADMIN, FIRST_PASSWORD
from appliance.server import first_admin
from appliance.services import Services
from engine.deployment import Deployment

from .served import served
from .test_backup_restore import CAIRN, cairn, cairn_json
from .test_cli_target import SNAPSHOT_KEYS, SOURCE_KEYS
from .test_read_ahead import eventually


def _call(opener: urllib.request.OpenerDirector, url: str, body: Any = None,
          headers: dict[str, str] | None = None) -> tuple[int, Any]:  # fmt: skip
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with opener.open(req, timeout=30) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_serve_first_start_login_and_stop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with served(data, tmp_path / "serve.log") as server:
        assert server.password, server.log.read_text()
        base = f"{server.url}/api/v1"
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
        assert _call(opener, f"{base}/sources")[0] == 401
        status, doc = _call(opener, f"{base}/login", {"name": "admin", "password": server.password})
        assert status == 200 and doc["user"]["admin"]
        csrf = {"X-CSRF-Token": doc["csrf"]}
        assert _call(opener, f"{base}/sources", {"name": "h1"}, csrf)[0] == 201
        status, listed = _call(opener, f"{base}/sources")
        assert status == 200 and [s["name"] for s in listed] == ["h1"]
        assert _call(opener, f"{base}/openapi.json")[1]["info"]["title"] == "Cairn"
        with urllib.request.urlopen(f"{server.url}/login", timeout=30) as page:
            assert b"Sign in" in page.read()
        # WebDAV at /dav on the same port, with the same accounts.
        dav = urllib.request.build_opener()
        propfind = urllib.request.Request(f"{server.url}/dav/", method="PROPFIND", headers={"Depth": "1"})
        try:
            dav.open(propfind, timeout=30)
            raise AssertionError("WebDAV answered without credentials")
        except urllib.error.HTTPError as e:
            assert e.code == 401
        basic = base64.b64encode(f"admin:{server.password}".encode()).decode()
        propfind.add_header("Authorization", f"Basic {basic}")
        with dav.open(propfind, timeout=30) as reply:
            assert reply.status == 207 and b"/dav/h1/" in reply.read()
        # The console's copy of the one-time password: private, and gone once the password is changed.
        kept = data / "first-password"
        assert kept.read_text() == server.password + "\n" and kept.stat().st_mode & 0o777 == 0o600
        new = {"password": server.password, "new_password": "the administrator's own"}
        assert _call(opener, f"{base}/me/password", new, csrf)[0] == 200
        assert not kept.exists()
    # The next start prints no password: the admin exists.
    refused = subprocess.run([*CAIRN, "--data", str(data), "serve", "--listen", "127.0.0.1:not-a-port"],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert refused.returncode == 1 and "HOST:PORT" in refused.stderr and "one-time" not in refused.stderr


def test_user_and_group_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    cairn(data, "user", "add", "alice", "--password-file", str(pw))
    cairn(data, "group", "add", "office")
    cairn(data, "group", "member", "office", "alice", "operator")
    cairn(data, "source", "add", "desk")
    cairn(data, "assign", "desk", "--group", "office", "--owner", "alice")
    users = cairn_json(data, "user", "list")
    assert users == [{"name": "alice", "admin": False, "roles": {"office": "operator"}, "must_change": False}]
    assert cairn_json(data, "group", "list") == {"office": {"alice": "operator"}}
    short = tmp_path / "short"
    short.write_text("short")
    bad = cairn(data, "user", "add", "bob", "--password-file", str(short), check=False)
    assert bad.returncode == 1 and "at least 8 characters" in bad.stderr
    dup = cairn(data, "user", "add", "alice", "--password-file", str(pw), check=False)
    assert dup.returncode == 1 and "exists" in dup.stderr


def test_cli_against_a_remote_appliance(tmp_path: Path) -> None:
    import stat

    data = tmp_path / "data"
    log = tmp_path / "serve.log"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")}
    src = tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "a.txt").write_text("alpha\n")
    (src / "b.bin").write_bytes(bytes(range(256)) * 4000)
    cairn(data, "backup", "h2", str(src), "--snapshot", "s1")
    with served(data, log) as server:
        password = server.password

        def remote(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
            run = subprocess.run([*CAIRN, *args], capture_output=True, text=True, env=env, timeout=120)
            assert not check or run.returncode == 0, run.stderr
            return run

        wrong = tmp_path / "wrong"
        wrong.write_text("not it")
        url = server.url
        refused = remote("remote", "add", "office", url, "--user", "admin", "--password-file", str(wrong), check=False)
        assert refused.returncode == 1 and "wrong name or password" in refused.stderr
        right = tmp_path / "right"
        right.write_text(password)
        remote("remote", "add", "office", url, "--user", "admin", "--password-file", str(right))
        stored = tmp_path / "config" / "cairn" / "remotes.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600 and password not in stored.read_text()
        assert "cairn_" not in remote("remote", "list").stdout  # the token is not shown
        remote("--remote", "office", "source", "add", "h1")
        made = json.loads(remote("--remote", "office", "snapshot", "create", "h1", "first", "--json").stdout)
        assert made["snapshot"] == "first"
        listed = json.loads(remote("--remote", "office", "snapshot", "list", "--json").stdout)
        found = json.loads(remote("--remote", "office", "snapshot", "search", "h1", "*", "--json").stdout)
        assert found == {"results": [], "more": False}  # an empty source: nothing, and no error
        assert [(s["source"], s["name"]) for s in listed] == [("h1", "first"), ("h2", "s1")]
        assert all(set(s) == SNAPSHOT_KEYS for s in listed)  # the local command's shapes, too
        sources = json.loads(remote("--remote", "office", "source", "list", "--json").stdout)
        assert [s["name"] for s in sources] == ["h1", "h2"] and all(set(s) == SOURCE_KEYS for s in sources)
        jobs = json.loads(remote("--remote", "office", "job", "list", "--json").stdout)
        assert jobs[0]["kind"] == "snapshot" and jobs[0]["state"] == "done"
        assert json.loads(remote("--remote", "office", "pool", "list", "--json").stdout)[0]["state"] == "online"
        table = remote("--remote", "office", "pool", "list").stdout  # the same table as a local `pool list`
        assert "online" in table and "zstd" in table
        local_only = remote("--remote", "office", "backup", "h1", str(tmp_path), check=False)
        assert local_only.returncode == 1 and "not with --remote" in local_only.stderr
        assert json.loads(remote("--remote", "office", "pool", "scrub", "--json").stdout)["damaged"] == 0
        pw = tmp_path / "pw"
        pw.write_text("another long password")
        remote("--remote", "office", "user", "add", "bob", "--password-file", str(pw))
        remote("--remote", "office", "group", "add", "office")
        remote("--remote", "office", "group", "member", "office", "bob", "operator")
        users = json.loads(remote("--remote", "office", "user", "list", "--json").stdout)
        assert {"name": "bob", "admin": False, "roles": {"office": "operator"}, "must_change": False} in users
        moved = remote("--remote", "office", "assign", "h1", "--group", "office", "--owner", "bob", "--json").stdout
        assert json.loads(moved) == {"name": "h1", "group": "office", "owner": "bob"}
        sources = json.loads(remote("--remote", "office", "source", "list", "--json").stdout)
        assert [(s["group"], s["owner"]) for s in sources if s["name"] == "h1"] == [("office", "bob")]
        remote("--remote", "office", "config", "set", "retention", '{"last": 5}', "--source", "h1")
        shown = json.loads(remote("--remote", "office", "config", "show", "--source", "h1", "--json").stdout)
        assert shown["retention"] == {"value": {"last": 5}, "from": "source:h1"}
        assert "on: upgrade" in remote("--remote", "office", "maintenance", "on", "--reason", "upgrade").stdout
        assert "off" in remote("--remote", "office", "maintenance", "off").stdout
        remote("--remote", "office", "user", "remove", "bob")
        assert "bob" not in [
            u["name"] for u in json.loads(remote("--remote", "office", "user", "list", "--json").stdout)
        ]
        back = tmp_path / "back"
        restored = json.loads(remote("--remote", "office", "restore", "h2", "s1", str(back), "--json").stdout)
        assert restored["files"] == 2 and (back / "docs" / "a.txt").read_text() == "alpha\n"
        assert (back / "b.bin").read_bytes() == (src / "b.bin").read_bytes()
        assert (back / "b.bin").stat().st_mtime_ns // 10**9 == (src / "b.bin").stat().st_mtime_ns // 10**9
        remote("--remote", "office", "restore", "h2", "s1", "docs/a.txt", str(tmp_path / "one.txt"))
        moved = json.loads(remote("--remote", "office", "restore", "h2", "s1", "docs", "--in-place", "--to",
                                  "/kept/docs", "--json").stdout)  # fmt: skip
        assert moved["to"] == "h2/current/kept/docs" and moved["files"] == 1
        assert (tmp_path / "one.txt").read_text() == "alpha\n"
        gone = remote("--remote", "office", "snapshot", "list", "nope", check=False)
        assert gone.returncode == 1 and "no source" in gone.stderr
        # gc --dry-run changes nothing on a remote either, and says so.
        remote("--remote", "office", "snapshot", "delete", "h2", "s1")
        stored = json.loads(remote("--remote", "office", "pool", "list", "--json").stdout)[0]["stored_bytes"]
        dry = json.loads(remote("--remote", "office", "pool", "gc", "--dry-run", "--json").stdout)
        assert dry["dry_run"] is True and dry["packs_deleted"] == 0
        assert json.loads(remote("--remote", "office", "pool", "list", "--json").stdout)[0]["stored_bytes"] == stored
        assert "would free" in remote("--remote", "office", "pool", "gc", "--dry-run").stdout
    # The same commands locally print documents of the same shape, and apply the same retention.
    local_dry = cairn_json(data, "pool", "gc", "--dry-run")
    assert isinstance(local_dry, dict) and local_dry.keys() == dry.keys() and local_dry["dry_run"] is True
    cairn(data, "config", "set", "retention", '{"last": 1}', "--source", "h1")
    second = cairn_json(data, "snapshot", "create", "h1", "second")
    assert isinstance(second, dict) and second.keys() == made.keys() and second["deleted"] == ["first"]


def test_serve_with_the_mount(tmp_path: Path) -> None:
    data, mnt = tmp_path / "data", tmp_path / "mnt"
    try:
        with served(data, tmp_path / "serve.log", "--mount", str(mnt), ready="mounted at") as server:
            (mnt / "h1").mkdir()  # a source, made through the mount ...
            (mnt / "h1" / "current" / "f").write_text("through FUSE")
            (mnt / "h1" / "snapshots" / "s").mkdir()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
            base = f"{server.url}/api/v1"
            assert _call(opener, f"{base}/login", {"name": "admin", "password": server.password})[0] == 200
            status, snaps = _call(opener, f"{base}/sources/h1/snapshots")  # ... seen by the same process's API
            assert status == 200 and [s["name"] for s in snaps] == ["s"]
            with opener.open(f"{base}/sources/h1/snapshots/s/file?path=/f", timeout=30) as reply:
                assert reply.read() == b"through FUSE"
            # Names changed over WebDAV show in the mount at once, though the kernel
            # caches a working tree's names (and their absence) for a minute.
            current = mnt / "h1" / "current"
            assert not (current / "g").exists() and (current / "f").exists()  # both now in the kernel's cache
            dav = urllib.request.build_opener()
            auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{server.password}".encode()).decode()}
            for method, path, body in (("PUT", "g", b"through WebDAV"), ("DELETE", "f", None)):
                req = urllib.request.Request(f"{server.url}/dav/h1/current/{path}", body, auth, method=method)
                with dav.open(req, timeout=30) as reply:
                    assert reply.status in (201, 204)
            assert eventually(lambda: (current / "g").exists() and not (current / "f").exists(), within=5.0)
            assert (current / "g").read_bytes() == b"through WebDAV"
    finally:
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    assert not os.path.ismount(mnt)


def test_the_first_password_file_goes_when_that_password_no_longer_signs_in(tmp_path: Path, db_url: str) -> None:
    with Deployment.open(tmp_path / "data", db_url) as dep:
        services = Services.build(dep)
        kept = dep.data_dir / FIRST_PASSWORD
        password = first_admin(services)
        assert password and kept.read_text() == password + "\n" and kept.stat().st_mode & 0o777 == 0o600
        assert first_admin(services) is None and kept.exists()  # a later start makes no other admin
        services.accounts.add_user("ops", "a password of ops", admin=True)
        services.accounts.set_password("ops", "another password of ops")
        assert kept.exists()  # not the first administrator's
        services.accounts.reset_password(FIRST_ADMIN)  # a new one-time password, shown to whoever reset it
        assert not kept.exists()
        kept.write_text("the reset one, left by hand\n")
        assert first_admin(services) is None and kept.exists()  # admin's password is still a one-time one
        services.accounts.set_password(FIRST_ADMIN, "admin's own password")
        kept.write_text("changed while an older version ran, which left it\n")
        assert first_admin(services) is None and not kept.exists()  # the next start removes it
        kept.write_text("left by an older version\n")
        services.accounts.remove_user(FIRST_ADMIN)
        assert not kept.exists()
