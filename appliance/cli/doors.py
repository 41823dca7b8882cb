"""`cairn source key|secret|status` and `cairn session`: what the front doors let in, and the sessions they ran."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import click

from ..doors.keys import SourceKeys
from ..doors.rsyncd import new_secret, set_secret
from . import output
from .base import Context, command, main, source


@source.group("key")
def key_group() -> None:
    """SSH keys a source's clients log in with (rsync over SSH)."""


@command(key_group, "add")
@click.argument("name")
@click.argument("key_file", type=click.File("r"))
@click.option("--label", help="What to call the key (default: its comment).")
def key_add(ctx: Context, name: str, key_file: TextIO, label: str | None, as_json: bool) -> None:
    """Register the public key in KEY_FILE (`-`: standard input) for source NAME."""
    with ctx.open() as dep:
        dep.source(name)
        key = SourceKeys(dep.catalog).add(name, key_file.read(), label)
    output.emit_json(key.to_json()) if as_json else output.say(f"key {key.id} ({key.fingerprint}) added to {name}")


@command(key_group, "generate")
@click.argument("name")
@click.argument("private_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", help="What to call the key.")
def key_generate(ctx: Context, name: str, private_file: Path, label: str | None, as_json: bool) -> None:
    """Make a key pair for a client of NAME: the public half is registered, the private one written (0600)."""
    with ctx.open() as dep:
        dep.source(name)
        key, private = SourceKeys(dep.catalog).generate(name, label or f"cairn-{name}")
    fd = os.open(private_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(private)
    output.emit_json(key.to_json()) if as_json else output.say(
        f"key {key.id} added to {name}; private key in {private_file}"
    )


@command(key_group, "list")
@click.argument("name", required=False)
def key_list(ctx: Context, name: str | None, as_json: bool) -> None:
    """The keys of source NAME (or of every source)."""
    with ctx.open() as dep:
        if name is not None:
            dep.source(name)
        rows = [k.to_json() for k in SourceKeys(dep.catalog).of(name)]
    output.emit_json(rows) if as_json else output.table(rows, ["id", "source", "name", "fingerprint", "created"])


@command(key_group, "remove")
@click.argument("name")
@click.argument("key_id", type=int)
def key_remove(ctx: Context, name: str, key_id: int, as_json: bool) -> None:
    """Remove key KEY_ID of source NAME: its client cannot log in from now on."""
    with ctx.open() as dep:
        SourceKeys(dep.catalog).remove(name, key_id)
    output.emit_json({"removed": key_id}) if as_json else output.say(f"key {key_id} removed from {name}")


@command(source, "secret")
@click.argument("name")
@click.option("--file", "secret_file", type=click.File("r"), help="Read the password from this file (`-`: stdin).")
@click.option("--remove", is_flag=True, help="Remove the password: the rsync daemon stops serving NAME.")
def source_secret(ctx: Context, name: str, secret_file: TextIO | None, remove: bool,
                  as_json: bool) -> None:  # fmt: skip
    """Set the rsync daemon's password for NAME (rsync://NAME@appliance/NAME); a new one is made and shown once."""
    made = None
    if remove:
        secret = None
    elif secret_file is not None:
        secret = secret_file.read().rstrip("\r\n")
    else:
        secret = made = new_secret()
    with ctx.open() as dep:
        dep.source(name)
        set_secret(dep.catalog, name, secret)
    if as_json:
        output.emit_json({"source": name, "secret": made, "removed": remove})
    elif remove:
        output.say(f"{name}: the rsync daemon no longer serves it")
    elif made is not None:
        print(made)  # once: it is not shown again
        print(f"the rsync password of {name}: give it to the client (RSYNC_PASSWORD or --password-file)",
              file=sys.stderr)  # fmt: skip
    else:
        output.say(f"{name}: rsync password set")


@command(source, "status")
def source_status(ctx: Context, as_json: bool) -> None:
    """Each source's last successful backup, its age against stale_after, and its last session."""
    from ..services import Services
    from ..status import statuses

    with ctx.open() as dep:
        rows = [s.to_json() for s in statuses(Services.build(dep, workers=1))]
    if as_json:
        return output.emit_json(rows)
    for r in rows:
        r["age_hours"] = None if r["age"] is None else round(r["age"] / 3600, 1)
        r["last_session"] = (r["last_session"] or {}).get("state")
    output.table(rows, ["source", "colour", "last_backup", "age_hours", "stale_after", "last_session", "running"])


@main.group("session")
def session_group() -> None:
    """Backup sessions: client connections that wrote into a source through a front door."""


@command(session_group, "list")
@click.option("--source", "source_name", help="Only this source's sessions.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def session_list(ctx: Context, source_name: str | None, limit: int, as_json: bool) -> None:
    """The newest sessions first: source, door, client, start, duration, bytes, changes, outcome."""
    from engine.sessions import Sessions

    with ctx.open() as dep:
        if source_name is not None:
            dep.source(source_name)
        rows = [s.to_json() for s in Sessions(dep.catalog, dep.owner).recent(source_name, limit)]
    if as_json:
        return output.emit_json(rows)
    for r in rows:
        r["outcome"] = r["state"] if r["state"] == "running" else r["snapshot"] or r["reason"] or r["state"]
    output.table(rows, ["id", "source", "door", "client", "principal", "started", "duration", "bytes_received",
                        "files_changed", "outcome"])  # fmt: skip
