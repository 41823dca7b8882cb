"""Files Cairn keeps on this machine are private to the user it runs as: directories 0700, files 0600.

The data directory holds the catalog (password hashes, the web UI's signing
key, mail and storage credentials), the spools and the read cache (pool
data, in plain where the pool is not encrypted). Modes are set explicitly,
whatever the umask; the data directory is checked each time a deployment
opens, and looser modes left by an older version or a careless copy are
made private again.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import CairnError

log = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600


def make_dirs(path: Path) -> None:
    """`mkdir -p` where every directory it creates is 0700 (os.makedirs gives parents the umask's mode)."""
    if path.is_dir():
        return
    make_dirs(path.parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        return  # made by another thread meanwhile
    os.chmod(path, DIR_MODE)  # the umask may have taken bits off; never adds any, but be exact


def create_file(path: Path) -> None:
    """Create `path` empty and 0600 unless it exists (a file that others then open, as SQLite does)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except FileExistsError:
        return
    os.fchmod(fd, FILE_MODE)
    os.close(fd)


def write_file(path: Path, data: bytes | memoryview) -> None:
    """Write a new file of `data`, 0600 (it must not exist: callers write to a fresh temporary name)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes) -> None:
    """Put `data` at `path`, 0600, atomically: a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    write_file(tmp, data)
    os.replace(tmp, path)


def secure(data_dir: Path, extra: Iterable[Path] = ()) -> list[str]:
    """Make the data directory, what lies directly in it and the `extra` paths private.

    Only the top level is walked: with the data directory at 0700 nothing
    below it is reachable by others, and a pool of millions of packs is not
    walked at each start. Returns the paths whose mode was fixed (a warning
    names them); raises CairnError if one cannot be fixed.
    """
    paths = [data_dir, *sorted(data_dir.iterdir()), *extra]
    fixed = [str(p) for p in dict.fromkeys(paths) if _tighten(p)]
    if fixed:
        log.warning("made private (other users could read them): %s", ", ".join(fixed))
    return fixed


def _tighten(path: Path) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(st.st_mode) or not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return False  # a link's target is checked where it is used; sockets and pipes are not Cairn's
    loose = stat.S_IMODE(st.st_mode) & 0o077
    if not loose:
        return False
    try:
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError as e:
        raise CairnError(
            f"{path} is open to other users (mode {stat.S_IMODE(st.st_mode):04o}) and cannot be made private: "
            f"{e.strerror}; run `chmod go= {path}` as its owner"
        ) from e
    return True
