"""A folder of the share opened in a browser: a plain page that says how to connect, and the folder's names.

WebDAV clients never GET a folder (they PROPFIND it); a browser does. The page has no script and no
style (the share's policy forbids both), and lists at most LISTED names, a page of lookups at a time.
"""

from __future__ import annotations

import html
import itertools
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from wsgidav import util
from wsgidav.dav_error import HTTP_OK
from wsgidav.mw.base_mw import BaseMiddleware

LISTED = 1000

_HELP = """<p>This is Cairn's WebDAV share. Open it in a file manager or a WebDAV client rather than a
browser, at <code>{url}</code>:</p>
<ul>
<li>Windows: File Explorer, <i>Map network drive</i>, folder <code>{url}</code>
(or <code>net use * {url}</code>).</li>
<li>macOS: Finder, <i>Go</i>, <i>Connect to Server</i>, <code>{url}</code>.</li>
<li>Linux: the file manager's <i>Connect to Server</i> with <code>{davs}</code>,
or <code>rclone</code> with a <code>webdav</code> remote.</li>
</ul>
"""
_WEB_UI = '<p>To browse snapshots and restore files in a browser, use the <a href="/">web UI</a>.</p>'


class Listing(BaseMiddleware):  # type: ignore[misc]
    """GET of a folder: the page above; HEAD: 200 with no body. Everything else goes on down the stack."""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        provider = environ.get("wsgidav.provider")
        if method not in ("GET", "HEAD") or provider is None:
            return self.next_app(environ, start_response)  # type: ignore[no-any-return]
        folder = provider.get_resource_inst(environ["PATH_INFO"], environ)
        if folder is None or not folder.is_collection:
            return self.next_app(environ, start_response)  # type: ignore[no-any-return]
        if method == "HEAD":
            return util.send_status_response(environ, start_response, HTTP_OK, is_head=True)  # type: ignore[no-any-return]
        mount = environ.get("SCRIPT_NAME", "")  # "/dav" under `cairn serve`, which has the web UI at "/"
        body = page(folder, util.make_complete_url(environ).split("?", 1)[0], mount).encode()
        start_response("200 OK", [
            ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
            ("Cache-Control", "private, no-store"),
        ])  # fmt: skip
        return [body]


def page(folder: Any, url: str, mount: str) -> str:
    """The page of `folder`, reached at `url` (the address to connect to) under the share's `mount` path."""
    members = list(itertools.islice(folder.members(), LISTED + 1))
    base = mount + folder.path.rstrip("/") + "/"
    items = []
    for m in members[:LISTED]:
        slash = "/" if m.is_collection else ""
        href = quote(base + m.name + slash, errors="surrogateescape")
        items.append(f'<li><a href="{href}">{html.escape(m.name)}{slash}</a></li>')
    more = f"<p>Only the first {LISTED} names are shown here.</p>" if len(members) > LISTED else ""
    up = base.rstrip("/").rsplit("/", 1)[0] + "/"
    parent = f'<li><a href="{quote(up, errors="surrogateescape")}">../</a></li>' if folder.path.strip("/") else ""
    title = html.escape(folder.path or "/")
    davs = url.replace("https://", "davs://").replace("http://", "dav://")
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title} · Cairn share</title></head>'
        f"<body><h1>{title}</h1>{_HELP.format(url=html.escape(url), davs=html.escape(davs))}{_WEB_UI if mount else ''}"
        f"<ul>{parent}{''.join(items)}</ul>{more}</body></html>"
    )
