"""The wall around an rsync server started for an SSH key: it sees one folder of one source and nothing else.

bubblewrap (Debian `bubblewrap`) gives the server a mount namespace whose
root is read-only and empty but for /usr and the source's folder at
`/backup`: a symlink the client stored, a path the checks missed, or an
option naming /etc all resolve inside it. rsync keeps root's capabilities
there (owners, devices and every xattr namespace arrive as with the local
mount); the mount itself is nodev, so a device node it holds opens nothing.
"""

from __future__ import annotations

from pathlib import Path

from .command import ROOT

BWRAP = "/usr/bin/bwrap"
LOG = "/run/session.log"  # where the session's rsync log appears inside


def argv(folder: Path, *, writable: bool, log_file: Path) -> list[str]:
    """bwrap's command line for a server rooted at `folder` (rw only when the client writes), then rsync's."""
    return [
        BWRAP,
        "--ro-bind", "/usr", "/usr",
        "--symlink", "usr/lib", "/lib",
        "--symlink", "usr/lib64", "/lib64",
        "--symlink", "usr/bin", "/bin",
        "--ro-bind", "/etc/passwd", "/etc/passwd",  # names for --no-numeric-ids clients; nothing secret
        "--ro-bind", "/etc/group", "/etc/group",
        "--dev", "/dev",
        "--proc", "/proc",
        "--bind" if writable else "--ro-bind", str(folder), ROOT,
        "--bind", str(log_file), LOG,
        "--remount-ro", "/",
        "--chdir", ROOT,
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--unshare-net",
        "--die-with-parent", "--new-session",
        "--",
    ]  # fmt: skip
