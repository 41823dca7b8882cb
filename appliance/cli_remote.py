"""`cairn remote …`, `cairn job …`, and what other commands do with `--remote NAME` (registered by cli.py)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from engine.errors import CairnError

from . import output
from .cli import Context, command, main
from .remote import Client, load, save

JOB_WAIT = 3600.0  # seconds `--wait` follows a job


@main.group("remote")
def remote_group() -> None:
    """Appliances this CLI talks to over their REST API."""


@command(remote_group, "add")
@click.argument("name")
@click.argument("url")
@click.option("--user", prompt=True, help="Who signs in (once: an API token is kept, not the password).")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def remote_add(ctx: Context, name: str, url: str, user: str, password_file: Path | None, as_json: bool) -> None:
    """Sign in to the appliance at URL once and keep an API token under NAME."""
    if password_file is not None:
        password = password_file.read_text().rstrip("\r\n")
    else:
        password = str(click.prompt("Password", hide_input=True))
    import socket

    token = Client(url).login_for_token(user, password, f"cli on {socket.gethostname()}")
    remotes = load()
    remotes[name] = {"url": url.rstrip("/"), "user": user, "token": token}
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


def wait_for(client: Client, job_id: int, show: bool) -> Any:
    end = time.monotonic() + JOB_WAIT
    with output.progress_bar(show, f"job {job_id}") as bar:
        while True:
            job = client.call("GET", f"/jobs/{job_id}")
            if job["state"] in ("done", "failed") or time.monotonic() > end:
                return job
            bar(f"{job['state']} {job.get('progress') or ''}")
            time.sleep(0.5)


# -- the --remote branches of local commands ---------------------------------


def source_list(client: Client, as_json: bool) -> None:
    rows = client.call("GET", "/sources")
    output.emit_json(rows) if as_json else output.table(rows, ["name", "group", "owner", "snapshots"])


def source_add(client: Client, name: str, as_json: bool) -> None:
    doc = client.call("POST", "/sources", {"name": name})
    output.emit_json(doc) if as_json else output.say(f"source {name} added")


def snapshot_list(client: Client, source: str | None, as_json: bool) -> None:
    names = [source] if source else [s["name"] for s in client.call("GET", "/sources")]
    rows = [snap for name in names for snap in client.call("GET", f"/sources/{name}/snapshots")]
    if as_json:
        output.emit_json(rows)
    else:
        output.table([{**r, "size": output.human_bytes(r["bytes"])} for r in rows],
                     ["source", "name", "created", "files", "size", "state"])  # fmt: skip


def snapshot_create(client: Client, source: str, name: str | None, as_json: bool) -> None:
    job = client.call("POST", f"/sources/{source}/snapshots", {"name": name} if name else {})
    done = wait_for(client, job["id"], not as_json)
    if done["state"] != "done":
        raise CairnError(f"the snapshot job failed: {done.get('error')}")
    result = done["progress"]
    output.emit_json(result) if as_json else output.say(f"snapshot {result['snapshot']} of {source} created")


def snapshot_delete(client: Client, source: str, name: str, as_json: bool) -> None:
    client.call("DELETE", f"/sources/{source}/snapshots/{name}")
    output.emit_json({"deleted": name}) if as_json else output.say(f"snapshot {name} of {source} deleted")


def pool_list(client: Client, as_json: bool) -> None:
    usage = client.call("GET", "/pool")
    if as_json:
        output.emit_json([usage])
    else:
        shown = {**usage, "stored_bytes": output.human_bytes(usage["stored_bytes"])}
        output.table([shown], ["kind", "backend", "state", "packs", "blobs", "stored_bytes", "ratio"])
