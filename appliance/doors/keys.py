"""The SSH keys of sources: registered public keys, looked up by sshd when a client logs in.

A key belongs to one source; sshd learns it from the catalog at each login
(AuthorizedKeysCommand), so removing a key locks its client out at once.
Only public keys are stored; a generated pair's private half is handed out
once and forgotten. Thread-safe: every call uses its own catalog connection.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select

from engine.catalog import Catalog
from engine.catalog.schema import source_keys, sources
from engine.errors import Exists, InvalidArgument, NotFound

TYPES = {
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
}  # fmt: skip
MAX_KEY = 16384  # an RSA key of 16384 bits is about 2.8 KB of base64


@dataclass(frozen=True)
class SourceKey:
    id: int
    source: str
    name: str
    key: str
    fingerprint: str
    created: float

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def parse_public_key(text: str) -> tuple[str, str, str]:
    """(key as "type base64", its SHA256 fingerprint, its comment) from one authorized_keys-style line."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1:
        raise InvalidArgument("give exactly one public key (a line such as 'ssh-ed25519 AAAA… you@host')")
    parts = lines[0].split(None, 2)
    if len(lines[0]) > MAX_KEY or len(parts) < 2 or parts[0] not in TYPES:
        raise InvalidArgument(
            "not an OpenSSH public key: give the .pub file's line (ssh-ed25519, ecdsa or ssh-rsa), without options"
        )
    kind, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        named = blob[4 : 4 + length].decode()
    except (ValueError, struct.error, UnicodeDecodeError):
        raise InvalidArgument("the public key's base64 is damaged") from None
    if named != kind:
        raise InvalidArgument(f"the key says it is {named!r} but is labelled {kind!r}")
    fingerprint = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"{kind} {b64}", fingerprint, parts[2].strip() if len(parts) > 2 else ""


def generate_pair(comment: str) -> tuple[str, str]:
    """A new ed25519 key pair for a client: (private key in OpenSSH format, public key line)."""
    with tempfile.TemporaryDirectory() as tmp:  # 0700: the private half is never readable by others
        path = Path(tmp) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
                       check=True, capture_output=True)  # fmt: skip
        return path.read_text(), (path.with_suffix(".pub")).read_text().strip()


class SourceKeys:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def add(self, source: str, text: str, name: str | None = None) -> SourceKey:
        key, fingerprint, comment = parse_public_key(text)
        name = (name or comment or fingerprint)[:255]
        with self.catalog.engine.begin() as conn:
            sid = conn.execute(select(sources.c.id).where(sources.c.name == source)).scalar()
            if sid is None:
                raise NotFound(f"no source {source!r}")
            held = conn.execute(select(sources.c.name).select_from(source_keys.join(sources))
                                .where(source_keys.c.fingerprint == fingerprint)).scalar()  # fmt: skip
            if held is not None:
                where = "this source" if held == source else f"source {held!r}"
                raise Exists(f"key {fingerprint} is already registered for {where}: a key logs in to one source")
            key_id = Catalog.insert_id(conn, source_keys.insert().values(
                source_id=sid, name=name, key=key, fingerprint=fingerprint, created=time.time()))  # fmt: skip
        return self.get(key_id)

    def generate(self, source: str, name: str) -> tuple[SourceKey, str]:
        """A new key pair for a client of `source`: the public half registered, the private half returned once."""
        private, public = generate_pair(name)
        return self.add(source, public, name), private

    def get(self, key_id: int) -> SourceKey:
        found = self._select(source_keys.c.id == key_id)
        if not found:
            raise NotFound(f"no key {key_id}")
        return found[0]

    def by_fingerprint(self, fingerprint: str) -> SourceKey | None:
        found = self._select(source_keys.c.fingerprint == fingerprint)
        return found[0] if found else None

    def of(self, source: str | None = None) -> list[SourceKey]:
        return self._select(*([sources.c.name == source] if source is not None else []))

    def remove(self, source: str, key_id: int) -> None:
        key = self.get(key_id)
        if key.source != source:
            raise NotFound(f"source {source!r} has no key {key_id}")
        with self.catalog.engine.begin() as conn:
            conn.execute(delete(source_keys).where(source_keys.c.id == key_id))

    def _select(self, *where: Any) -> list[SourceKey]:
        q = select(source_keys.c.id, sources.c.name, source_keys.c.name, source_keys.c.key,
                   source_keys.c.fingerprint, source_keys.c.created).select_from(source_keys.join(sources))  # fmt: skip
        for w in where:
            q = q.where(w)
        with self.catalog.engine.connect() as conn:
            return [SourceKey(*row) for row in conn.execute(q.order_by(source_keys.c.id))]
