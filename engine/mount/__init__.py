"""What the mount shows, defined once for the FUSE and WebDAV adapters.

/<source>/current/...             the working tree, writable
/<source>/snapshots/<name>/...    read-only snapshots; `latest` is a symlink
"""

from .writes import MountView

__all__ = ["MountView"]
