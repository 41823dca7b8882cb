"""Leases: one working tree has one owner process at a time."""

from __future__ import annotations

import os
import socket
import time
import uuid

from sqlalchemy import Connection, delete, select, update

from .catalog.schema import leases
from .errors import InUse

LEASE_SECONDS = 60.0


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_here(owner: str) -> bool:
    """Whether the owner ran on this host in a process that no longer exists."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def held(holder: str, expires: float, now: float) -> bool:
    """Whether a lease row still binds: not expired, and its process not known to be gone."""
    return expires > now and not dead_here(holder)


def acquire(conn: Connection, source_id: int, source: str, owner: str) -> None:
    now = time.time()
    row = conn.execute(select(leases.c.owner, leases.c.expires).where(leases.c.source_id == source_id)).first()
    if row is not None and row.owner != owner and held(row.owner, row.expires, now):
        raise InUse(
            f"source {source!r} is being written by {row.owner} (a running appliance lets a source go once "
            f"nothing changed it for a minute; a lease not renewed expires in {row.expires - now:.0f} s)"
        )
    conn.execute(delete(leases).where(leases.c.source_id == source_id))
    conn.execute(leases.insert().values(source_id=source_id, owner=owner, expires=now + LEASE_SECONDS))


def renew(conn: Connection, owner: str) -> None:
    conn.execute(update(leases).where(leases.c.owner == owner).values(expires=time.time() + LEASE_SECONDS))


def release(conn: Connection, owner: str) -> None:
    conn.execute(delete(leases).where(leases.c.owner == owner))


def release_source(conn: Connection, source_id: int, owner: str) -> None:
    conn.execute(delete(leases).where(leases.c.source_id == source_id, leases.c.owner == owner))
