"""Deployment keys: the id key and the data keys, wrapped by a passphrase or a key file.

An encrypted pool keeps its keys in one wrapped document (`keys/deployment.json`
in the pool, the same bytes in the catalog): AES-256-GCM under a
key-encryption key derived by scrypt from a passphrase, or by BLAKE3 from a
key file. Plain keys never reach storage. Data keys are numbered (the key id
in every blob header); one is current for new blobs, and tenants can be given
their own later without re-encrypting anything.

A pool made without encryption keeps its id key in plain (`keys/id-key.json`).

Secret settings in the catalog (the mail server's password, the UI's signing
key) are sealed with a key derived from the id key of an encrypted
deployment: a copy of the catalog alone gives them away no more than the pool.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import CairnError, Locked, WrongKey

DEPLOYMENT_KEYS = "keys/deployment.json"
FORMAT = 1
# scrypt at N=2^15, r=8: 32 MiB and ~0.1 s here per unlock; an attacker pays the same per guess.
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}
_AAD = b"cairn deployment keys v1"
_KEY_FILE_CONTEXT = "cairn 2026 key file to key-encryption key"
_SETTINGS_CONTEXT = "cairn 2026 catalog secret settings"
SEALED = "sealed:1:"  # a sealed settings value: this, then base64 of nonce and AES-256-GCM ciphertext
KEY_FILE_MIN = 32  # bytes: a key file must hold at least a key's worth of randomness


@dataclass(frozen=True)
class Unlock:
    """What opens an encrypted pool: a passphrase, or the bytes of a key file."""

    passphrase: bytes | None = None
    key_file: bytes | None = None

    def __post_init__(self) -> None:
        if (self.passphrase is None) == (self.key_file is None):
            raise CairnError("give a passphrase or a key file, not both")
        if self.passphrase is not None and not self.passphrase:
            raise CairnError("the passphrase is empty")
        if self.key_file is not None and len(self.key_file) < KEY_FILE_MIN:
            raise CairnError(f"a key file must hold at least {KEY_FILE_MIN} bytes")


@dataclass(frozen=True)
class DeploymentKeys:
    id_key: bytes
    data_keys: dict[int, bytes] = field(default_factory=dict)
    current: int | None = None  # the key id new blobs are encrypted with; None: stored plain

    @classmethod
    def new(cls, encrypted: bool) -> DeploymentKeys:
        if not encrypted:
            return cls(os.urandom(32))
        return cls(os.urandom(32), {1: os.urandom(32)}, 1)

    @property
    def encrypted(self) -> bool:
        return self.current is not None


def _kek(unlock: Unlock, kdf: dict[str, Any]) -> bytes:
    salt = bytes.fromhex(kdf["salt"])
    if kdf["name"] == "scrypt":
        if unlock.passphrase is None:
            raise WrongKey("these keys are wrapped by a passphrase, not a key file")
        n, r, p = int(kdf["n"]), int(kdf["r"]), int(kdf["p"])
        return hashlib.scrypt(unlock.passphrase, salt=salt, n=n, r=r, p=p, maxmem=256 << 20, dklen=32)
    if kdf["name"] == "keyfile":
        if unlock.key_file is None:
            raise WrongKey("these keys are wrapped by a key file, not a passphrase")
        return blake3.blake3(salt + unlock.key_file, derive_key_context=_KEY_FILE_CONTEXT).digest()
    raise CairnError(f"unknown key derivation {kdf['name']!r}")


def wrap(keys: DeploymentKeys, unlock: Unlock) -> bytes:
    """The wrapped document to store in the pool and the catalog."""
    kdf: dict[str, Any] = {"name": "scrypt" if unlock.passphrase is not None else "keyfile"}
    kdf["salt"] = os.urandom(16).hex()
    if kdf["name"] == "scrypt":
        kdf.update(SCRYPT)
    secret = json.dumps(
        {
            "id_key": keys.id_key.hex(),
            "data_keys": {str(k): v.hex() for k, v in keys.data_keys.items()},
            "current": keys.current,
        }
    ).encode()
    nonce = os.urandom(12)
    sealed = AESGCM(_kek(unlock, kdf)).encrypt(nonce, secret, _AAD)
    doc = {"format": FORMAT, "kdf": kdf, "nonce": nonce.hex(), "sealed": sealed.hex()}
    return json.dumps(doc, indent=2).encode() + b"\n"


def unwrap(document: bytes, unlock: Unlock | None) -> DeploymentKeys:
    if unlock is None:
        raise Locked("the pool is encrypted: give its passphrase or key file")
    try:
        doc = json.loads(document)
        if doc["format"] > FORMAT:
            raise CairnError(f"keys in format {doc['format']}; this Cairn reads up to {FORMAT}")
        kek = _kek(unlock, doc["kdf"])
        nonce, sealed = bytes.fromhex(doc["nonce"]), bytes.fromhex(doc["sealed"])
    except (ValueError, KeyError, TypeError) as e:
        raise CairnError(f"the pool's key document is damaged: {e}") from e
    try:
        secret = json.loads(AESGCM(kek).decrypt(nonce, sealed, _AAD))
    except InvalidTag as e:
        raise WrongKey("wrong passphrase or key file for this pool") from e
    return DeploymentKeys(
        bytes.fromhex(secret["id_key"]),
        {int(k): bytes.fromhex(v) for k, v in secret["data_keys"].items()},
        secret["current"],
    )


class Sealer:
    """Seals and opens secret settings. Thread-safe: it holds only its key.

    The row's key is the associated data, so a sealed value moved to another row does not open.
    """

    def __init__(self, keys: DeploymentKeys):
        self._aead = AESGCM(blake3.blake3(keys.id_key, derive_key_context=_SETTINGS_CONTEXT).digest())

    def seal(self, name: str, plain: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plain.encode(), name.encode())
        return SEALED + base64.b64encode(nonce + sealed).decode()

    def unseal(self, name: str, stored: str) -> str:
        try:
            raw = base64.b64decode(stored.removeprefix(SEALED), validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], name.encode()).decode()
        except (ValueError, InvalidTag) as e:
            raise WrongKey(f"setting {name!r} does not open with this deployment's key") from e
