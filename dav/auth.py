"""HTTP Basic authentication against a user list (a file of `name:scrypt-hash` lines).

Passwords are stored as scrypt hashes. Checking one costs ~50 ms of CPU
(n=2**14), and clients such as rclone send the credentials with every
request, so a successful check is remembered in memory, keyed by a hash of
the password under a per-process key; nothing reversible is kept. A name
that is not on the list costs the same scrypt as a wrong password, so the
time of a reply does not tell which names exist.

Failed checks go to a `Limiter` (one for every way in: the appliance hands
its own to the share, a stand-alone share makes one).
"""

from __future__ import annotations

import errno
import hmac
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsgidav.dc.base_dc import BaseDomainController

from engine.errors import CairnError, InvalidArgument

from .passwords import UNKNOWN, check_password, hash_password

REALM = "cairn"
REMEMBERED = 1024  # successful checks kept; more distinct users than this is not a WebDAV share's load
FAILURES = 5  # failed sign-ins per client address and name in WINDOW seconds; then refused until it passes
PER_ADDRESS = 20  # failed sign-ins per client address across all names in WINDOW: no trying name after name
WINDOW = 60.0
NAME_MAX = 64  # an account name's limit (appliance/accounts.py); a longer name is counted as its first 64
# Keys kept per table. With NAME_MAX a key and its times take ~320 bytes, so ~6.5 MB for both tables
# full (measured: 30,000 failures under 1 KB names from as many addresses); flushing
# a key out early takes failures from KEYS_MAX / PER_ADDRESS = 500 addresses within one WINDOW.
KEYS_MAX = 10_000


class TooManyAttempts(CairnError):
    """Too many failed sign-ins from one client address."""

    errno = errno.EAGAIN
    status = 429


class Limiter:
    """Failed sign-ins, counted per (client address, name) and per client address.

    Not per name alone: that would let anyone lock a user out from anywhere.
    A key is `(address, name)`. Both tables are bounded: a key whose last
    failure is older than the window is dropped, and past KEYS_MAX keys the
    one whose last failure is oldest goes. Thread-safe: `_lock` guards
    `_pairs` and `_addresses` (each ordered by last failure, oldest first).
    """

    def __init__(
        self, *, failures: int = FAILURES, per_address: int = PER_ADDRESS, window: float = WINDOW,
        keys_max: int = KEYS_MAX, clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.failures, self.per_address, self.window, self.keys_max = failures, per_address, window, keys_max
        self.clock = clock
        self._lock = threading.Lock()
        self._pairs: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._addresses: OrderedDict[str, list[float]] = OrderedDict()

    def check(self, key: tuple[str, str]) -> None:
        """Raise TooManyAttempts if this address may not try this name now."""
        address, name = key[0], key[1][:NAME_MAX]
        now = self.clock()
        with self._lock:
            wait = max(self._wait(self._pairs.get((address, name)), self.failures, now),
                       self._wait(self._addresses.get(address), self.per_address, now))  # fmt: skip
        if wait > 0:
            raise TooManyAttempts(f"too many failed sign-ins; try again in {wait:.0f} s")

    def failed(self, key: tuple[str, str]) -> None:
        address, name = key[0], key[1][:NAME_MAX]
        now = self.clock()
        with self._lock:
            self._note(self._pairs, (address, name), self.failures, now)
            self._note(self._addresses, address, self.per_address, now)

    def size(self) -> int:
        """Keys kept, in both tables."""
        with self._lock:
            return len(self._pairs) + len(self._addresses)

    def _wait(self, times: list[float] | None, limit: int, now: float) -> float:
        # `times` holds the last `limit` failures at most: refused while the oldest of them is in the window.
        if times is None or len(times) < limit:
            return 0.0
        return self.window - (now - times[0])

    def _note(self, table: OrderedDict[Any, list[float]], key: Any, limit: int, now: float) -> None:
        times = table.pop(key, None) or []
        times.append(now)
        del times[:-limit]  # a list, not a deque: ~220 bytes for 5 times against ~760
        table[key] = times  # to the end: the table stays ordered by last failure
        while table:
            oldest = next(iter(table.values()))
            if len(table) <= self.keys_max and now - oldest[-1] < self.window:
                break
            table.popitem(last=False)


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


class UserList(BaseDomainController):  # type: ignore[misc]
    """wsgidav's domain controller over the configured users. Thread-safe: `_lock` guards `_ok`."""

    def __init__(self, wsgidav_app: Any, config: dict[str, Any]):
        super().__init__(wsgidav_app, config)
        self.users: dict[str, str] = config["cairn"]["users"]
        self.anonymous: bool = config["cairn"]["anonymous"]
        self.limiter: Limiter = config["cairn"]["limiter"]
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
        key = (str(environ.get("REMOTE_ADDR", "")), user_name)
        try:
            self.limiter.check(key)
        except TooManyAttempts:
            return False  # 401: wsgidav's authenticator has no other answer
        stored = self.users.get(user_name)
        if stored is None:
            check_password(UNKNOWN, password)  # the same work as a known name: the time tells nothing
            self.limiter.failed(key)
            return False
        token = (user_name, hmac.digest(self._key, (stored + "\0" + password).encode(), "sha256"))
        with self._lock:
            if token in self._ok:
                return True
        if not check_password(stored, password):
            self.limiter.failed(key)
            return False
        with self._lock:
            if len(self._ok) >= REMEMBERED:
                self._ok.pop(next(iter(self._ok)))
            self._ok[token] = None
        return True
