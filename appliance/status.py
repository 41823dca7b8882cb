"""Each source's backup status: its last successful backup, its age against `stale_after`, its last session.

The last successful backup is the newer of the last session that ended
well and the newest snapshot (a source fed through the mount or WebDAV has
snapshots but no sessions). Colours: green while the last backup is younger
than `stale_after` and the last session did not fail; amber when it is
young but the last session failed; red when it is older, or there is none.
A source that turns red mails its `notify_email` once per stale spell.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from engine.sessions import FAILED, RUNNING

from .config import Config

log = logging.getLogger(__name__)
ALARMED = "stale/"  # + source: the last backup time an alarm was mailed for


@dataclass(frozen=True)
class SourceStatus:
    source: str
    last_backup: float | None
    age: float | None  # seconds
    stale_after: float  # hours
    colour: str  # green | amber | red
    last_session: dict[str, Any] | None  # id, state, reason, ended
    running: int  # sessions writing now
    created: float

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def statuses(services: Any, now: float | None = None) -> list[SourceStatus]:
    now = time.time() if now is None else now
    config = Config(services.deployment.catalog)
    stored = config.stored()
    access = services.accounts.source_access()
    done = services.sessions.last_success()
    latest: dict[str, Any] = {}
    running: Counter[str] = Counter()
    for s in services.sessions.recent(limit=1000):  # newest first: the first seen per source is its last
        latest.setdefault(s.source, s)
        running[s.source] += s.state == RUNNING
    out = []
    for src in services.deployment.list_sources():
        group = access.get(src.name, (None, None))[0]
        hours = float(config.value("stale_after", src.name, group, stored))
        times = [t for t in (done.get(src.name), src.last_snapshot) if t is not None]
        last = max(times) if times else None
        age = None if last is None else max(0.0, now - last)
        session = latest.get(src.name)
        failed = session is not None and session.state == FAILED and (last is None or (session.ended or 0) > last)
        colour = "red" if age is None or age > hours * 3600 else "amber" if failed else "green"
        summary = None
        if session is not None:
            summary = {"id": session.id, "state": session.state, "reason": session.reason, "started": session.started,
                       "ended": session.ended, "door": session.door, "client": session.client}  # fmt: skip
        out.append(SourceStatus(src.name, last, age, hours, colour, summary, running[src.name], src.created))
    return out


def alarm_stale(services: Any, notifier_send: Any, now: float | None = None) -> list[str]:
    """Mail once for each source that went stale; the sources mailed."""
    catalog = services.deployment.catalog
    config = Config(catalog)
    stored = config.stored()
    access = services.accounts.source_access()
    mailed = []
    for st in statuses(services, now):
        if st.colour != "red":
            continue
        since = st.last_backup if st.last_backup is not None else st.created
        if (time.time() if now is None else now) - since <= st.stale_after * 3600:
            continue  # a new source is not stale before its first `stale_after` has passed
        key, old = ALARMED + st.source, catalog.setting(ALARMED + st.source)
        if old == json.dumps(since) or not catalog.swap_setting(key, old, json.dumps(since)):
            continue  # mailed already for this spell (or by another appliance on the catalog)
        group = access.get(st.source, (None, None))[0]
        to = config.value("notify_email", st.source, group, stored)
        if to:
            when = "never been backed up" if st.age is None else f"had no backup for {st.age / 3600:.0f} hours"
            body = f"Source {st.source} has {when} (stale_after: {st.stale_after:g} hours).\n"
            notifier_send(to, f"Cairn: source {st.source} is stale", body, stored)
        mailed.append(st.source)
    return mailed
