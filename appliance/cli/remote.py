"""`cairn remote …`, `cairn job …`, and what other commands do with `--remote NAME` (registered by cli.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from engine.errors import CairnError

from ..jobs import ENDED
from . import output
from .base import Context, command, main
from .client import Client, load, save

JOB_WAIT = 3600.0  # seconds `--wait` follows a job


@main.group("remote")
def remote_group() -> None:
    """Appliances this CLI talks to over their REST API."""


@command(remote_group, "add")
@click.argument("name")
@click.argument("url")
@click.option("--user", prompt=True, help="Who signs in (once: an API token is kept, not the password).")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--ca-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Trust this certificate for the appliance (its self-signed one: DATA/tls/cert.pem).",
)
def remote_add(ctx: Context, name: str, url: str, user: str, password_file: Path | None, ca_cert: Path | None,
               as_json: bool) -> None:  # fmt: skip
    """Sign in to the appliance at URL once and keep an API token under NAME."""
    if password_file is not None:
        password = password_file.read_text().rstrip("\r\n")
    else:
        password = str(click.prompt("Password", hide_input=True))
    import socket

    ca = str(ca_cert.resolve()) if ca_cert is not None else None
    token = Client(url, ca=ca).login_for_token(user, password, f"cli on {socket.gethostname()}")
    remotes = load()
    remotes[name] = {"url": url.rstrip("/"), "user": user, "token": token, **({"ca": ca} if ca else {})}
    save(remotes)
    output.emit_json({"name": name, "url": url, "user": user}) if as_json else output.say(f"remote {name} added")


@command(remote_group, "list")
def remote_list(ctx: Context, as_json: bool) -> None:
    """List remotes (tokens are not shown)."""
    rows = [{"name": n, "url": r["url"], "user": r.get("user", "")} for n, r in sorted(load().items())]
    output.emit_json(rows) if as_json else output.table(rows, ["name", "url", "user"])


@command(remote_group, "remove")
@click.argument("name")
def remote_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Forget a remote."""
    remotes = load()
    if remotes.pop(name, None) is None:
        raise CairnError(f"no remote {name!r}")
    save(remotes)
    output.emit_json({"removed": name}) if as_json else output.say(f"remote {name} removed")


@main.group("job")
def job_group() -> None:
    """Jobs of an appliance (with --remote) or of the local catalog."""


def _jobs_client(ctx: Context) -> Client:
    if not ctx.remote:
        raise CairnError("jobs are run by an appliance: give --remote NAME")
    return ctx.client()  # type: ignore[no-any-return]


@command(job_group, "list")
def job_list(ctx: Context, as_json: bool) -> None:
    """Recent jobs."""
    rows = _jobs_client(ctx).call("GET", "/jobs")
    if as_json:
        output.emit_json(rows)
    else:
        output.table([{k: r.get(k) or "" for k in ("id", "kind", "state", "error")} for r in rows],
                     ["id", "kind", "state", "error"])  # fmt: skip


@command(job_group, "show")
@click.argument("job_id", type=int)
@click.option("--wait", is_flag=True, help="Follow the job until it ends (exit 1 if it failed).")
def job_show(ctx: Context, job_id: int, wait: bool, as_json: bool) -> None:
    """A job and its progress."""
    job = wait_for(_jobs_client(ctx), job_id, not as_json) if wait else _jobs_client(ctx).call("GET", f"/jobs/{job_id}")
    output.emit_json(job) if as_json else output.say(f"job {job['id']} ({job['kind']}): {job['state']}"
                                                    + (f": {job['error']}" if job.get("error") else ""))  # fmt: skip
    if job["state"] == "failed":
        sys.exit(1)


@command(job_group, "cancel")
@click.argument("job_id", type=int)
def job_cancel(ctx: Context, job_id: int, as_json: bool) -> None:
    """Cancel a job that has not started."""
    job = _jobs_client(ctx).call("DELETE", f"/jobs/{job_id}")
    output.emit_json(job) if as_json else output.say(f"job {job_id} cancelled")


def wait_for(client: Client, job_id: int, show: bool) -> Any:
    end = time.monotonic() + JOB_WAIT
    with output.progress_bar(show, f"job {job_id}") as bar:
        while True:
            job = client.call("GET", f"/jobs/{job_id}")
            if job["state"] in ENDED or time.monotonic() > end:
                return job
            bar(f"{job['state']} {job.get('progress') or ''}")
            time.sleep(0.5)


def run_job(client: Client, endpoint: str, body: Any, show: bool) -> Any:
    """POST what starts a job, follow it to its end, and return its result (a failed job is an error)."""
    job = client.call("POST", endpoint, body)
    done = wait_for(client, job["id"], show)
    if done["state"] != "done":
        raise CairnError(f"the {job['kind']} job failed: {done.get('error')}")
    return done["progress"]
