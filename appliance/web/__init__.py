"""The web UI: server-rendered pages over the same services as the API (no JS build step).

One blueprint with the templates and static files; importing this package
registers every page: pages.py, browse.py, jobs.py, admin.py, settings.py and
doors.py (a source's page and its clients).
"""

from __future__ import annotations

from . import admin, browse, doors, jobs, pages, settings  # noqa: F401  (importing a page module registers its routes)
from .base import web

__all__ = ["web"]
