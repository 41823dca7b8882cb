"""The SMB door's pieces without smbd: shares from roles, account files, Previous Versions' links, visits."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from appliance.accounts import User, nt_hash
from appliance.doors import smb
from appliance.doors.sessions import Stats
from appliance.doors.smbsessions import SmbSessions
from engine.errors import InvalidArgument, NotFound, ReadOnly
from vfs.writers import Writers

ADMIN = User(1, "root-ish", True, {})
OPERATOR = User(2, "alice", False, {"office": "operator"})
MEMBER = User(3, "bob", False, {"office": "member"})
NOBODY = User(4, "dave", False, {})
HASHES = {u.id: nt_hash(f"pw-{u.name}") for u in (ADMIN, OPERATOR, MEMBER, NOBODY)}


def test_nt_hash_is_md4_of_utf16() -> None:
    assert nt_hash("password") == "8846F7EAEE8FB117AD06BDD830B7586C"  # the well-known NT hash of "password"
    assert nt_hash("pässwörd") != nt_hash("passwort")


def test_shares_follow_the_roles_as_dav_does() -> None:
    users = [ADMIN, OPERATOR, MEMBER, NOBODY]
    access = {"laptop": ("office", None), "desk": (None, "bob"), "orphan": (None, None)}
    shares = {s.source: s for s in smb.shares(users, HASHES, ["laptop", "desk", "orphan"], access)}
    assert shares["laptop"].readers == ("cairn-1", "cairn-2") and shares["laptop"].writers == ("cairn-1", "cairn-2")
    assert shares["desk"].readers == ("cairn-1", "cairn-3") and shares["desk"].writers == ("cairn-1",)
    assert shares["orphan"].readers == ("cairn-1",)
    # Without an NT hash an account is not in any list; a source nobody may see is no share at all.
    only_dave = smb.shares([NOBODY, OPERATOR], {4: "00" * 16}, ["laptop"], access)
    assert only_dave == []


def test_names_smb_conf_reserves_and_case_twins_are_not_shares() -> None:
    sources = ["Global", "homes", "laptop", "Laptop", "printers", "ok"]
    served = [s.source for s in smb.shares([ADMIN], HASHES, sources, {})]
    assert served == ["laptop", "ok"]
    assert smb.unserved(sources) == ["Global", "homes", "Laptop", "printers"]


def test_account_files(tmp_path: Path) -> None:
    users = [OPERATOR, User(9, "no-hash", False, {})]
    passdb = smb.passdb_text(users, HASHES)
    assert passdb == f"cairn-2:200002:{'X' * 32}:{HASHES[2]}:[U          ]:{smb.LCT}:\n"
    assert "cairn-2:x:200002:65534:alice:" in smb.passwd_text(users, HASHES)
    assert "no-hash" not in smb.passwd_text(users, HASHES)
    assert smb.usermap_text(users, HASHES) == 'cairn-2 = "alice"\n'
    shares = smb.shares(users, HASHES, ["laptop"], {"laptop": ("office", None)})
    conf = smb.config_text(tmp_path, Path("/srv/cairn"), "127.0.0.1", 4450, "/run/cairn/x/cairn-door", shares)
    assert "server signing = mandatory" in conf and "server min protocol = SMB2_02" in conf
    assert "map to guest = never" in conf and "smb ports = 4450" in conf and "interfaces = 127.0.0.1" in conf
    section = conf.split("[laptop]", 1)[1]
    assert "path = /srv/cairn/laptop/current" in section and "valid users = cairn-2" in section
    assert "force user = root" in section and "force user" not in conf.split("[laptop]", 1)[0]
    anywhere = smb.config_text(tmp_path, Path("/m"), "0.0.0.0", 445, "/h", [])
    assert "interfaces" not in anywhere


def test_previous_versions_links(tmp_path: Path) -> None:
    mount = Path("/srv/cairn")
    t = 1796200000.7
    wanted = smb.versions(mount, [("a", "second", t + 0.1), ("a", "first", t), ("b", "x", t + 86400)])
    a = wanted["a"]
    assert list(a.values()) == ["/srv/cairn/a/snapshots/first", "/srv/cairn/a/snapshots/second"]
    first, second = sorted(a)
    assert first == "@GMT-2026.12.02-08.26.40" and second == "@GMT-2026.12.02-08.26.41"  # same second: the next
    folder = tmp_path / "versions"
    folder.mkdir()
    assert smb.sync_links(folder, wanted)
    assert os.readlink(folder / "a" / first) == "/srv/cairn/a/snapshots/first"
    assert not smb.sync_links(folder, wanted)  # nothing to do
    assert smb.sync_links(folder, {"a": {first: a[first]}})  # b's snapshot and a's second are gone
    assert sorted(os.listdir(folder)) == ["a"] and os.listdir(folder / "a") == [first]


@dataclass
class FakeBackups:
    """BackupSessions' begin and end, recorded; `refuse` says maintenance mode."""

    refuse: bool = False
    begun: list[tuple[str, str, str, str]] = field(default_factory=list)
    ended: list[tuple[int, str | None, Stats]] = field(default_factory=list)

    def begin(self, source: str, door: str, client: str, principal: str) -> object:
        if self.refuse:
            raise ReadOnly("maintenance mode")
        self.begun.append((source, door, client, principal))
        return type("S", (), {"id": len(self.begun)})()

    def end(self, session_id: int, reason: str | None, stats: Stats | None = None) -> None:
        self.ended.append((session_id, reason, stats or Stats()))


def _source_id(name: str) -> int:
    if name != "laptop":
        raise NotFound(f"no source {name!r}")
    return 7


def _visits(backups: FakeBackups, writers: Writers, idle: float = 10) -> SmbSessions:
    return SmbSessions(backups, writers, _source_id, lambda s: idle, lambda u: u)  # type: ignore[arg-type]


def test_a_visit_is_a_session_only_once_it_writes_and_ends_after_the_idle_time() -> None:
    backups, writers = FakeBackups(), Writers()
    visits = _visits(backups, writers)
    me = os.getpid()  # alive, as a connection's process is
    visits.connect("laptop", "alice", "10.0.0.5", me)
    visits.tick(100.0)
    assert backups.begun == []  # connected, nothing written
    writers.note(me, 7, 1000, 2)
    writers.note(me, 8, 5, 1)  # another source: not this visit's
    visits.tick(101.0)
    assert backups.begun == [("laptop", "smb", "10.0.0.5", "alice")]
    visits.disconnect("laptop", "alice", "10.0.0.5", me)
    left = visits.visits[("laptop", "10.0.0.5", "alice")].left
    visits.tick(left + 5)
    assert backups.ended == []  # not idle long enough
    visits.connect("laptop", "alice", "10.0.0.5", me)  # back within the idle time: the same session
    writers.note(me, 7, 24, 1)
    visits.disconnect("laptop", "alice", "10.0.0.5", me)
    visits.tick(visits.visits[("laptop", "10.0.0.5", "alice")].left + 10)
    assert backups.ended == [(1, None, Stats(1024, 3))] and len(backups.begun) == 1
    assert visits.visits == {} and me not in writers.watched


def test_a_process_that_dies_without_a_disconnect_fails_the_session() -> None:
    backups, writers = FakeBackups(), Writers()
    visits = _visits(backups, writers, idle=0)
    dead = _dead_pid()
    visits.connect("laptop", "alice", "10.0.0.5", dead)
    writers.note(dead, 7, 10, 1)
    visits.tick(1.0)
    visits.tick(1e12)
    assert len(backups.ended) == 1 and "without a disconnect" in (backups.ended[0][1] or "")


def test_maintenance_mode_refuses_the_session_once() -> None:
    backups, writers = FakeBackups(refuse=True), Writers()
    visits = _visits(backups, writers)
    me = os.getpid()
    visits.connect("laptop", "alice", "10.0.0.5", me)
    for t in range(3):
        writers.note(me, 7, 1, 1)
        visits.tick(float(t))
    assert backups.begun == [] and visits.visits[("laptop", "10.0.0.5", "alice")].refused
    assert visits.connect("nowhere", "alice", "10.0.0.5", me) == {"ok": False, "message": "no source 'nowhere'"}


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_the_account_behind_a_hooks_spelling_of_a_name() -> None:
    shares = smb.Shares(None, None, Path("/m"), Path("/f"), "/h", "127.0.0.1", 445)  # type: ignore[arg-type]
    shares.spellings = {}
    for user_id, name in ((2, "alice"), (5, "bob@corp"), (6, "Carol.B")):
        for n in (name, smb.unix_name(user_id)):
            shares.spellings.setdefault(smb.hook_spelling(n), set()).add(name)
    assert shares.account("ALICE") == "alice" and shares.account("cairn-2") == "alice"
    assert shares.account("bob_corp") == "bob@corp"  # Samba's %U spells '@' as '_'
    assert shares.account("carol.b") == "Carol.B"
    with pytest.raises(NotFound):
        shares.account("mallory")
    shares.spellings["bob_corp"].add("bob_corp")  # a second account that Samba spells the same
    with pytest.raises(InvalidArgument, match="look alike"):
        shares.account("bob_corp")
