"""Settings in levels: global, group, source. The effective view says where each value comes from.

Stored in the catalog's settings table as JSON under `cfg/<level>/<key>`
(level: `global`, `group:<name>`, `source:<name>`). Only the database URL
lives outside the catalog.

Secrets inside settings (the SMTP password) are write-only: every view of the
settings shows them as the marker `{"set": true}`, and writing that marker
back keeps the stored secret.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any

from croniter import croniter

from engine.catalog import Catalog
from engine.errors import InvalidArgument

from .retention import Policy


def _schedule(value: Any) -> Any:
    if value is not None and next_run(value) is None:
        raise InvalidArgument(f"a schedule is a cron expression that comes round, such as '0 2 * * *', not {value!r}")
    return value


NEXT_RUNS = 5  # runs a schedule's preview shows


def next_runs(schedule: Any, count: int = NEXT_RUNS) -> list[float]:
    """The next `count` times a schedule comes round (fewer, or none, if it does not)."""
    out: list[float] = []
    after = None
    while len(out) < count and (t := next_run(schedule, after)) is not None:
        out.append(t)
        after = t
    return out


def next_run(schedule: Any, after: float | None = None) -> float | None:
    """When `schedule` next comes round after `after` (now), or None if it is no cron expression or never does.

    Validity is this computation: `0 0 30 2 *` parses but has no next run.
    """
    if not isinstance(schedule, str) or len(schedule) > 200 or not croniter.is_valid(schedule):
        return None
    try:
        start = datetime.datetime.fromtimestamp(time.time() if after is None else after)  # local time, as cron
        return float(croniter(schedule, start).get_next(float))
    except (ValueError, KeyError, OverflowError):  # croniter's errors are ValueErrors
        return None


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
    if value is not None and not isinstance(value.get("password", ""), str):
        raise InvalidArgument('smtp.password is a string (or {"set": true} to keep the stored one)')
    return value


def _hours(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 24 * 366:
        raise InvalidArgument("stale_after is a number of hours, more than 0 and at most a year (8784)")
    return value


def _seconds(key: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 24 * 3600:
            raise InvalidArgument(f"{key} is a number of seconds, from 1 to a day (86400)")
        return value

    return check


def _mebibytes(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or not 16 <= value <= 1 << 20:
        raise InvalidArgument("tree_cache is a whole number of MiB, from 16 to 1048576")
    return value


# key -> (default, check)
KNOWN: dict[str, tuple[Any, Any]] = {
    "schedule": (None, _schedule),  # when to snapshot the source (cron, local time)
    "retention": ({}, _retention),  # which snapshots to keep (restic's forget rules)
    "notify_email": (None, _email),  # where job failures and digests go
    "notify_success": (False, _boolean),  # also mail when a job succeeds
    "smtp": (None, _smtp),  # the mail server
    "digest_schedule": (None, _schedule),  # when to mail the summary of the last day's jobs
    "snapshot_after_session": (True, _boolean),  # a backup session that ends well takes a snapshot
    "snapshot_unchanged": (False, _boolean),  # a scheduled snapshot is taken even when nothing changed
    "stale_after": (26, _hours),  # hours without a successful backup before the source is stale and mailed
    "smb_idle": (120, _seconds("smb_idle")),  # seconds after an SMB client that wrote leaves before its session ends
    # seconds without a change before a running appliance lets a source's working tree and lease go (read
    # at start): `cairn backup` or `pool gc` beside it wait for that
    "tree_idle": (60, _seconds("tree_idle")),
    # MiB of memory for the directories of working trees in use (read at start): the rest stays in the
    # catalog and loads when used
    "tree_cache": (512, _mebibytes),
}
# Settings of the whole appliance: a group or a source cannot have its own.
GLOBAL = frozenset({"smtp", "digest_schedule", "tree_idle", "tree_cache"})
# key -> the fields of its object value that are secrets: never shown, only replaced
SECRETS: dict[str, tuple[str, ...]] = {"smtp": ("password",)}
KEPT = {"set": True}  # what a secret shows as, and what keeps it when written back


def hide_secrets(key: str, value: Any) -> Any:
    """`value` of setting `key` as it may be shown: each secret replaced by the marker."""
    if key not in SECRETS or not isinstance(value, dict):
        return value
    return {k: (KEPT if k in SECRETS[key] else v) for k, v in value.items()}


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
        if key in GLOBAL and (group or source) and not removed:  # removing one stored before is allowed
            raise InvalidArgument(f"{key} is a setting of the whole appliance: set it without a group or source")
        if not removed:
            value = KNOWN[key][1](self._keep_secrets(key, value, row_key))
        self.catalog.set_setting(row_key, None if removed else json.dumps(value))

    def _keep_secrets(self, key: str, value: Any, row_key: str) -> Any:
        """`value` with each marker replaced by the secret stored at the same level (a clear error if none is)."""
        fields = [f for f in SECRETS.get(key, ()) if isinstance(value, dict) and value.get(f) == KEPT]
        if not fields:
            return value
        raw = self.catalog.setting(row_key)
        old = json.loads(raw) if raw else {}
        value = dict(value)
        for field in fields:
            if not isinstance(old, dict) or field not in old:
                raise InvalidArgument(f"no {key}.{field} is stored at this level to keep: send the {field} itself")
            value[field] = old[field]
        return value

    def stored(self) -> dict[str, str]:
        """Every stored settings row, read once: pass it to `effective` and `value` to ask many questions."""
        return self.catalog.settings_like("cfg/%")  # secrets opened with the deployment's key

    def effective(
        self,
        source: str | None = None,
        group: str | None = None,
        stored: dict[str, str] | None = None,
        *,
        secrets: bool = False,
    ) -> dict[str, dict[str, Any]]:
        """Every setting's value for a source (in a group): {key: {"value": ..., "from": level}}.

        Secrets show as the marker unless `secrets` (for the code that uses them, never for a view).
        """
        rows = self.stored() if stored is None else stored
        levels = ["global"] + ([f"group:{group}"] if group else []) + ([f"source:{source}"] if source else [])
        out = {}
        for key, (default, _) in KNOWN.items():
            out[key] = {"value": default, "from": "default"}
            for level in levels[:1] if key in GLOBAL else levels:
                value = rows.get(f"cfg/{level}/{key}")
                if value is not None:
                    parsed = json.loads(value)
                    out[key] = {"value": parsed if secrets else hide_secrets(key, parsed), "from": level}
        return out

    def value(
        self, key: str, source: str | None = None, group: str | None = None, stored: dict[str, str] | None = None
    ) -> Any:
        """The value in force, secrets included (for the code that uses it; views use `effective`)."""
        return self.effective(source, group, stored, secrets=True)[key]["value"]
