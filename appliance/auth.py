"""Signing in, for the API and the web UI: session cookies with CSRF tokens, or API tokens.

A request is authenticated by `Authorization: Bearer <token>` or by the
session cookie. A cookie-authenticated request that changes something must
also carry the session's CSRF token (header `X-CSRF-Token`, or the form
field `csrf`): another site can make a browser send the cookie, not read
the token. Failed logins are limited per address and name.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import defaultdict, deque

from flask import current_app, g, request, session

from .accounts import Accounts, User

SAFE = {"GET", "HEAD", "OPTIONS"}
LOGIN_FAILURES = 5  # per address and name, in LOGIN_WINDOW seconds: then 429 until the window passes
LOGIN_WINDOW = 60.0


class Unauthorized(Exception):
    """No valid credentials (401)."""


class Forbidden(Exception):
    """Signed in, but not allowed (403)."""


class TooManyAttempts(Exception):
    """Too many failed logins (429)."""


class LoginLimiter:
    """Thread-safe: `_lock` guards `_failures`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failures: dict[tuple[str, str], deque[float]] = defaultdict(deque)

    def check(self, key: tuple[str, str]) -> None:
        now = time.monotonic()
        with self._lock:
            recent = self._failures[key]
            while recent and now - recent[0] > LOGIN_WINDOW:
                recent.popleft()
            if len(recent) >= LOGIN_FAILURES:
                raise TooManyAttempts(f"too many failed logins; try again in {LOGIN_WINDOW - (now - recent[0]):.0f} s")

    def failed(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._failures[key].append(time.monotonic())


def accounts() -> Accounts:
    return current_app.extensions["cairn"].accounts  # type: ignore[no-any-return]


def login(name: str, password: str) -> User:
    limiter: LoginLimiter = current_app.extensions["cairn"].logins
    key = (request.remote_addr or "", name)
    limiter.check(key)
    try:
        user = accounts().login(name, password)
    except Exception:
        limiter.failed(key)
        raise
    session.clear()
    session["uid"] = user.id
    session["csrf"] = secrets.token_urlsafe(24)
    session.permanent = True
    return user


def csrf_token() -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)


def current_user() -> User | None:
    """The signed-in user of this request, or None; checks CSRF for cookie sessions."""
    if "user" in g:
        return g.user  # type: ignore[no-any-return]
    user = None
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        user = accounts().token_user(header[7:].strip())
        if user is None:
            raise Unauthorized("unknown or revoked token")
    elif "uid" in session:
        user = accounts().user_by_id(int(session["uid"]))
        if user is not None and request.method not in SAFE:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf")
            if not sent or not secrets.compare_digest(str(sent), str(session.get("csrf", ""))):
                raise Forbidden("missing or wrong CSRF token")
    g.user = user
    return user


def require_user() -> User:
    user = current_user()
    if user is None:
        raise Unauthorized("sign in, or send an API token")
    return user
