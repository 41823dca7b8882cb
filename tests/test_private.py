"""The data directory is private to Cairn's user, and secret settings are sealed in an encrypted deployment."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.config import Config
from engine.backup import backup_and_snapshot
from engine.catalog.db import open_catalog
from engine.deployment import Deployment
from engine.errors import Locked, WrongKey
from engine.keyring import DeploymentKeys, Sealer, Unlock

SMTP = {"host": "mail.example.org", "user": "cairn", "password": "hunter2-not-in-plain"}
UNLOCK = Unlock(passphrase=b"correct horse")


@pytest.fixture
def loose_umask() -> Iterator[None]:
    """The umask most systems run with: without explicit modes, new files are 0644 and directories 0755."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _open_to_others(root: Path) -> list[str]:
    found = [root, *root.rglob("*")]
    return [f"{p} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in found if p.lstat().st_mode & 0o077]


def _pool_with_every_local_file(data: Path) -> dict[str, object]:
    """A local pool in the data directory with a write-back spool and a read cache: every kind of local file."""
    return {"kind": "local", "path": str(data / "pool"), "filters": {"spool": {}, "cache": {}}}


def test_everything_cairn_writes_under_the_data_directory_is_private(tmp_path: Path, loose_umask: None) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(300_000))
    with Deployment.open(data, pool_config=_pool_with_every_local_file(data)) as dep:
        dep.add_source("h1")
        backup_and_snapshot(dep, "h1", src, "one")
        dep.spool.wait_drained()  # type: ignore[union-attr]
    with Deployment.open(data) as dep:
        assert dep.snapshot("h1", "one").read(b"f") == (src / "f").read_bytes()  # through the read cache
        dep.working_tree("h1")  # its spool directory
        assert list((data / "cache").rglob("packs/*/*")), "the read cache kept no pack"
        assert (data / "catalog.db-wal").exists() and (data / "catalog.db-shm").exists()
        assert _open_to_others(data) == []


def test_loose_modes_are_made_private_at_start_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    Deployment.open(data).close()
    loosened = [data, data / "catalog.db", data / "pool"]
    for path in loosened:
        path.chmod(0o755 if path.is_dir() else 0o644)
    with caplog.at_level(logging.WARNING), Deployment.open(data):
        assert _open_to_others(data) == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    assert all(str(path) in warnings[0].getMessage() for path in loosened)


def _raw_settings(data: Path) -> dict[str, str]:
    with sqlite3.connect(data / "catalog.db") as conn:
        return dict(conn.execute("SELECT key, value FROM settings"))


def test_secret_settings_are_sealed_with_the_deployment_key(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Deployment.open(data, unlock=UNLOCK, encrypt=True) as dep:
        dep.catalog.set_setting("cfg/global/smtp", json.dumps(SMTP))
        dep.catalog.set_setting("cfg/global/notify_email", json.dumps("ops@example.org"))
        assert json.loads(dep.catalog.setting("cfg/global/smtp") or "") == SMTP
    raw = _raw_settings(data)
    assert SMTP["password"] not in raw["cfg/global/smtp"] and "mail.example.org" not in raw["cfg/global/smtp"]
    assert json.loads(raw["cfg/global/notify_email"]) == "ops@example.org"  # not a secret: stays readable
    with Deployment.open(data, unlock=UNLOCK) as dep:
        assert Config(dep.catalog).value("smtp", stored=Config(dep.catalog).stored()) == SMTP  # as mail is sent
    locked = open_catalog(f"sqlite:///{data / 'catalog.db'}")
    try:
        with pytest.raises(Locked, match="unlock the deployment"):
            locked.setting("cfg/global/smtp")
    finally:
        locked.dispose()


def test_secrets_stored_in_plain_before_are_sealed_when_the_deployment_opens(tmp_path: Path) -> None:
    data = tmp_path / "data"
    Deployment.open(data, unlock=UNLOCK, encrypt=True).close()
    with sqlite3.connect(data / "catalog.db") as conn:
        conn.execute("INSERT INTO settings (key, value) VALUES (?, ?)", ("cfg/global/smtp", json.dumps(SMTP)))
    with Deployment.open(data, unlock=UNLOCK) as dep:
        assert json.loads(dep.catalog.setting("cfg/global/smtp") or "") == SMTP
    assert SMTP["password"] not in _raw_settings(data)["cfg/global/smtp"]


def test_a_deployment_without_encryption_has_no_key_to_seal_with(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        dep.catalog.set_setting("cfg/global/smtp", json.dumps(SMTP))
    assert json.loads(_raw_settings(tmp_path / "data")["cfg/global/smtp"]) == SMTP


def test_a_sealed_value_opens_only_in_its_own_row_and_deployment() -> None:
    sealer = Sealer(DeploymentKeys.new(encrypted=True))
    sealed = sealer.seal("cfg/global/smtp", "secret")
    assert sealer.unseal("cfg/global/smtp", sealed) == "secret"
    with pytest.raises(WrongKey):
        sealer.unseal("cfg/group:g/smtp", sealed)
    with pytest.raises(WrongKey):
        Sealer(DeploymentKeys.new(encrypted=True)).unseal("cfg/global/smtp", sealed)
