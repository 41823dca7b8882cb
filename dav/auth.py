"""HTTP Basic authentication against a user list (a file of `name:scrypt-hash` lines).

Passwords are stored as scrypt hashes. Checking one costs ~50 ms of CPU
(n=2**14), and clients such as rclone send the credentials with every
request, so a successful check is remembered in memory, keyed by a hash of
the password under a per-process key; nothing reversible is kept.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from pathlib import Path
from typing import Any

from wsgidav.dc.base_dc import BaseDomainController

from engine.errors import InvalidArgument

REALM = "cairn"
N, R, P = 1 << 14, 8, 1
REMEMBERED = 1024  # successful checks kept; more distinct users than this is not a WebDAV share's load


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P)
    return "$".join(["scrypt", str(N), str(R), str(P), _b64(salt), _b64(digest)])


def check_password(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(want)
        )
    except ValueError:
        return False
    return hmac.compare_digest(want, got)


def load_users(path: Path) -> dict[str, str]:
    """Read a user list: `name:hash` per line; `#` starts a comment."""
    users: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, stored = line.partition(":")
        if not sep or not name or not stored.startswith("scrypt$"):
            raise InvalidArgument(f"{path}:{number}: expected name:scrypt$..., as `cairn dav-user` writes")
        users[name] = stored
    return users


def save_user(path: Path, name: str, password: str) -> None:
    """Add a user to a user list, or change their password."""
    if not name or ":" in name or any(c.isspace() for c in name):
        raise InvalidArgument(f"invalid user name {name!r}")
    users = load_users(path) if path.exists() else {}
    users[name] = hash_password(password)
    path.write_text("".join(f"{n}:{h}\n" for n, h in sorted(users.items())))
    path.chmod(0o600)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class UserList(BaseDomainController):  # type: ignore[misc]
    """wsgidav's domain controller over the configured users. Thread-safe: `_lock` guards `_ok`."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]):
        super().__init__(wsgidav_app, config)
        self.users: dict[str, str] = config["cairn"]["users"]
        self.anonymous: bool = config["cairn"]["anonymous"]
        self._key = secrets.token_bytes(32)
        self._lock = threading.Lock()
        self._ok: dict[tuple[str, bytes], None] = {}

    def __str__(self) -> str:
        return f"{type(self).__name__}({len(self.users)} users)"

    def get_domain_realm(self, path_info: str, environ: dict[str, Any]) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any]) -> bool:
        return not self.anonymous

    def supports_http_digest_auth(self) -> bool:
        return False  # digest needs the plain password, or a hash in digest's own weak form

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict[str, Any]) -> bool:
        stored = self.users.get(user_name)
        if stored is None:
            return False
        token = (user_name, hmac.digest(self._key, (stored + "\0" + password).encode(), "sha256"))
        with self._lock:
            if token in self._ok:
                return True
        if not check_password(stored, password):
            return False
        with self._lock:
            if len(self._ok) >= REMEMBERED:
                self._ok.pop(next(iter(self._ok)))
            self._ok[token] = None
        return True
