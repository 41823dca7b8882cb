"""`cairn serve`, `cairn user …`, `cairn group …`: the appliance's own commands (registered by cli.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from engine.errors import CairnError

from ..accounts import ROLES, Accounts
from . import output
from .base import Context, command, main
from .target import target


@main.command("serve")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="HOST:PORT for the web UI and API.")
@click.option("--mount", "mountpoint", type=click.Path(file_okay=False, path_type=Path), help="Also mount here.")
@click.option("--workers", type=click.IntRange(1, 16), default=2, show_default=True, help="Job worker threads.")
@click.option("--ssh", metavar="HOST:PORT", help="Serve rsync over SSH here (needs --mount; run as root).")
@click.option("--rsyncd", metavar="HOST:PORT", help="Serve the rsync daemon here (needs --mount; run as root).")
@click.option("--smb", metavar="HOST:PORT", help="Serve the SMB shares here (needs --mount; run as root).")
@click.option(
    "--tls-cert",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Serve HTTPS with this certificate (PEM; else one made for this data directory).",
)
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Its key (PEM).")
@click.option("--no-tls", is_flag=True, help="Plain HTTP (behind a proxy that does TLS, or on loopback).")
@click.option("--http-redirect", metavar="HOST:PORT", help="Also listen here with plain HTTP, redirecting to HTTPS.")
@click.pass_obj
def serve_cmd(ctx: Context, listen: str, mountpoint: Path | None, workers: int, ssh: str | None,
              rsyncd: str | None, smb: str | None, tls_cert: Path | None, tls_key: Path | None, no_tls: bool,
              http_redirect: str | None) -> None:  # fmt: skip
    """Run the appliance: web UI at /, REST API at /api/v1, job workers, the mount and front doors if asked.

    HTTPS by default, with a self-signed certificate made on the first start unless one is given.
    """
    from ..server import Doorways, serve
    from ..tls import Tls, ensure_certificate

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        doorways = Doorways.parse(ssh, rsyncd, smb, mountpoint)
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("give --tls-cert and --tls-key together")
        if no_tls and tls_cert is not None:
            raise ValueError("--no-tls and --tls-cert contradict each other")
        with ctx.open() as dep:
            tls = None
            if tls_cert is not None and tls_key is not None:
                tls = Tls(tls_cert, tls_key)
            elif not no_tls:
                tls = ensure_certificate(dep.data_dir, listen.rsplit(":", 1)[0].strip("[]"))
            serve(dep, listen, mountpoint, workers, doorways, tls, http_redirect)
    except (CairnError, ValueError, OSError) as e:
        output.warn(str(e), "error")
        sys.exit(1)


@main.group("user")
def user_group() -> None:
    """Users of the web UI, the API and WebDAV."""


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        return password_file.read_text().rstrip("\r\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@command(user_group, "add")
@click.argument("name")
@click.option("--admin", is_flag=True, help="May do everything, in every group.")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--one-time", is_flag=True, help="The user must choose a new password at the first sign-in.")
def user_add(ctx: Context, name: str, admin: bool, password_file: Path | None, one_time: bool,
             as_json: bool) -> None:  # fmt: skip
    """Add a user (asks for the password unless --password-file is given)."""
    password = _password(password_file)
    with target(ctx) as t:
        doc = t.add_user(name, password, admin, one_time)
    output.emit_json(doc) if as_json else output.say(f"user {name} added")


@command(user_group, "passwd")
@click.argument("name")
@click.option("--password-file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
def user_passwd(ctx: Context, name: str, password_file: Path | None, as_json: bool) -> None:
    """Set a user's password."""
    with ctx.open() as dep:
        Accounts.of(dep).set_password(name, _password(password_file))
    output.emit_json({"name": name}) if as_json else output.say(f"password of {name} set")


@command(user_group, "list")
def user_list(ctx: Context, as_json: bool) -> None:
    """List users and their roles."""
    with target(ctx) as t:
        rows = t.users()
    if as_json:
        output.emit_json(rows)
    else:
        shown = [{**r, "roles": ", ".join(f"{g}:{role}" for g, role in r["roles"].items())} for r in rows]
        output.table(shown, ["name", "admin", "roles"])


@command(user_group, "remove")
@click.argument("name")
def user_remove(ctx: Context, name: str, as_json: bool) -> None:
    """Remove a user (their sources stay, without an owner; never the last administrator)."""
    with target(ctx) as t:
        doc = t.remove_user(name)
    output.emit_json(doc) if as_json else output.say(f"user {name} removed")


@main.group("group")
def group_group() -> None:
    """Groups: a user's role applies within a group."""


@command(group_group, "add")
@click.argument("name")
def group_add(ctx: Context, name: str, as_json: bool) -> None:
    """Add a group."""
    with target(ctx) as t:
        doc = t.add_group(name)
    output.emit_json(doc) if as_json else output.say(f"group {name} added")


@command(group_group, "member")
@click.argument("group")
@click.argument("user")
@click.argument("role", type=click.Choice([*ROLES, "none"]))
def group_member(ctx: Context, group: str, user: str, role: str, as_json: bool) -> None:
    """Give USER a ROLE in GROUP (admin, operator, member), or none."""
    with target(ctx) as t:
        doc = t.set_member(group, user, None if role == "none" else role)
    output.emit_json(doc) if as_json else output.say(f"{user}: {role} in {group}")


@command(group_group, "list")
def group_list(ctx: Context, as_json: bool) -> None:
    """List groups and their members."""
    with target(ctx) as t:
        found = t.groups()
    if as_json:
        output.emit_json(found)
    else:
        output.table([{"group": g, "members": ", ".join(f"{u}:{r}" for u, r in m.items())} for g, m in found.items()],
                     ["group", "members"])  # fmt: skip


@command(main, "assign")
@click.argument("source")
@click.option("--group", help="The group that holds the source.")
@click.option("--owner", help="The user who owns it (a member sees and restores what they own).")
def assign(ctx: Context, source: str, group: str | None, owner: str | None, as_json: bool) -> None:
    """Say which group holds SOURCE and who owns it."""
    with target(ctx) as t:
        doc = t.assign(source, group, owner)
    output.emit_json(doc) if as_json else output.say(f"{source} assigned")


@main.group("config")
def config_group() -> None:
    """Settings in levels: global, group, source."""


@command(config_group, "set")
@click.argument("key")
@click.argument("value")
@click.option("--group", help="Set it for a group's sources.")
@click.option("--source", help="Set it for one source.")
def config_set(ctx: Context, key: str, value: str, group: str | None, source: str | None, as_json: bool) -> None:
    """Set KEY to VALUE (JSON: '"0 2 * * *"', '{"daily": 7}', null to remove a group or source value)."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise CairnError(f"VALUE must be JSON (a string in quotes): {e}") from e
    with target(ctx) as t:
        doc = t.set_config(key, parsed, group, source)  # a secret in it comes back as the marker
    output.emit_json(doc) if as_json else output.say(f"{key} set")


@command(config_group, "show")
@click.option("--group", help="As seen by a group's sources.")
@click.option("--source", help="As seen by one source (in its group).")
def config_show(ctx: Context, group: str | None, source: str | None, as_json: bool) -> None:
    """The effective settings, and where each value comes from."""
    with target(ctx) as t:
        shown = t.config(group, source)
    if as_json:
        output.emit_json(shown)
    else:
        output.table([{"key": k, "value": str(v["value"]), "from": v["from"]} for k, v in shown.items()],
                     ["key", "value", "from"])  # fmt: skip
