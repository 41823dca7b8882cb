"""How the appliance words numbers, times and jobs for people, the same in the CLI and the web UI."""

from __future__ import annotations

import time
from typing import Any


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def when(value: float | None) -> str:
    """A moment in local time, to the minute."""
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(value)) if value else "never"


def exact(value: float | None) -> str:
    """A moment in local time, to the second, with the zone (what a hover shows)."""
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(value)) if value else "never"


def ago(seconds: float | None) -> str:
    """An age: "just now", "12 min ago", "3 h ago", "4 d ago"."""
    if seconds is None:
        return "never"
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 48 * 3600:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"


def span(seconds: float | None) -> str:
    """A length of time: "0.4 s", "3 min 12 s", "2 h 5 min"; "" when unknown."""
    if seconds is None:
        return ""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def job_summary(kind: str, params: dict[str, Any], state: str, progress: dict[str, Any] | None,
                error: str | None) -> str:  # fmt: skip
    """One line on what a job did (or is doing), from its parameters and its result or progress."""
    p = progress or {}
    if state == "queued":
        return "waiting for a worker"
    if error:
        return error
    if state == "running":
        return _running(kind, p)
    return _done(kind, params, p) if p else state


def _running(kind: str, p: dict[str, Any]) -> str:
    if "step" in p:
        return str(p["step"])
    if kind == "scrub" and "packs" in p:
        return f"checked {plural(p['packs'], 'pack')}, {human_bytes(p.get('bytes', 0))}"
    if kind == "gc" and "packs" in p:
        return f"examined {plural(p['packs'], 'pack')}, {human_bytes(p.get('bytes_freed', 0))} freed so far"
    return "running"


def _done(kind: str, params: dict[str, Any], p: dict[str, Any]) -> str:
    if kind == "snapshot":
        if p.get("unchanged"):
            return f"nothing changed since snapshot {p.get('snapshot')} of {p.get('source')}: none taken"
        deleted = len(p.get("deleted") or [])
        line = (f"took snapshot {p.get('snapshot')} of {p.get('source')}: "
                f"{plural(p.get('files', 0), 'file')}, {human_bytes(p.get('bytes', 0))}")  # fmt: skip
        return line + (f"; retention deleted {plural(deleted, 'snapshot')}" if deleted else "")
    if kind == "restore":
        return f"restored {plural(p.get('files', 0), 'file')}, {human_bytes(p.get('bytes', 0))} to {p.get('to')}"
    if kind == "forget":
        return f"retention deleted {plural(len(p.get('deleted') or []), 'snapshot')} of {params.get('source')}"
    if kind == "gc":
        verb = "would free" if p.get("dry_run") else "freed"
        took = f" in {p['seconds']:.1f} s" if "seconds" in p else ""
        line = (f"examined {plural(p.get('packs', 0), 'pack')} ({human_bytes(p.get('pack_bytes', 0))}){took}, "
                f"{verb} {human_bytes(p.get('bytes_freed', 0))}")  # fmt: skip
        if "dead_blobs" in p:
            line += (f": {plural(p['dead_blobs'], 'dead blob')}, {plural(p.get('packs_deleted', 0), 'pack')} "
                     f"deleted, {p.get('packs_written', 0)} written")  # fmt: skip
        return line
    if kind == "scrub":
        damage = len(p.get("damage") or [])
        found = f"{plural(damage, 'damaged blob')} found" if damage else "no damage"
        return (f"checked {plural(p.get('packs', 0), 'pack')}, {plural(p.get('blobs', 0), 'blob')}, "
                f"{human_bytes(p.get('bytes', 0))}: {found}")  # fmt: skip
    return "done"


def job_percent(kind: str, state: str, progress: dict[str, Any] | None) -> float | None:
    """How far a running job is, 0-100, where its total is known; None otherwise."""
    p = progress or {}
    if state != "running":
        return 100.0 if state == "done" else None
    total = p.get("total_bytes")
    if kind == "scrub" and total:
        return min(100.0, 100.0 * float(p.get("bytes", 0)) / float(total))
    return None
