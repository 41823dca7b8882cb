"""Object storage: the Backend protocol, its implementations and filters."""

from .backend import Backend, Properties
from .stack import open_backend

__all__ = ["Backend", "Properties", "open_backend"]
