"""The CLI's commands over one interface: the same JSON shapes locally and remotely, and a local snapshot
that waits for the backup sessions writing into its source, as the appliance's job does."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from engine.deployment import Deployment
from engine.sessions import Sessions

from .test_backup_restore import CAIRN, cairn

SOURCE_KEYS = {"name", "uuid", "group", "owner", "created", "snapshots", "last_snapshot"}
SNAPSHOT_KEYS = {"name", "source", "created", "files", "bytes", "state", "uuid"}


def test_local_answers_have_the_api_shapes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    added = json.loads(cairn(data, "source", "add", "h1", "--json").stdout)
    assert set(added) == SOURCE_KEYS and added["group"] is None
    taken = json.loads(cairn(data, "snapshot", "create", "h1", "one", "--json").stdout)
    assert taken["snapshot"] == "one"
    (listed,) = json.loads(cairn(data, "source", "list", "--json").stdout)
    assert set(listed) == SOURCE_KEYS and listed["snapshots"] == 1
    (snap,) = json.loads(cairn(data, "snapshot", "list", "h1", "--json").stdout)
    assert set(snap) == SNAPSHOT_KEYS and snap["name"] == "one"


def test_a_local_snapshot_waits_for_the_sessions_writing_into_its_source(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cairn(data, "source", "add", "h1")
    with Deployment.open(data) as dep:
        sessions = Sessions(dep.catalog, dep.owner)
        session = sessions.begin("h1", "ssh", "127.0.0.1", "laptop")
        waiting = subprocess.Popen([*CAIRN, "--data", str(data), "snapshot", "create", "h1", "after", "--json"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:
            time.sleep(2.5)
            assert waiting.poll() is None and dep.list_snapshots("h1") == []  # still waiting for the session
            sessions.end(session.id, reason=None)
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        assert waiting.returncode == 0, err
        assert json.loads(out)["snapshot"] == "after" and [s.name for s in dep.list_snapshots("h1")] == ["after"]


def test_config_set_never_prints_a_secret_and_group_member_says_none_as_the_api_does(tmp_path: Path) -> None:
    data, secret = tmp_path / "data", "smtp-secret-1f2e"
    smtp = json.dumps({"host": "mail.example.org", "password": secret})
    shown = cairn(data, "config", "set", "smtp", smtp, "--json").stdout
    assert secret not in shown and json.loads(shown)["value"]["password"] == {"set": True}
    assert secret not in cairn(data, "config", "show", "--json").stdout
    cairn(data, "group", "add", "office")
    pw = tmp_path / "pw"
    pw.write_text("long enough password\n")
    added = json.loads(cairn(data, "user", "add", "bob", "--password-file", str(pw), "--json").stdout)
    assert added == {"name": "bob", "admin": False, "roles": {}, "must_change": False}
    member = json.loads(cairn(data, "group", "member", "office", "bob", "none", "--json").stdout)
    assert member == {"group": "office", "user": "bob", "role": None}


def test_search_finds_a_removed_file_in_the_snapshots_that_held_it(tmp_path: Path) -> None:
    data, src = tmp_path / "data", tmp_path / "src"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "Budget 2026.xlsx").write_bytes(b"numbers")
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    (src / "docs" / "Budget 2026.xlsx").unlink()
    cairn(data, "backup", "h1", str(src), "--snapshot", "two")
    found = json.loads(cairn(data, "snapshot", "search", "h1", "budget", "--json").stdout)
    assert [(r["path"], r["first"], r["last"]) for r in found["results"]] == [("/docs/Budget 2026.xlsx", "one", "one")]
    table = cairn(data, "snapshot", "search", "h1", "*.XLSX").stdout
    assert "/docs/Budget 2026.xlsx" in table and "one" in table
    assert cairn(data, "snapshot", "search", "h1", "  ", check=False).returncode == 2


def test_gc_scrub_and_restore_say_what_they_did_in_the_words_of_the_jobs_page(tmp_path: Path) -> None:
    from appliance.words import job_summary

    data, src = tmp_path / "data", tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"x" * 3000)
    cairn(data, "backup", "h1", str(src), "--snapshot", "one")
    gc = json.loads(cairn(data, "pool", "gc", "--json").stdout)
    assert cairn(data, "pool", "gc").stdout.strip().startswith("examined 1 pack")
    assert job_summary("gc", {}, "done", gc, None).startswith("examined 1 pack (")
    scrub = cairn(data, "pool", "scrub").stdout
    assert scrub.startswith("checked 1 pack, ") and scrub.rstrip().endswith(": no damage")
    restored = cairn(data, "restore", "h1", "one", str(tmp_path / "out")).stdout
    assert restored.strip() == f"restored 1 file, 2.9 KiB to {tmp_path / 'out'}"
