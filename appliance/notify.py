"""Notifications by email: a mail when a job fails, and a digest of what succeeded.

The SMTP server is a global setting (`smtp`: host, port, from, and
optionally user, password, starttls); the address is the effective
`notify_email` of the job's source (or the global one). Sending runs in the
job worker that finished the job, never in a request.
"""

from __future__ import annotations

import logging
import smtplib
import time
from email.message import EmailMessage
from typing import Any

from engine.errors import CairnError

from .config import Config
from .jobs import Job, JobQueue

log = logging.getLogger(__name__)


class MailFailed(CairnError):
    """The mail server refused or could not be reached."""

    status = 502


class Notifier:
    def __init__(self, config: Config, jobs: JobQueue, source_names: Any):
        self.config = config
        self.jobs = jobs
        self.source_names = source_names  # callable: source id -> (name, group) or None

    def job_finished(self, job: Job, error: str | None) -> None:
        source, group = self.source_names(job.source_id) if job.source_id is not None else (None, None)
        stored = self.config.stored()  # one read for the questions below
        to = self.config.value("notify_email", source, group, stored)
        if not to:
            return
        if error is not None:
            where = f" of {source}" if source else ""
            self.send(to, f"Cairn: {job.kind} job #{job.id}{where} failed", f"The job failed: {error}\n", stored)
        elif self.config.value("notify_success", source, group, stored) and job.kind != "digest":
            self.send(to, f"Cairn: {job.kind} job #{job.id} done", f"{job.kind} finished.\n", stored)

    def digest(self, hours: float = 24.0) -> dict[str, Any]:
        """Mail the global address a summary of the jobs of the last `hours`."""
        since = time.time() - hours * 3600
        recent = [j for j in self.jobs.list(limit=1000) if j.created >= since and j.kind != "digest"]
        stored = self.config.stored()
        to = self.config.value("notify_email", stored=stored)
        done = [j for j in recent if j.state == "done"]
        failed = [j for j in recent if j.state == "failed"]
        if to and recent:
            lines = [f"#{j.id} {j.kind} {j.state}" + (f": {j.error}" if j.error else "") for j in recent]
            self.send(to, f"Cairn: {len(done)} jobs done, {len(failed)} failed", "\n".join(lines) + "\n", stored)
        return {"done": len(done), "failed": len(failed), "sent_to": to if recent else None}

    def send(self, to: str, subject: str, body: str, stored: dict[str, str] | None = None) -> None:
        """Mail `to`; a failure is logged, never raised (a job's end is not undone by a mail server)."""
        try:
            self.deliver(to, subject, body, stored)
        except MailFailed as e:
            log.warning("%s", e)

    def test(self, to: str) -> None:
        """A test mail to `to` with the stored smtp setting; MailFailed says why it did not go."""
        self.deliver(to, "Cairn: test mail", "The appliance can send mail to this address.\n")

    def deliver(self, to: str, subject: str, body: str, stored: dict[str, str] | None = None) -> None:
        smtp = self.config.value("smtp", stored=stored)
        if not smtp:
            raise MailFailed(f"no smtp setting: cannot mail {to} ({subject})")
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = smtp.get("from", "cairn@localhost"), to, subject
        message.set_content(body)
        try:
            with smtplib.SMTP(smtp["host"], int(smtp.get("port", 25)), timeout=30) as server:
                if smtp.get("starttls"):
                    server.starttls()
                if smtp.get("user"):
                    server.login(smtp["user"], smtp.get("password", ""))
                server.send_message(message)
        except (OSError, smtplib.SMTPException) as e:
            raise MailFailed(f"cannot mail {to} ({subject}): {e}") from e
