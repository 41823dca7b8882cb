"""The host's mount table (/proc/self/mounts): what is mounted where, and with which file system."""

from __future__ import annotations

import os
import re


def mounts() -> list[tuple[str, str]]:
    """(mount point, file system type) of every mount; empty if the table cannot be read."""
    try:
        with open("/proc/self/mounts") as table:
            return [(_unescape(fields[1]), fields[2]) for fields in (line.split() for line in table)]
    except OSError:
        return []


def filesystem_of(path: str | os.PathLike[str]) -> str | None:
    """The type of the file system holding `path` (the longest mount point above it), or None."""
    target = os.path.realpath(path)
    best, fstype = "", None
    for mount, kind in mounts():
        if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
            best, fstype = mount, kind
    return fstype


def _unescape(field: str) -> str:
    """The table writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)
