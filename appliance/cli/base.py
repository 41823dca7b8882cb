"""The `cairn` command's frame: the top-level group, its options and context, the subcommand wrapper.

Command modules (the package itself, admin.py, doors.py, pool.py, remote.py, image.py)
import this and register themselves on `main`; the package imports them all.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from engine.deployment import Deployment
from engine.errors import CairnError
from engine.keyring import Unlock

from ..config import Config
from . import output

F = TypeVar("F", bound=Callable[..., Any])
EXIT_ERROR = 1
EXIT_PARTIAL = 3  # finished, but some files or blobs had problems


LEASE_WAIT = 120.0  # two of a running appliance's idle minutes: it lets go of a source after one


class Context:
    def __init__(self, data: Path, db: str | None, passphrase_file: Path | None, key_file: Path | None,
                 remote: str | None = None, lease_wait: float = LEASE_WAIT):  # fmt: skip
        self.data = data
        self.lease_wait = lease_wait
        self.db = db
        self.passphrase_file = passphrase_file
        self.key_file = key_file
        self.remote = remote  # commands that know it talk to that appliance's API instead

    def client(self) -> Any:
        from .client import client

        assert self.remote is not None
        return client(self.remote)

    def unlock(self) -> Unlock | None:
        """What opens an encrypted pool: a key file, a passphrase file, or $CAIRN_PASSPHRASE."""
        if self.key_file is not None:
            return Unlock(key_file=self.key_file.read_bytes())
        if self.passphrase_file is not None:
            return Unlock(passphrase=self.passphrase_file.read_bytes().rstrip(b"\r\n"))
        passphrase = os.environ.get("CAIRN_PASSPHRASE")
        return Unlock(passphrase=passphrase.encode()) if passphrase else None

    def open(self, *, encrypt: bool = False) -> Deployment:
        if self.remote:
            raise CairnError("this command works on a local data directory only, not with --remote")
        dep = Deployment.open(self.data, self.db, unlock=self.unlock(), encrypt=encrypt)
        config = Config(dep.catalog)
        dep.worktrees.tree_idle = float(config.value("tree_idle"))
        dep.worktrees.cache_bytes = int(config.value("tree_cache")) << 20
        dep.worktrees.lease_wait = self.lease_wait  # a source a running appliance writes: wait for it to be let go of
        dep.worktrees.on_lease_wait = _tell_waiting
        return dep


def _tell_waiting(message: str) -> None:
    sys.stderr.write(f"waiting: {message}\n")


def command(group: click.Group, name: str | None = None) -> Callable[[F], F]:
    """A subcommand with `--json`, whose engine errors become clean messages."""

    def wrap(fn: F) -> F:
        @group.command(name)
        @click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
        @click.pass_obj
        @functools.wraps(fn)
        def run(ctx: Context, *args: Any, **kwargs: Any) -> Any:
            try:
                return fn(ctx, *args, **kwargs)
            except CairnError as e:
                output.warn(str(e), "error")
                sys.exit(EXIT_ERROR)

        return run  # type: ignore[return-value]

    return wrap


@click.group()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("CAIRN_DATA", "/var/lib/cairn"),
    show_default="$CAIRN_DATA or /var/lib/cairn",
    help="The data directory: catalog, pool and spool.",
)
@click.option("--db", help="Catalog URL (default: SQLite in the data directory).")
@click.option(
    "--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="CAIRN_PASSPHRASE_FILE", help="Unlocks an encrypted pool (or set $CAIRN_PASSPHRASE).",
)  # fmt: skip
@click.option(
    "--key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
    envvar="CAIRN_KEY_FILE", help="Unlocks an encrypted pool whose keys a key file wraps.",
)  # fmt: skip
@click.option("--remote", envvar="CAIRN_REMOTE", help="Run against this appliance (see `cairn remote add`).")
@click.option(
    "--wait", "lease_wait", type=click.FloatRange(0), default=LEASE_WAIT, envvar="CAIRN_WAIT", show_default=True,
    help="Seconds to wait for a source a running appliance writes (it lets go a minute after the last change).",
)  # fmt: skip
@click.pass_context
def main(
    click_ctx: click.Context, data: Path, db: str | None, passphrase_file: Path | None, key_file: Path | None,
    remote: str | None, lease_wait: float,
) -> None:  # fmt: skip
    """Cairn: deduplicating backups that any file client can write."""
    click_ctx.obj = Context(data, db, passphrase_file, key_file, remote, lease_wait)


@main.group()
def source() -> None:
    """Sources: the machines and shares that are backed up."""
