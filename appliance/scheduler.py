"""The scheduler: submits a snapshot job when a source's schedule (cron, local time) comes round.

One thread per appliance. The time of each source's last scheduled run is
kept in the catalog, so a restart neither repeats nor forgets a run that was
due (a run missed while the appliance was down is made once, on start), and
appliances sharing a catalog submit each run once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from . import status, usage
from .config import Config, next_run
from .services import Services

log = logging.getLogger(__name__)
TICK = 20.0  # seconds between looks: cron's unit is a minute


class Scheduler:
    def __init__(self, services: Services, *, now: Callable[[], float] = time.time):
        self.services = services
        self.config = Config(services.deployment.catalog)
        self.now = now
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cairn-scheduler", daemon=True)

    def start(self) -> None:
        try:  # the charts start from the first start, not an hour later
            usage.sample(self.services.deployment, self.now())
        except Exception:
            log.exception("cannot take a usage sample")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.wait(TICK):
            try:
                self.run_once()
            except Exception:
                log.exception("the scheduler failed; trying again")

    def run_once(self) -> list[str]:
        """Submit the jobs that are due now; returns their sources (and "digest" when it is due)."""
        now = self.now()
        usage.sample(self.services.deployment, now)
        submitted = []
        stored = self.config.stored()
        digest = self.config.value("digest_schedule", stored=stored)
        if digest and self._due("digest", digest, now, now):
            self.services.jobs.submit("digest", {})
            submitted.append("digest")
        access = self.services.accounts.source_access()
        for source in self.services.deployment.list_sources():
            group = access.get(source.name, (None, None))[0]
            schedule = self.config.value("schedule", source.name, group, stored)
            if not schedule or self.services.sessions.open_on(source.name):
                continue  # a due run waits while a backup session writes: it is not taken up yet
            if not self._due(f"source/{source.name}", schedule, source.created, now):
                continue
            self.services.jobs.submit("snapshot", {"source": source.name, "name": None, "scheduled": True},
                                      source_id=source.id)  # fmt: skip
            submitted.append(source.name)
        status.alarm_stale(self.services, self.services.notifier.send, now)
        return submitted

    def _due(self, what: str, schedule: str, first: float, now: float) -> bool:
        """Whether `schedule` came round since the last run of `what`; if so, that run is now.

        The last run is swapped in the catalog only if it is still the one
        read, so of several appliances on one catalog exactly one submits it.
        """
        catalog, key = self.services.deployment.catalog, f"sched/{what}"
        last = catalog.setting(key)
        if last is None:  # never run: count from `first`, and remember it as the baseline
            catalog.swap_setting(key, None, repr(first))
            last = catalog.setting(key) or repr(first)
        upcoming = next_run(schedule, float(last))
        if upcoming is None:  # stored before schedules were checked: this one is skipped, the others run
            log.warning("%s: schedule %r never comes round; not scheduled", what, schedule)
            return False
        if upcoming > now:
            return False
        return catalog.swap_setting(key, last, repr(now))
