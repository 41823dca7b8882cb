"""Remotes: the CLI against an appliance's REST API, as LXD's `lxc` does.

`cairn remote add NAME URL` signs in once and keeps an API token (never the
password) in `$XDG_CONFIG_HOME/cairn/remotes.json`, readable by its owner
only; `cairn --remote NAME …` then runs commands against that appliance.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from engine.errors import CairnError, NotFound

TIMEOUT = 60.0


class RemoteError(CairnError):
    """The appliance refused or failed a request; the message is its own."""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cairn" / "remotes.json"


def load() -> dict[str, dict[str, str]]:
    path = config_path()
    if not path.exists():
        return {}
    try:
        doc = json.loads(path.read_text())
    except ValueError as e:
        raise CairnError(f"{path} is damaged: {e}") from e
    return doc if isinstance(doc, dict) else {}


def save(remotes: dict[str, dict[str, str]]) -> None:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the tokens are secrets
    with os.fdopen(fd, "w") as f:
        json.dump(remotes, f, indent=2)
    os.replace(tmp, path)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects are refused, not followed: following one would carry the API token to wherever it points."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> None:  # fmt: skip
        fp.close()
        raise RemoteError(f"{req.full_url} answered with a redirect (HTTP {code}) to {newurl}, which is not "
                          "followed so that the API token goes nowhere else; if that is the appliance, "
                          "add the remote with its address")  # fmt: skip


class Client:
    """A small JSON client of /api/v1. Not thread-safe (one CLI command at a time)."""

    def __init__(self, url: str, token: str | None = None, ca: str | None = None):
        """`ca`: a certificate file to trust for this appliance (its self-signed one, DATA/tls/cert.pem)."""
        self.url = url.rstrip("/")
        self.token = token
        self.headers: dict[str, str] = {}
        handlers: list[Any] = [urllib.request.HTTPCookieProcessor(), _NoRedirects()]
        if ca is not None:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=ca)))
        self._opener = urllib.request.build_opener(*handlers)

    def _open(self, method: str, endpoint: str, body: Any, query: dict[str, Any]) -> Any:
        """Send one request; the appliance's errors become RemoteError (NotFound for a 404) with its message."""
        url = f"{self.url}/api/v1{endpoint}"
        params = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        headers = {"Content-Type": "application/json", **self.headers}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url + (f"?{params}" if params else ""), data, headers, method=method)
        try:
            return self._opener.open(request, timeout=TIMEOUT)
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read()).get("error", e.reason)
            except ValueError:
                message = e.reason
            raise (NotFound if e.code == 404 else RemoteError)(f"{self.url}: {message} (HTTP {e.code})") from e
        except (urllib.error.URLError, OSError) as e:
            raise RemoteError(f"cannot reach {self.url}: {e}") from e

    def stream(self, endpoint: str, **query: Any) -> Any:
        """A GET whose body is read as it comes (downloads); the caller closes it."""
        return self._open("GET", endpoint, None, query)

    def call(self, method: str, endpoint: str, body: Any = None, **query: Any) -> Any:
        """One JSON request and its JSON answer."""
        with self._open(method, endpoint, body, query) as reply:
            return json.loads(reply.read() or b"null")

    def login_for_token(self, user: str, password: str, token_name: str) -> str:
        """Sign in with a password once, and make an API token for later calls."""
        signed_in = self.call("POST", "/login", {"name": user, "password": password})
        self.headers["X-CSRF-Token"] = signed_in["csrf"]
        token = self.call("POST", "/tokens", {"name": token_name})["token"]
        self.headers.clear()
        return str(token)


def client(name: str) -> Client:
    remotes = load()
    if name not in remotes:
        raise CairnError(f"no remote {name!r}; add it with `cairn remote add {name} URL`")
    return Client(remotes[name]["url"], remotes[name]["token"], remotes[name].get("ca"))
