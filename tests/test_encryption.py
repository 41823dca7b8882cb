"""Encrypted pools: AES-256-GCM blobs, keys wrapped by a passphrase or a key file."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from engine.codec import AES_GCM, HEADER, HEADER_SIZE, Codec
from engine.deployment import Deployment
from engine.errors import CairnError, CorruptBlob, Locked, WrongKey
from engine.keyring import DeploymentKeys, Unlock, unwrap, wrap

from .test_backup_restore import CAIRN, cairn
from .trees import make_tree, rsync_differences

PASS = Unlock(passphrase=b"correct horse battery staple")
# Bytes that are stored uncompressed (a PNG header, then noise): if they are in
# the pool as written, the pool holds plaintext.
MARKER = b"\x89PNG\r\n\x1a\n" + b"cairn-plaintext-marker-" + os.urandom(64)


def _everything_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_keys_wrap_and_unwrap() -> None:
    keys = DeploymentKeys.new(encrypted=True)
    for unlock in (PASS, Unlock(key_file=os.urandom(64))):
        doc = wrap(keys, unlock)
        assert keys.id_key not in doc and keys.id_key.hex().encode() not in doc
        assert unwrap(doc, unlock) == keys
    with pytest.raises(WrongKey):
        unwrap(wrap(keys, PASS), Unlock(passphrase=b"wrong"))
    with pytest.raises(WrongKey):
        unwrap(wrap(keys, PASS), Unlock(key_file=os.urandom(64)))
    with pytest.raises(Locked):
        unwrap(wrap(keys, PASS), None)
    with pytest.raises(CairnError):
        unwrap(b"{not json", PASS)
    with pytest.raises(CairnError):
        Unlock(key_file=b"short")


def test_codec_encrypts_and_authenticates() -> None:
    keys = DeploymentKeys.new(encrypted=True)
    codec = Codec(keys=keys)
    plain = os.urandom(100_000)
    blob = codec.encode(plain)
    assert HEADER.unpack_from(blob)[3] == AES_GCM and plain[:64] not in blob
    assert codec.decode(blob) == plain
    assert codec.encode(plain) != blob  # a fresh nonce every time
    flipped = bytearray(blob)
    flipped[-1] ^= 1
    with pytest.raises(CorruptBlob):
        codec.decode(bytes(flipped))
    header = bytearray(blob)
    header[2] ^= 1  # the compression id: authenticated with the body
    with pytest.raises(CorruptBlob):
        codec.decode(bytes(header))
    with pytest.raises(Locked):
        Codec().decode(blob)
    assert len(blob) - HEADER_SIZE - len(plain) == 28  # nonce and tag


def test_encrypted_deployment_holds_no_plaintext(tmp_path: Path) -> None:
    data = tmp_path / "data"
    dep = Deployment.open(data, unlock=PASS, encrypt=True)
    keys = dep.pool.keys
    try:
        dep.add_source("h1")
        tree = dep.working_tree("h1")
        ino = tree.create(1, b"secret.png", 0o644).ino
        tree.open(ino)
        tree.write(ino, 0, MARKER)
        tree.release(ino)
        dep.create_snapshot("h1", "s1")
    finally:
        dep.close()
    stored = _everything_under(data)  # pool, catalog and all
    assert MARKER[:40] not in stored
    for key in (keys.id_key, *keys.data_keys.values()):
        assert key not in stored and key.hex().encode() not in stored
    with pytest.raises(Locked):
        Deployment.open(data)
    with pytest.raises(WrongKey):
        Deployment.open(data, unlock=Unlock(passphrase=b"guess"))
    with Deployment.open(data, unlock=PASS) as dep:
        view = dep.snapshot("h1", "s1")
        assert view.read(b"secret.png") == MARKER


def test_cli_init_encrypt_backup_restore_rebuild(tmp_path: Path) -> None:
    src, data = tmp_path / "src", tmp_path / "data"
    make_tree(src)
    key_file = tmp_path / "cairn.key"
    key_file.write_bytes(os.urandom(64))
    opts = ("--key-file", str(key_file))
    cairn(data, *opts, "init", "--encrypt")
    cairn(data, *opts, "backup", "h1", str(src), "--snapshot", "one")
    locked = cairn(data, "snapshot", "list", "h1", check=False)
    assert locked.returncode == 1 and "encrypted" in locked.stderr
    cairn(data, *opts, "catalog", "rebuild", "--force")
    cairn(data, *opts, "restore", "h1", "one", str(tmp_path / "out"))
    assert rsync_differences(src, tmp_path / "out") == []
    env = {**os.environ, "CAIRN_PASSPHRASE": "pw"}
    other = tmp_path / "other"
    proc = subprocess.run([*CAIRN, "--data", str(other), "init", "--encrypt"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    refused = subprocess.run([*CAIRN, "--data", str(other), "init"], capture_output=True, text=True)
    assert refused.returncode == 1 and "already holds" in refused.stderr
