"""Working trees: the mutable tree of a source that clients write into (`current/`)."""

from .tree import WorkingTree

__all__ = ["WorkingTree"]
