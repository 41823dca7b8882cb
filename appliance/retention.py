"""Retention policies: which snapshots to keep, as restic's `forget` decides.

A policy keeps the newest N snapshots (`last`), and the newest snapshot of
each of the newest N hours, days, ISO weeks, months and years that have
one. A snapshot kept by any rule is kept; the rest may be deleted. An empty
policy keeps everything.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from engine.errors import InvalidArgument
from engine.snapshots import SnapshotInfo

RULES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
_BUCKET: dict[str, Callable[[time.struct_time], tuple[int, ...]]] = {
    "hourly": lambda t: (t.tm_year, t.tm_yday, t.tm_hour),
    "daily": lambda t: (t.tm_year, t.tm_yday),
    "weekly": lambda t: _iso_week(t),
    "monthly": lambda t: (t.tm_year, t.tm_mon),
    "yearly": lambda t: (t.tm_year,),
}


def _iso_week(t: time.struct_time) -> tuple[int, ...]:
    year, week, _ = datetime.date(t.tm_year, t.tm_mon, t.tm_mday).isocalendar()
    return (year, week)


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0

    @classmethod
    def from_json(cls, doc: object) -> Policy:
        if not isinstance(doc, dict) or set(doc) - set(RULES):
            raise InvalidArgument(f"a retention policy is an object of some of: {', '.join(RULES)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 100_000 for v in doc.values()):
            raise InvalidArgument("retention counts are whole numbers from 0")
        return cls(**doc)

    def to_json(self) -> dict[str, int]:
        return {r: getattr(self, r) for r in RULES if getattr(self, r)}

    @property
    def empty(self) -> bool:
        return not any(getattr(self, r) for r in RULES)


def keep(policy: Policy, snaps: Sequence[SnapshotInfo], utc: bool = False) -> tuple[set[str], dict[str, list[str]]]:
    """The names to keep, and for each kept name the rules that keep it."""
    if policy.empty:
        return {s.name for s in snaps}, {s.name: ["no policy"] for s in snaps}
    newest_first = sorted(snaps, key=lambda s: s.created, reverse=True)
    why: dict[str, list[str]] = {}
    for s in newest_first[: policy.last]:
        why.setdefault(s.name, []).append("last")
    clock = time.gmtime if utc else time.localtime
    for rule, bucket_of in _BUCKET.items():
        wanted = getattr(policy, rule)
        seen: set[tuple[int, ...]] = set()
        for s in newest_first:
            if len(seen) >= wanted:
                break
            bucket = bucket_of(clock(s.created))
            if bucket not in seen:
                seen.add(bucket)
                why.setdefault(s.name, []).append(rule)
    return set(why), why
