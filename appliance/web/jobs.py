"""The web UI's jobs: the table (on the dashboard and the jobs page) and a job's own page, in words.

A job's page shows its times, who asked for it, a progress bar where the total
is known, what it did in one line, its log and its error. Whoever may see a
job may cancel it while queued, or ask it to stop while running where its
kind stops cleanly (jobs.STOPPABLE).
"""

from __future__ import annotations

import time
from typing import Any

from flask import redirect, url_for
from werkzeug.wrappers import Response as BaseResponse

from .. import auth
from ..jobs import STOPPABLE, Job
from ..request import services, visible_job
from ..words import job_percent, job_summary, span
from .base import page, web


def job_views(found: list[Job]) -> list[dict[str, Any]]:
    """What a page shows of each job: the job, plus its source, requester, duration, summary and percent."""
    names = services().accounts.names() if found else {}
    return [_view(j, names) for j in found]


def _view(j: Job, names: dict[int, str]) -> dict[str, Any]:
    end = j.finished if j.finished is not None else (time.time() if j.started is not None else None)
    return {
        "job": j, "id": j.id, "kind": j.kind, "state": j.state, "source": j.params.get("source"),
        "by": names.get(j.requested_by, "a removed user") if j.requested_by is not None else _asked_by_itself(j),
        "duration": span(end - j.started) if j.started is not None and end is not None else "",
        "summary": job_summary(j.kind, j.params, j.state, j.progress, j.error),
        "percent": job_percent(j.kind, j.state, j.progress),
        "can_cancel": j.state == "queued" or (j.state == "running" and j.kind in STOPPABLE and not j.stop_by),
    }  # fmt: skip


def _asked_by_itself(j: Job) -> str:
    """Who asked for a job no user asked for: a backup session that ended well, or the scheduler."""
    return "a backup session" if j.params.get("session") is not None else "the scheduler"


@web.get("/jobs/<int(max=9223372036854775807):job_id>")
def job(job_id: int) -> str:
    found = visible_job(job_id)
    return page("job.html", job=found, view=job_views([found])[0])


@web.post("/jobs/<int(max=9223372036854775807):job_id>/cancel")
def cancel_job(job_id: int) -> BaseResponse:
    visible_job(job_id)
    services().jobs.cancel(job_id, auth.require_user().name)
    return redirect(url_for("web.job", job_id=job_id))
