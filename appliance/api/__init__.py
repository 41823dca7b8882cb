"""The REST API at /api/v1: JSON in and out, described by /api/v1/openapi.json.

One blueprint; importing this package registers every route: accounts.py
(signing in, tokens, pool, jobs, maintenance, users, groups, settings),
sources.py (sources and snapshots) and doors.py (the front doors).
"""

from __future__ import annotations

from . import accounts, doors, sources  # noqa: F401  (importing a route module registers its routes)
from .base import api

__all__ = ["api"]
