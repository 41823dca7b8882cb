"""What the mount shows, defined once for the FUSE and WebDAV adapters.

/<source>/current/...             the working tree, writable
/<source>/snapshots/<name>/...    read-only snapshots; `latest` is a symlink
/<source>/images/<disk>.img       writable disk images; <disk>@<snapshot>.img read-only
"""

from .images import ImageProvider
from .writes import MountView

__all__ = ["ImageProvider", "MountView"]
