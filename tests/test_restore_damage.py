"""Restores from a damaged pool (a pack deleted, a byte flipped) and onto what exists; `pool check` with a pack gone.

A restore brings back everything that can be read, lists each damaged path,
exits 3, and never leaves a partial file under a real name.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

from click.testing import CliRunner, Result

from appliance.cli import main
from engine.content import chunk_ids, unpack_extents
from engine.deployment import Deployment
from engine.packs import pack_key

from .served import remote_cli, served

MiB = 1 << 20


def cli(data: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data", str(data), *args], catch_exceptions=False)


def _deployment_with_two_packs(tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """Snapshot `two` of h1: old/ and top1 stored in one pack (by snapshot `one`), new/ and top2 in another.

    new/b1 is several chunks (3 MiB of random bytes).
    """
    rnd = random.Random(22)
    src, data = tmp_path / "src", tmp_path / "data"
    contents = {"old/a1": rnd.randbytes(5000), "old/a2": rnd.randbytes(7000), "top1": rnd.randbytes(3000)}
    for rel, body in contents.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    assert cli(data, "backup", "h1", str(src), "--snapshot", "one").exit_code == 0
    more = {"new/b1": rnd.randbytes(3 * MiB), "new/b2": rnd.randbytes(4000), "top2": rnd.randbytes(2000)}
    for rel, body in more.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(body)
    assert cli(data, "backup", "h1", str(src), "--snapshot", "two").exit_code == 0
    return src, data, contents | more


def _pack_file(data: Path, path: bytes, chunk: int = 0) -> tuple[Path, int, int]:
    """The local pool's file holding the `chunk`th chunk of `path` in snapshot two, and the blob's offset and length."""
    with Deployment.open(data) as dep:
        entry = dep.snapshot("h1", "two").lookup(path)
        blob_id = list(chunk_ids(unpack_extents(entry.payload)))[chunk]
        loc = dep.blobs.locate(blob_id)
    return data / "pool" / pack_key(loc.pack), loc.offset, loc.length


def _flip_a_byte(data: Path, path: bytes) -> None:
    """Damage the last chunk of `path` in snapshot two: what comes before it is read (and written) first."""
    pack, offset, length = _pack_file(data, path, chunk=-1)
    raw = bytearray(pack.read_bytes())
    raw[offset + length // 2] ^= 0x40
    pack.chmod(0o600)
    pack.write_bytes(bytes(raw))


def _files_below(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_a_missing_pack_damages_only_its_paths_and_the_rest_is_restored(tmp_path: Path) -> None:
    _, data, contents = _deployment_with_two_packs(tmp_path)
    pack, _, _ = _pack_file(data, b"top1")
    assert pack != _pack_file(data, b"top2")[0]
    pack.unlink()

    out = tmp_path / "out"
    result = cli(data, "restore", "h1", "two", str(out), "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert sorted(doc["damaged"]) == ["old/", "top1"]  # old/'s tree was in the lost pack too
    assert all(pack.name in e for e in doc["errors"]), doc["errors"]  # says which pack, beside the path
    restored = _files_below(out)
    assert restored == {k: v for k, v in contents.items() if k in ("new/b1", "new/b2", "top2")}


def test_a_flipped_byte_lists_the_file_and_leaves_no_partial_file(tmp_path: Path) -> None:
    _, data, contents = _deployment_with_two_packs(tmp_path)
    _flip_a_byte(data, b"new/b1")

    out = tmp_path / "out"
    result = cli(data, "restore", "h1", "two", str(out), "--json")
    assert result.exit_code == 3, result.output
    assert json.loads(result.stdout)["damaged"] == ["new/b1"]
    assert _files_below(out) == {k: v for k, v in contents.items() if k != "new/b1"}
    assert sorted(os.listdir(out / "new")) == ["b2"]  # no partial b1, and no temporary file left

    one = tmp_path / "one"  # a single damaged file: an error naming it, and nothing written
    result = cli(data, "restore", "h1", "two", "new/b1", str(one))
    assert result.exit_code == 1 and "h1 @ two: new/b1" in result.stderr
    assert not one.exists() and os.listdir(tmp_path).count("one") == 0


def test_pool_check_names_a_missing_pack_and_what_it_held(tmp_path: Path) -> None:
    _, data, _ = _deployment_with_two_packs(tmp_path)
    assert cli(data, "pool", "check").exit_code == 0
    pack, _, _ = _pack_file(data, b"top1")
    pack.unlink()
    result = cli(data, "pool", "check", "--json")
    assert result.exit_code == 3, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] is False and [m["pack"] for m in doc["missing_packs"]] == [pack.name]
    paths = {(a["snapshot"], a["path"]) for a in doc["missing_packs"][0]["affects"]}
    assert paths == {("one", "/"), ("two", "/old/"), ("two", "/top1")}
    text = cli(data, "pool", "check")
    assert text.exit_code == 3 and pack.name in text.stderr and "two: /top1" in text.stderr


def test_restore_onto_what_exists_needs_overwrite(tmp_path: Path) -> None:
    _, data, contents = _deployment_with_two_packs(tmp_path)
    target = tmp_path / "top1"
    target.write_bytes(b"mine")
    result = cli(data, "restore", "h1", "two", "top1", str(target))
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert target.read_bytes() == b"mine"  # a file is refused, as a directory is

    full = tmp_path / "full"
    (full / "old").mkdir(parents=True)
    (full / "old" / "a1").write_bytes(b"mine too")
    result = cli(data, "restore", "h1", "two", str(full))
    assert result.exit_code == 1 and "--overwrite" in result.stderr
    assert _files_below(full) == {"old/a1": b"mine too"}

    empty = tmp_path / "empty"  # an empty directory made for the restore is fine
    empty.mkdir()
    assert cli(data, "restore", "h1", "two", str(empty)).exit_code == 0
    assert _files_below(empty) == contents

    assert cli(data, "restore", "h1", "two", "top1", str(target), "--overwrite").exit_code == 0
    assert target.read_bytes() == contents["top1"]
    assert cli(data, "restore", "h1", "two", str(full), "--overwrite").exit_code == 0
    assert _files_below(full) == contents


def test_in_place_restore_onto_what_exists_needs_overwrite(tmp_path: Path) -> None:
    src, data, contents = _deployment_with_two_packs(tmp_path)
    (src / "top1").write_bytes(b"changed since")
    assert cli(data, "backup", "h1", str(src), "--snapshot", "three").exit_code == 0
    result = cli(data, "restore", "h1", "one", "top1", "--in-place")
    assert result.exit_code == 1 and "exists" in result.stderr and "overwrite" in result.stderr
    with Deployment.open(data) as dep:
        tree = dep.working_tree("h1")
        assert tree.read(tree.resolve(b"top1"), 0, 100) == b"changed since"
    assert cli(data, "restore", "h1", "one", "top1", "--in-place", "--overwrite").exit_code == 0
    assert cli(data, "restore", "h1", "one", "old", "--in-place", "--to", "elsewhere/old").exit_code == 0
    with Deployment.open(data) as dep:
        tree = dep.working_tree("h1")
        assert tree.read(tree.resolve(b"top1"), 0, 10000) == contents["top1"]
        assert tree.read(tree.resolve(b"elsewhere/old/a2"), 0, 10000) == contents["old/a2"]


def test_the_api_and_the_web_form_refuse_a_restore_onto_what_exists_unless_asked(tmp_path: Path) -> None:
    from appliance.app import create_app
    from appliance.services import Services
    from engine.backup import backup_and_snapshot

    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello from a snapshot\n")
    dep = Deployment.open(tmp_path / "data")
    services = Services.build(dep)
    services.accounts.add_user("root", "correct horse", admin=True)
    dep.add_source("a")
    backup_and_snapshot(dep, "a", str(src), "s1")
    tree = dep.working_tree("a")
    ino = tree.resolve(b"hello.txt")
    tree.write(ino, 0, b"HELLO")  # changed since the snapshot
    assert services.runner is not None
    services.runner.start()
    try:
        client = create_app(services).test_client()
        csrf = {
            "X-CSRF-Token": client.post("/api/v1/login", json={"name": "root", "password": "correct horse"}).json[
                "csrf"
            ]
        }  # type: ignore[index]
        url = "/api/v1/sources/a/snapshots/s1/restore"
        refused = client.post(url, json={"path": "/hello.txt"}, headers=csrf)
        assert refused.status_code == 409 and "overwrite" in refused.json["error"]  # type: ignore[index]
        assert client.post(url, json={"path": "/hello.txt", "overwrite": "yes"}, headers=csrf).status_code == 400
        form = {"path": "/hello.txt", "to": "", "into": "a", "csrf": csrf["X-CSRF-Token"]}
        assert client.post("/sources/a/snapshots/s1/restore", data=form).status_code == 409
        assert tree.read(ino, 0, 5) == b"HELLO"  # nothing was replaced
        page = client.get("/sources/a/snapshots/s1/restore?path=/hello.txt").get_data(as_text=True)
        assert "a/current/hello.txt exists: a file of" in page and 'name="overwrite" value="1" required' in page

        done = client.post("/sources/a/snapshots/s1/restore", data=form | {"overwrite": "1"})
        assert done.status_code == 302
        job = client.post(url, json={"path": "/hello.txt", "overwrite": True}, headers=csrf)
        assert job.status_code == 202
        for _ in range(300):
            if client.get(f"/api/v1/jobs/{job.json['id']}").json["state"] in ("done", "failed"):  # type: ignore[index]
                break
            time.sleep(0.05)
        assert client.get(f"/api/v1/jobs/{job.json['id']}").json["state"] == "done"  # type: ignore[index]
        assert tree.read(tree.resolve(b"hello.txt"), 0, 100) == b"hello from a snapshot\n"
    finally:
        services.runner.stop()
        dep.close()


def test_a_remote_restore_of_a_damaged_snapshot_lists_what_it_could_not_bring(tmp_path: Path) -> None:
    """As locally: every other file comes back, the damaged ones are listed (exit 3) and none is left cut short
    or as zeros; a damaged file asked for by name exits 1."""
    _, data, contents = _deployment_with_two_packs(tmp_path)
    _flip_a_byte(data, b"new/b1")
    pack, _, _ = _pack_file(data, b"top1")
    pack.unlink()  # old/'s tree and top1 with it
    with served(data, tmp_path / "serve.log") as server:
        remote = remote_cli(tmp_path, server)
        out = tmp_path / "out"
        partial = remote("restore", "h1", "two", str(out), "--json")
        assert partial.returncode == 3, partial.stderr
        assert sorted(json.loads(partial.stdout)["damaged"]) == ["new/b1", "old/", "top1"]  # as a local restore says
        assert _files_below(out) == {k: v for k, v in contents.items() if k in ("new/b2", "top2")}
        assert sorted(os.listdir(out / "new")) == ["b2"]  # no b1, and no temporary file left
        one = remote("restore", "h1", "two", "new/b1", str(tmp_path / "b1"))
        assert one.returncode == 1 and "could not be read" in one.stderr, one.stderr
        assert not (tmp_path / "b1").exists() and not any(n.startswith(".cairn-restore") for n in os.listdir(tmp_path))
        whole = remote("restore", "h1", "two", "new/b2", str(tmp_path / "b2"))
        assert whole.returncode == 0, whole.stderr  # an undamaged file comes back as before
        assert (tmp_path / "b2").read_bytes() == contents["new/b2"]
