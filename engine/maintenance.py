"""Maintenance mode: the deployment goes read-only cleanly, for every process that shares the catalog.

The flag is a row in the catalog's settings; each process reads it when it
opens and then every few seconds, so a mount or a server started elsewhere
turns read-only too. Turning it on commits the working trees and stores
every pending blob first: nothing written before is left half-done.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import select

from .catalog import Catalog
from .catalog.schema import settings
from .errors import ReadOnly

KEY = "maintenance"
REFRESH = 2.0  # seconds between reads of the flag in a long-running process


def read(catalog: Catalog) -> dict[str, object] | None:
    """The flag (reason, since), or None when the deployment takes writes."""
    with catalog.engine.connect() as conn:
        value = conn.execute(select(settings.c.value).where(settings.c.key == KEY)).scalar()
    return json.loads(value) if value else None


def write(catalog: Catalog, reason: str | None) -> None:
    with catalog.engine.begin() as conn:
        conn.execute(settings.delete().where(settings.c.key == KEY))
        if reason is not None:
            conn.execute(settings.insert().values(key=KEY, value=json.dumps({"reason": reason, "since": time.time()})))


def refuse(flag: dict[str, object] | None) -> None:
    if flag is not None:
        raise ReadOnly(f"the deployment is in maintenance mode ({flag.get('reason') or 'no reason given'}): read-only")
