"""The catalog: SQLAlchemy Core tables, the connection, Alembic migrations."""

from .db import Catalog, open_catalog

__all__ = ["Catalog", "open_catalog"]
