"""Settings in levels: global, group, source. The effective view says where each value comes from.

Stored in the catalog's settings table as JSON under `cfg/<level>/<key>`
(level: `global`, `group:<name>`, `source:<name>`). Only the database URL
lives outside the catalog.
"""

from __future__ import annotations

import json
from typing import Any

from croniter import croniter

from engine.catalog import Catalog
from engine.errors import InvalidArgument

from .retention import Policy


def _schedule(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or not croniter.is_valid(value)):
        raise InvalidArgument(f"a schedule is a cron expression such as '0 2 * * *', not {value!r}")
    return value


def _retention(value: Any) -> Any:
    return Policy.from_json(value).to_json()


def _email(value: Any) -> Any:
    if value is not None and (not isinstance(value, str) or "@" not in value or len(value) > 254):
        raise InvalidArgument("notify_email is an address such as ops@example.org")
    return value


def _boolean(value: Any) -> Any:
    if not isinstance(value, bool):
        raise InvalidArgument("a yes/no setting is true or false")
    return value


def _smtp(value: Any) -> Any:
    allowed = {"host", "port", "from", "user", "password", "starttls"}
    if value is not None and (not isinstance(value, dict) or "host" not in value or set(value) - allowed):
        raise InvalidArgument(f"smtp is an object with host and some of: {', '.join(sorted(allowed - {'host'}))}")
    return value


# key -> (default, check)
KNOWN: dict[str, tuple[Any, Any]] = {
    "schedule": (None, _schedule),  # when to snapshot the source (cron, local time)
    "retention": ({}, _retention),  # which snapshots to keep (restic's forget rules)
    "notify_email": (None, _email),  # where job failures and digests go
    "notify_success": (False, _boolean),  # also mail when a job succeeds
    "smtp": (None, _smtp),  # the mail server (global)
    "digest_schedule": (None, _schedule),  # when to mail the summary of the last day's jobs (global)
}


def _level(group: str | None, source: str | None) -> str:
    if group and source:
        raise InvalidArgument("a setting belongs to a group or a source, not both")
    return f"source:{source}" if source else f"group:{group}" if group else "global"


class Config:
    """Thread-safe: every call uses its own catalog connection."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def set(self, key: str, value: Any, *, group: str | None = None, source: str | None = None) -> None:
        """Set a value at a level; None at a group or source level removes it there (falls back)."""
        if key not in KNOWN:
            raise InvalidArgument(f"unknown setting {key!r}; known: {', '.join(KNOWN)}")
        row_key = f"cfg/{_level(group, source)}/{key}"
        removed = value is None and bool(group or source)
        self.catalog.set_setting(row_key, None if removed else json.dumps(KNOWN[key][1](value)))

    def stored(self) -> dict[str, str]:
        """Every stored settings row, read once: pass it to `effective` and `value` to ask many questions."""
        return self.catalog.settings_like("cfg/%")  # secrets opened with the deployment's key

    def effective(
        self, source: str | None = None, group: str | None = None, stored: dict[str, str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every setting's value for a source (in a group): {key: {"value": ..., "from": level}}."""
        rows = self.stored() if stored is None else stored
        levels = ["global"] + ([f"group:{group}"] if group else []) + ([f"source:{source}"] if source else [])
        out = {}
        for key, (default, _) in KNOWN.items():
            out[key] = {"value": default, "from": "default"}
            for level in levels:
                value = rows.get(f"cfg/{level}/{key}")
                if value is not None:
                    out[key] = {"value": json.loads(value), "from": level}
        return out

    def value(
        self, key: str, source: str | None = None, group: str | None = None, stored: dict[str, str] | None = None
    ) -> Any:
        return self.effective(source, group, stored)[key]["value"]
