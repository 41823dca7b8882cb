"""What every route of the REST API shares: its blueprint, request bodies and arguments, access checks."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from engine.errors import InvalidArgument

from ..accounts import User
from ..request import parse_json

api = Blueprint("api", __name__, url_prefix="/api/v1")


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
    return {"name": u.name, "admin": u.admin, "roles": u.roles, "must_change": u.must_change}
