"""Maintenance mode: the deployment goes read-only cleanly, for every process that shares the catalog.

The flag is a row in the catalog's settings; each process reads it when it
opens and then every few seconds, so a mount or a server started elsewhere
turns read-only too. Turning it on commits the working trees and stores
every pending blob first: nothing written before is left half-done.
"""

from __future__ import annotations

import json
import time

from .catalog import Catalog
from .errors import ReadOnly

KEY = "maintenance"
REFRESH = 2.0  # seconds between reads of the flag in a long-running process


def read(catalog: Catalog) -> dict[str, object] | None:
    """The flag (reason, since), or None when the deployment takes writes."""
    value = catalog.setting(KEY)
    return json.loads(value) if value else None


def write(catalog: Catalog, reason: str | None) -> None:
    flag = None if reason is None else json.dumps({"reason": reason, "since": time.time()})
    catalog.set_setting(KEY, flag)


def refuse(flag: dict[str, object] | None) -> None:
    if flag is not None:
        raise ReadOnly(f"the deployment is in maintenance mode ({flag.get('reason') or 'no reason given'}): read-only")
