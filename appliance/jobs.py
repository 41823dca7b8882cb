"""Jobs: long work (snapshots, gc, scrub) as rows in the catalog, run by worker threads.

Workers claim a queued job with `SELECT … FOR UPDATE SKIP LOCKED` on
PostgreSQL, so several appliances can share one catalog; SQLite has one
writer at a time, so a conditional UPDATE does the same there. A job's
progress is a JSON document the UI polls or streams; its log, lines with
their times (started, each step, how it ended).

A queued job can be cancelled. A running one of a kind in STOPPABLE can be
asked to stop: it stops at its next progress report, which for those kinds
is always a point where stopping leaves everything whole (between packs of
a scrub or a collection; before a snapshot freezes the tree).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from engine.catalog import Catalog
from engine.catalog.schema import jobs
from engine.errors import CairnError, Conflict, NotFound
from engine.leases import dead_here, new_owner

log = logging.getLogger(__name__)
POLL = 1.0  # seconds between looks at the queue when nothing wakes a worker
ENDED = ("done", "failed", "cancelled")  # a job in one of these states never changes again
STOPPABLE = ("gc", "scrub", "snapshot")
STOP_CHECK = 1.0  # seconds between looks at whether a running job was asked to stop
LOG_LINES = 200  # a job's log keeps its last lines: a step reported in a loop cannot grow it without end


@dataclass(frozen=True)
class Job:
    id: int
    kind: str
    params: dict[str, Any]
    state: str
    progress: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None
    error: str | None
    source_id: int | None
    requested_by: int | None
    log: list[tuple[float, str]]
    stop_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Stopped(CairnError):
    """A running job was asked to stop, and stopped."""


Progress = Callable[[dict[str, Any]], None]
Handler = Callable[[Job, Progress], dict[str, Any] | None]


class JobQueue:
    """Thread-safe: every call uses its own catalog connection."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.wake = threading.Event()

    def submit(self, kind: str, params: dict[str, Any], *, source_id: int | None = None,
               user_id: int | None = None) -> Job:  # fmt: skip
        with self.catalog.engine.begin() as conn:
            job_id = Catalog.insert_id(conn, jobs.insert().values(
                kind=kind, params=json.dumps(params), state="queued", created=time.time(),
                source_id=source_id, requested_by=user_id,
            ))  # fmt: skip
        self.wake.set()
        return self.get(job_id)

    def get(self, job_id: int) -> Job:
        with self.catalog.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            raise NotFound(f"no job {job_id}")
        return _job(row)

    def list(self, limit: int = 100, state: str | None = None) -> list[Job]:
        q = select(jobs).order_by(jobs.c.id.desc()).limit(limit)
        if state is not None:
            q = q.where(jobs.c.state == state)
        with self.catalog.engine.connect() as conn:
            return [_job(r) for r in conn.execute(q)]

    def claim(self, worker: str) -> Job | None:
        with self.catalog.engine.begin() as conn:
            q = select(jobs.c.id).where(jobs.c.state == "queued").order_by(jobs.c.id).limit(1)
            if self.catalog.dialect == "postgresql":
                q = q.with_for_update(skip_locked=True)
            job_id = conn.execute(q).scalar()
            if job_id is None:
                return None
            claimed = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="running", started=time.time(), worker=worker)
            )  # fmt: skip
            if not claimed.rowcount:
                return None  # another worker was first
        return self.get(job_id)

    def cancel(self, job_id: int, by: str) -> Job:
        """Cancel a queued job, or ask a running one of a STOPPABLE kind to stop; else Conflict."""
        with self.catalog.engine.begin() as conn:
            cancelled = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == "queued")
                .values(state="cancelled", finished=time.time(), error=f"cancelled by {by} before it ran")
            )  # fmt: skip
            stopping = conn.execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.state == "running", jobs.c.kind.in_(STOPPABLE))
                .values(stop_by=by)
            )  # fmt: skip
        job = self.get(job_id)
        if cancelled.rowcount:
            self.note(job_id, f"cancelled by {by} before it ran")
        elif stopping.rowcount:
            self.note(job_id, f"{by} asked it to stop")
        elif job.state == "running":
            raise Conflict(f"job {job_id} ({job.kind}) cannot stop cleanly while it runs: it ends on its own")
        else:
            raise Conflict(f"job {job_id} is {job.state}: only a queued or running job can be cancelled")
        return self.get(job_id)

    def report(self, job_id: int, progress: dict[str, Any]) -> None:
        with self.catalog.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(progress=json.dumps(progress)))

    def note(self, job_id: int, text: str) -> None:
        """Add a line to the job's log."""
        with self.catalog.engine.begin() as conn:
            raw = conn.execute(select(jobs.c.log).where(jobs.c.id == job_id)).scalar()
            lines = json.loads(raw) if raw else []
            lines.append([time.time(), text])
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(log=json.dumps(lines[-LOG_LINES:])))

    def stop_asked(self, job_id: int) -> str | None:
        with self.catalog.engine.connect() as conn:
            return conn.execute(select(jobs.c.stop_by).where(jobs.c.id == job_id)).scalar()

    def finish(self, job_id: int, result: dict[str, Any] | None, error: str | None, state: str | None = None) -> None:
        state = state or ("failed" if error else "done")
        values: dict[str, Any] = {"state": state, "finished": time.time(), "error": error}
        if result is not None:
            values["progress"] = json.dumps(result)
        with self.catalog.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(**values))

    def fail_orphans(self) -> int:
        """Jobs left running by a process of this host that died: failed, with a reason."""
        with self.catalog.engine.begin() as conn:
            rows = conn.execute(select(jobs.c.id, jobs.c.worker).where(jobs.c.state == "running")).all()
            dead = [i for i, w in rows if w and dead_here(w)]
            if dead:
                conn.execute(update(jobs).where(jobs.c.id.in_(dead)).values(
                    state="failed", finished=time.time(), error="the process running it ended"))  # fmt: skip
        return len(dead)


class Runner:
    """Worker threads that run queued jobs with the handler registered for their kind."""

    def __init__(self, queue: JobQueue, handlers: dict[str, Handler], workers: int = 2,
                 finished: Callable[[Job, str | None], None] | None = None):  # fmt: skip
        self.queue = queue
        self.handlers = handlers
        self.finished = finished
        self.owner = new_owner()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._work, name=f"cairn-job-{i}", daemon=True)
                         for i in range(workers)]  # fmt: skip

    def start(self) -> None:
        self.queue.fail_orphans()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        self.queue.wake.set()
        for t in self._threads:
            t.join(timeout=60)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                job = self.queue.claim(self.owner)
            except Exception:
                log.exception("cannot claim a job; trying again")
                job = None
            if job is None:
                self.queue.wake.wait(POLL)
                self.queue.wake.clear()
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        handler = self.handlers.get(job.kind)
        self.queue.note(job.id, "started")
        try:
            if handler is None:
                raise CairnError(f"no handler for jobs of kind {job.kind!r}")
            result = handler(job, _Reporter(self.queue, job))
            self.queue.finish(job.id, result, None)
            self.queue.note(job.id, "done")
            error = None
        except Stopped as e:
            error = str(e)
            self.queue.finish(job.id, None, error, "cancelled")
            self.queue.note(job.id, error)
        except Exception as e:
            log.warning("job %d (%s) failed: %s", job.id, job.kind, e, exc_info=not isinstance(e, CairnError))
            error = str(e) or type(e).__name__
            self.queue.finish(job.id, None, error)
            self.queue.note(job.id, f"failed: {error}")
        if self.finished is not None:
            try:
                self.finished(job, error)
            except Exception:
                log.exception("telling about job %d failed", job.id)


class _Reporter:
    """A running job's progress: stored; a new step logged; and, for a STOPPABLE kind, where it stops if asked."""

    def __init__(self, queue: JobQueue, job: Job):
        self.queue, self.job = queue, job
        self.step: str | None = None
        self.checked = float("-inf")  # the first report looks

    def __call__(self, progress: dict[str, Any]) -> None:
        if self.job.kind in STOPPABLE and time.monotonic() - self.checked >= STOP_CHECK:
            self.checked = time.monotonic()
            by = self.queue.stop_asked(self.job.id)
            if by is not None:
                raise Stopped(f"stopped while running, as {by} asked")
        self.queue.report(self.job.id, progress)
        step = progress.get("step")
        if isinstance(step, str) and step != self.step:
            self.step = step
            self.queue.note(self.job.id, step)


def _job(row: Any) -> Job:
    return Job(row.id, row.kind, json.loads(row.params), row.state, json.loads(row.progress) if row.progress else None,
               row.created, row.started, row.finished, row.error, row.source_id, row.requested_by,
               [(t, text) for t, text in json.loads(row.log)] if row.log else [], row.stop_by)  # fmt: skip
