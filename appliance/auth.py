"""Signing in, for the API and the web UI: web sessions with CSRF tokens, or API tokens.

A request is authenticated by `Authorization: Bearer <token>` or by the
session cookie, which holds a random token naming a web session in the
catalog (websessions.py). The cookie is set once, at sign-in, and removed
at sign-out; it is HttpOnly, SameSite=Lax and, over HTTPS, Secure. A
cookie-authenticated request that changes something must also carry the
session's CSRF token (header `X-CSRF-Token`, or the form field `csrf`):
another site can make a browser send the cookie, not read the token.
Failed sign-ins are limited per client address and name, and per address
(dav.auth.Limiter: the same limiter counts the WebDAV share's).
"""

from __future__ import annotations

import secrets

from flask import Response, after_this_request, current_app, g, request

from dav.auth import Limiter as LoginLimiter
from dav.auth import TooManyAttempts
from engine.errors import CairnError, NotPermitted

from .accounts import Accounts, User
from .websessions import LIFETIME, WebSession

__all__ = ["Forbidden", "LoginLimiter", "PasswordChange", "TooManyAttempts", "Unauthorized"]
SAFE = {"GET", "HEAD", "OPTIONS"}
COOKIE = "cairn_session"


class Unauthorized(CairnError):
    """No valid credentials."""

    status = 401


class Forbidden(NotPermitted):
    """Signed in, but not allowed."""


class PasswordChange(Forbidden):
    """Signed in with a one-time password: choosing a new one comes before anything else."""


# The pages a web session with a one-time password may still open. The API answers such a session (a
# script's, `cairn remote add`) and says `must_change` in /me; the pages lead to choosing a password first.
FIRST = {"web.password", "web.password_post", "web.logout", "web.static"}


def accounts() -> Accounts:
    return current_app.extensions["cairn"].accounts  # type: ignore[no-any-return]


def limiter_key(name: str) -> tuple[str, str]:
    return (request.remote_addr or "", name)


def login(name: str, password: str) -> tuple[User, WebSession]:
    """Check a name and password, start a web session and set its cookie on this request's response."""
    limiter: LoginLimiter = current_app.extensions["cairn"].logins
    key = limiter_key(name)
    limiter.check(key)
    try:
        user = accounts().login(name, password)
    except Exception:
        limiter.failed(key)
        raise
    old = _cookie_session()
    if old is not None:
        accounts().sessions.end(old.id)  # signing in again (perhaps as someone else) ends the last session
    token, session = accounts().sessions.start(user.id, request.remote_addr or "")
    g.web_session = session

    @after_this_request
    def set_cookie(response: Response) -> Response:
        response.set_cookie(COOKIE, token, max_age=int(LIFETIME), path="/", secure=request.is_secure,
                            httponly=True, samesite="Lax")  # fmt: skip
        return response

    return user, session


def logout() -> None:
    """End this request's web session (after checking its CSRF token) and remove the cookie."""
    current_user()
    session = g.get("web_session")
    if session is not None:
        accounts().sessions.end(session.id)

    @after_this_request
    def delete_cookie(response: Response) -> Response:
        response.delete_cookie(COOKIE, path="/", secure=request.is_secure, httponly=True, samesite="Lax")
        return response


def csrf_token() -> str:
    """The web session's CSRF token ("" without a session: nothing to protect)."""
    current_user()
    session = g.get("web_session")
    return session.csrf if session is not None else ""


def web_session() -> WebSession | None:
    """This request's web session, if it is signed in by cookie."""
    current_user()
    return g.get("web_session")  # type: ignore[no-any-return]


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
    else:
        session = _cookie_session()
        if session is not None:
            user = accounts().user_by_id(session.user_id)
        if user is not None and session is not None:
            g.web_session = session
            if request.method not in SAFE:
                sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf")
                if not sent or not secrets.compare_digest(str(sent), session.csrf):
                    raise Forbidden("missing or wrong CSRF token")
    g.user = user
    return user


def _cookie_session() -> WebSession | None:
    token = request.cookies.get(COOKIE)
    return accounts().sessions.find(token) if token else None


def require_user() -> User:
    user = current_user()
    if user is None:
        raise Unauthorized("sign in, or send an API token")
    if user.must_change and request.blueprint == "web" and request.endpoint not in FIRST:
        raise PasswordChange("you signed in with a one-time password: choose your own first")
    return user
