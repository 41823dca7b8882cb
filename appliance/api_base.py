"""What every route of the REST API shares: its blueprint, request bodies and arguments, access checks."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, current_app, request

from engine.errors import InvalidArgument, NotFound
from engine.snapshots import SnapshotInfo

from . import auth
from .access import can
from .accounts import User
from .services import Services

api = Blueprint("api", __name__, url_prefix="/api/v1")
MAX_DEPTH = 32  # levels of JSON nesting a client may send: no setting or body needs more than 4


def services() -> Services:
    return current_app.extensions["cairn"]  # type: ignore[no-any-return]


def parse_json(raw: str | bytes, must: str) -> Any:
    """JSON from a client (a request body, a form's value): any flaw is a 400 saying `must`, never a 500."""
    try:
        doc = json.loads(raw)
    except RecursionError:  # the parser recurses once a level: ~1,000 levels exhaust the stack
        raise InvalidArgument(f"{must}, nested at most {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise InvalidArgument(f"{must}: {e}") from None
    level, todo = 0, [doc]
    while todo:  # breadth first, one level a round, without recursion
        level += 1
        if level > MAX_DEPTH:
            raise InvalidArgument(f"{must}, nested at most {MAX_DEPTH} levels deep")
        todo = [v for d in todo if isinstance(d, (dict, list)) for v in (d.values() if isinstance(d, dict) else d)]
    return doc


def body(required: set[str], optional: set[str] = frozenset()) -> dict[str, Any]:  # type: ignore[assignment]
    """The request's JSON object, with exactly the fields allowed."""
    must = "the body must be a JSON object"
    doc = parse_json(request.get_data(), must) if request.is_json else None
    if not isinstance(doc, dict):
        raise InvalidArgument(must)
    unknown = set(doc) - required - optional
    missing = required - set(doc)
    if unknown or missing:
        raise InvalidArgument(
            "; ".join(
                filter(
                    None,
                    [
                        f"unknown fields: {', '.join(sorted(unknown))}" if unknown else "",
                        f"missing fields: {', '.join(sorted(missing))}" if missing else "",
                    ],
                )
            )
        )
    return doc


def opt_text(doc: dict[str, Any], key: str) -> str | None:
    return None if doc.get(key) is None else text(doc, key)


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """A whole-number query parameter within [low, high]."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidArgument(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str):
        raise InvalidArgument(f"{key} must be a string")
    return value


def user_json(u: User) -> dict[str, Any]:
    return {"name": u.name, "admin": u.admin, "roles": u.roles}


def snapshot_json(s: SnapshotInfo) -> dict[str, Any]:
    return {"name": s.name, "source": s.source, "created": s.created, "files": s.files, "bytes": s.bytes,
            "state": s.state, "uuid": s.uuid}  # fmt: skip


def allowed_source(name: str, action: str) -> tuple[User, str | None, str | None]:
    """The user, after checking they may `action` the source (404 if they may not even see it)."""
    user = auth.require_user()
    access = services().accounts.source_access()
    if name not in access:
        raise NotFound(f"no source {name!r}")
    group, owner = access[name]
    if not can(user, "see", group, owner):
        raise NotFound(f"no source {name!r}")  # what one may not see does not exist
    if not can(user, action, group, owner):
        raise auth.Forbidden(f"you may not {action} source {name!r}")
    return user, group, owner


def visible_group(user: User, group: str) -> None:
    """404 unless `user` is in `group` or an administrator (groups one is not in do not exist for one)."""
    if not user.admin and group not in user.roles:
        raise NotFound(f"no group {group!r}")
    if user.admin:
        services().accounts.group_id(group)


def require_admin(why: str = "only an administrator may do this") -> User:
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden(why)
    return user
