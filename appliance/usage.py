"""Pool usage over time, for the dashboard's chart: an hourly sample kept in the catalog's settings."""

from __future__ import annotations

import json
import time
from typing import Any

from engine.deployment import Deployment

KEY = "usage/history"
EVERY = 3600.0  # seconds between samples
KEEP = 24 * 90  # samples: ninety days


def history(dep: Deployment) -> list[list[float]]:
    """[[time, stored bytes, snapshot bytes], ...], oldest first."""
    value = dep.catalog.setting(KEY)
    return json.loads(value) if value else []


def sample(dep: Deployment, now: float | None = None) -> bool:
    """Add a sample if the last is an hour old; whether one was added."""
    now = time.time() if now is None else now
    samples = history(dep)
    if samples and now - samples[-1][0] < EVERY:
        return False
    usage = dep.pool_usage()
    samples = [*samples, [now, usage["stored_bytes"], usage["snapshot_bytes"]]][-KEEP:]
    dep.catalog.set_setting(KEY, json.dumps(samples))
    return True


def chart(samples: list[list[float]], width: int = 640, height: int = 160) -> dict[str, Any]:
    """Polyline points for the stored and the snapshot bytes, scaled into width x height (an inline SVG)."""
    if len(samples) < 2:
        return {"stored": "", "logical": "", "width": width, "height": height, "top": 0}
    t0, t1 = samples[0][0], samples[-1][0]
    top = max(max(s[1], s[2]) for s in samples) or 1

    def points(i: int) -> str:
        return " ".join(
            f"{(s[0] - t0) / (t1 - t0 or 1) * width:.1f},{height - s[i] / top * height:.1f}" for s in samples
        )

    return {"stored": points(1), "logical": points(2), "width": width, "height": height, "top": top}
