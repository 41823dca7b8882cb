"""Pool and source usage over time, for the dashboard's charts, and the pool's capacity.

Samples are kept in the catalog's settings: one an hour for HOURLY_DAYS days, and one a day for
DAILY_DAYS. A sample is [time, stored bytes, snapshot bytes, unique bytes, {source: newest snapshot's
bytes}] (samples from before the source sizes were kept have the first three only).
"""

from __future__ import annotations

import json
import time
from typing import Any

from engine.deployment import Deployment

KEY = "usage/history"  # hourly
DAILY_KEY = "usage/daily"
EVERY = 3600.0  # seconds between hourly samples
DAY = 86400.0
HOURLY_DAYS = 35
DAILY_DAYS = 400
GROWTH_DAYS = 7  # growth per day is measured over this window


def history(dep: Deployment, daily: bool = False) -> list[list[Any]]:
    """The samples, oldest first."""
    value = dep.catalog.setting(DAILY_KEY if daily else KEY)
    return json.loads(value) if value else []


def sample(dep: Deployment, now: float | None = None) -> bool:
    """Add an hourly sample if the last is an hour old (and a daily one if the last is a day old); whether one was."""
    now = time.time() if now is None else now
    hourly = history(dep)
    if hourly and now - hourly[-1][0] < EVERY:
        return False
    usage = dep.pool_usage()
    sizes = {name: newest for name, (newest, _) in dep.source_sizes().items()}
    point = [now, usage["stored_bytes"], usage["snapshot_bytes"], usage["unique_bytes"], sizes]
    dep.catalog.set_setting(KEY, json.dumps([*hourly, point][-int(HOURLY_DAYS * DAY / EVERY) :]))
    daily = history(dep, daily=True)
    if not daily or now - daily[-1][0] >= DAY:
        dep.catalog.set_setting(DAILY_KEY, json.dumps([*daily, point][-DAILY_DAYS:]))
    return True


def series(dep: Deployment, days: int, seen: set[str], now: float | None = None) -> dict[str, Any]:
    """The charts' data over the last `days` days: times, pool bytes, the dedup ratio, and each source in `seen`."""
    now = time.time() if now is None else now
    samples = history(dep, daily=days > 31) or history(dep)
    samples = [s for s in samples if s[0] >= now - days * DAY]
    names = sorted({n for s in samples if len(s) > 4 for n in s[4] if n in seen})
    return {
        "days": days,
        "t": [round(s[0]) for s in samples],
        "stored": [s[1] for s in samples],
        "logical": [s[2] for s in samples],
        "ratio": [round(s[2] / s[1], 2) if s[1] else None for s in samples],
        "sources": {n: [s[4].get(n) if len(s) > 4 else None for s in samples] for n in names},
    }


def capacity(dep: Deployment, usage: dict[str, Any], now: float | None = None) -> dict[str, Any]:
    """Used and free bytes, growth per day over the last week, and days until full at that rate (where known)."""
    now = time.time() if now is None else now
    free = dep.free_bytes() or None  # object storage cannot tell
    samples = history(dep)
    window = [s for s in samples if s[0] >= now - GROWTH_DAYS * DAY]
    growth = None
    if len(window) >= 2 and window[-1][0] - window[0][0] >= EVERY:
        growth = (window[-1][1] - window[0][1]) / ((window[-1][0] - window[0][0]) / DAY)
    full = free / growth if free is not None and growth is not None and growth > 0 else None
    logical, unique, stored = usage["snapshot_bytes"], usage["unique_bytes"], usage["stored_bytes"]
    return {
        "used": stored, "free": free, "growth_per_day": growth, "days_until_full": full,
        "dedup_saved": max(0, logical - unique), "compression_saved": max(0, unique - stored),
        "samples": len(samples),
    }  # fmt: skip
