"""Password hashes: scrypt (n=2**14, r=8, p=1), stored as `scrypt$n$r$p$salt$digest`.

Apart from auth.py so that the accounts (appliance/accounts.py) check a
password without importing the WebDAV server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

N, R, P = 1 << 14, 8, 1
# The hash of a random password nobody kept: checked against when a name is unknown, so that an
# unknown name costs the same scrypt as a known one with a wrong password (~50 ms against ~4 ms).
UNKNOWN = (
    "scrypt$16384$8$1$EP2AyTyRXuLu73ddWiuSnA==$1xNVP65zQMcBMmpgqk/7f0HsENw4HY/J5I/+bFgprDhkYcXhpiTxy5RmkEWGOcuWS29U"
    "BkeyE+9WfrdbMboUgQ=="
)


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


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
