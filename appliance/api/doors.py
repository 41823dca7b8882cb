"""The REST API of the front doors: a source's SSH keys, rsync password and SMB share, backup sessions, backup status.

Who may: seeing a source lets one list its keys (public halves), its
sessions, its status and its share with the Windows commands (which say
whether one may write into it); configuring it lets one add, generate and remove
keys and set its rsync password (a key or a password lets a machine write
into the source). A generated private key or password is in the answer to
the call that made it, and nowhere after.
"""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify, request

from engine.errors import NotFound

from .. import auth
from ..doors.rsyncd import SECRET, new_secret, set_secret
from ..request import allowed_source, client_host, services, visible_sources
from ..status import statuses
from ..windows_client import windows_share
from .base import api, body, int_arg, opt_text, text


def _visible() -> set[str]:
    return {s["name"] for s in visible_sources(auth.require_user())}


@api.get("/sources/<name>/keys")
def keys(name: str) -> Response:
    allowed_source(name, "see")
    return jsonify([k.to_json() for k in services().keys.of(name)])


@api.post("/sources/<name>/keys")
def add_key(name: str) -> Response:
    allowed_source(name, "configure")
    doc = body({"key"}, {"name"})
    key = services().keys.add(name, text(doc, "key"), opt_text(doc, "name"))
    return jsonify(key.to_json()), 201  # type: ignore[return-value]


@api.post("/sources/<name>/keys/generate")
def generate_key(name: str) -> Response:
    """A new key pair: the public half registered, the private half in this answer only."""
    allowed_source(name, "configure")
    doc = body(set(), {"name"}) if request.content_length else {}
    key, private = services().keys.generate(name, opt_text(doc, "name") or f"cairn-{name}")
    reply = jsonify({**key.to_json(), "private_key": private})
    reply.headers["Cache-Control"] = "no-store"
    return reply, 201  # type: ignore[return-value]


@api.delete("/sources/<name>/keys/<int(max=9223372036854775807):key_id>")
def remove_key(name: str, key_id: int) -> Response:
    allowed_source(name, "configure")
    services().keys.remove(name, key_id)
    return jsonify({})


@api.get("/sources/<name>/rsync-secret")
def rsync_secret(name: str) -> Response:
    """Whether the rsync daemon serves the source (a password is set); never the password."""
    allowed_source(name, "see")
    return jsonify({"set": services().deployment.catalog.setting(SECRET + name) is not None})


@api.put("/sources/<name>/rsync-secret")
def set_rsync_secret(name: str) -> Response:
    """Set the source's rsync password (`secret`), or make one (no body): shown in this answer only."""
    allowed_source(name, "configure")
    doc = body(set(), {"secret"}) if request.content_length else {}
    made = None if "secret" in doc else new_secret()
    set_secret(services().deployment.catalog, name, text(doc, "secret") if made is None else made)
    reply = jsonify({"set": True, "secret": made})
    reply.headers["Cache-Control"] = "no-store"
    return reply


@api.delete("/sources/<name>/rsync-secret")
def remove_rsync_secret(name: str) -> Response:
    allowed_source(name, "configure")
    set_secret(services().deployment.catalog, name, None)
    return jsonify({"set": False})


@api.get("/sources/<name>/smb")
def smb_share(name: str) -> Response:
    """The source's SMB share as the caller reaches it from Windows, and the commands to use it (`port` null: shut)."""
    user, group, owner = allowed_source(name, "see")
    return jsonify(windows_share(services(), user, name, group, owner, client_host()).to_json())


@api.get("/sessions")
def sessions() -> Response:
    """The newest backup sessions of the sources the caller may see (`source`, `limit`)."""
    visible = _visible()
    source = request.args.get("source")
    if source is not None and source not in visible:
        raise NotFound(f"no source {source!r}")
    limit = int_arg("limit", 100, 1, 1000)
    rows = [
        s for s in services().sessions.recent(source, limit * 4 if source is None else limit) if s.source in visible
    ]
    return jsonify([s.to_json() for s in rows[:limit]])


@api.get("/status")
def status() -> Response:
    """Each visible source's last successful backup, its age and colour against stale_after, its last session."""
    visible = _visible()
    return jsonify([s.to_json() for s in statuses(services()) if s.source in visible])


@api.get("/doors")
def doors() -> Response:
    """Where the front doors listen and the SSH host keys' fingerprints, for client setup."""
    auth.require_user()
    info = services().doors
    doc: dict[str, Any] = {"ssh": None, "rsyncd": None, "smb": None}
    if info is not None and info.ssh_port is not None:
        doc["ssh"] = {"port": info.ssh_port, "user": info.ssh_user, "host_keys": list(info.host_keys)}
    if info is not None and info.rsyncd_port is not None:
        doc["rsyncd"] = {"port": info.rsyncd_port}
    if info is not None and info.smb_port is not None:
        doc["smb"] = {"port": info.smb_port}
    return jsonify(doc)
