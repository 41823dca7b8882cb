"""The rsync daemon: `rsync://appliance/SOURCE`, a stock `rsync --daemon` whose modules come from the catalog.

A source is served once it has a password (`cairn source secret`): module
SOURCE writes into its `current/` and module SOURCE@snapshots reads its
snapshots, both for the user named like the source and chrooted there. The
daemon reads its config at every connection, so the file is rewritten
whenever the catalog's sources or passwords change (`Modules.refresh`).
Its pre-/post-xfer hooks ask the gate to begin and end the session of a
transfer that writes.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from pathlib import Path

from engine.catalog import Catalog
from engine.deployment import Deployment
from engine.errors import CairnError, InvalidArgument
from engine.private import create_file, replace_file
from engine.sessions import STOPPED

from .sessions import IDLE_TIMEOUT, BackupSessions, outcome, read_rsync_log

log = logging.getLogger(__name__)
SECRET = "door/secret/"  # + source: the rsync daemon's password for it (a secret setting, sealed where it can be)
SNAPSHOTS = "@snapshots"  # module suffix: '@' is in no source name


def new_secret() -> str:
    """A password for a source: 24 characters of 64 (144 bits), none of them ':' (the secrets file's separator)."""
    return secrets.token_urlsafe(18)


def set_secret(catalog: Catalog, source: str, secret: str | None) -> None:
    """Set (None: remove) a source's rsync daemon password."""
    if secret is not None and (len(secret) < 12 or len(secret) > 256 or any(c in secret for c in "\n\r:")):
        raise InvalidArgument("an rsync password has 12 to 256 characters and no ':' or line break")
    catalog.set_setting(SECRET + source, secret)


def config_text(mount: Path, catalog: Catalog, sources: list[str], hooks: str, logfile: Path, lock: Path,
                secrets: Path) -> tuple[str, str]:  # fmt: skip
    """(rsyncd.conf, its secrets file) for the sources that have a password."""
    stored = catalog.settings_like(SECRET + "%")
    served = [s for s in sources if SECRET + s in stored]
    conf = [
        "# Written by Cairn from its catalog; changes here are overwritten.",
        "use chroot = yes", "numeric ids = yes", "uid = root", "gid = root", "read only = yes", "list = no",
        "reverse lookup = no", "max connections = 32", f"lock file = {lock}", f"timeout = {IDLE_TIMEOUT}",
        "transfer logging = yes", f"log file = {logfile}", "log format = %i %n%L",
        "refuse options = write-devices copy-devices fake-super remove-source-files",
        f"pre-xfer exec = {hooks} pre", f"post-xfer exec = {hooks} post", f"secrets file = {secrets}",
        "strict modes = yes", "",
    ]  # fmt: skip
    for source in served:
        conf += [f"[{source}]", f"path = {mount / source / 'current'}", "read only = no", f"auth users = {source}",
                 f"comment = {source}: writes into current/", ""]  # fmt: skip
        conf += [f"[{source}{SNAPSHOTS}]", f"path = {mount / source / 'snapshots'}", "read only = yes",
                 f"auth users = {source}", f"comment = {source}: its snapshots, read-only", ""]  # fmt: skip
    secret_lines = [f"{s}:{stored[SECRET + s]}" for s in served]
    return "\n".join(conf), "\n".join(secret_lines) + ("\n" if secret_lines else "")


class RsyncdSessions:
    """The daemon's transfers as sessions, keyed by the transfer's pid. Thread-safe (its lock guards `open`)."""

    def __init__(self, backups: BackupSessions, logfile: Path, mount: Path):
        self.backups = backups
        self.mount = mount
        self.logfile = logfile
        self._lock = threading.Lock()
        self.open: dict[str, tuple[int, int]] = {}  # pid -> (session id, log offset at its start)

    def xfer(self, stage: str, env: dict[str, str]) -> dict[str, object]:
        module, pid = env.get("RSYNC_MODULE_NAME", ""), env.get("RSYNC_PID", "")
        if stage == "pre":
            args = [v for k, v in env.items() if k.startswith("RSYNC_ARG")]
            if module.endswith(SNAPSHOTS) or "--sender" in args:
                return {"ok": True}  # a restore: read-only, no session
            try:
                session = self.backups.begin(module, "rsyncd", env.get("RSYNC_HOST_ADDR", "?"),
                                             env.get("RSYNC_USER_NAME", ""))  # fmt: skip
            except CairnError as e:
                return {"ok": False, "message": f"no backup now: {e}"}
            with self._lock:
                self.open[pid] = (session.id, self._size())
            return {"ok": True}
        with self._lock:
            begun = self.open.pop(pid, None)
        if begun is None:
            return {"ok": True}
        session_id, offset = begun
        try:
            status = int(env.get("RSYNC_EXIT_STATUS", "-1"))
        except ValueError:
            status = -1
        mounted = os.path.ismount(self.mount)
        reason = outcome(status, mounted) if status >= 0 else "the transfer ended without a status"
        self.backups.end(session_id, reason, read_rsync_log(self._lines(offset, pid, module)))
        return {"ok": True}

    def abandon(self) -> None:
        """The daemon is stopping: its open transfers end as failed."""
        with self._lock:
            begun, self.open = list(self.open.values()), {}
        for session_id, _ in begun:
            self.backups.end(session_id, STOPPED)

    def _size(self) -> int:
        try:
            return self.logfile.stat().st_size
        except FileNotFoundError:
            return 0

    def _lines(self, offset: int, pid: str, module: str) -> str:
        """The transfer's lines of the daemon's log since its start.

        The hooks see the pid of the connection's process, which forks the
        transfer after pre-xfer exec; the transfer's own lines carry the
        child's pid: the first one after `pid` that opens a transfer into the module.
        """
        try:
            with open(self.logfile, "rb") as f:
                f.seek(offset)
                text = f.read(64 * 1024 * 1024).decode(errors="replace")
        except OSError:
            return ""
        opened = re.compile(r"\[(\d+)\] rsync to " + re.escape(module) + r"(/| )")
        children = sorted(int(m.group(1)) for m in opened.finditer(text) if int(m.group(1)) > int(pid or 0))
        if not children:
            return ""
        tag = f"[{children[0]}]"
        return "\n".join(line for line in text.splitlines() if tag in line)


class Modules:
    """Keeps rsyncd.conf and its secrets file in step with the catalog."""

    def __init__(self, deployment: Deployment, mount: Path, folder: Path, hooks: str):
        self.deployment = deployment
        self.mount = mount
        self.conf, self.secrets = folder / "rsyncd.conf", folder / "rsyncd.secrets"
        self.logfile, self.lock = folder / "rsyncd.log", folder / "rsyncd.lock"
        self.hooks = hooks
        self._written: tuple[str, str] | None = None

    def refresh(self) -> bool:
        """Rewrite the files if the catalog changed them; whether it did."""
        names = [s.name for s in self.deployment.list_sources()]
        text = config_text(
            self.mount, self.deployment.catalog, names, self.hooks, self.logfile, self.lock, self.secrets
        )
        if text == self._written:
            return False
        create_file(self.logfile)  # 0600 before the daemon appends to it: it names the clients' files
        replace_file(self.secrets, text[1].encode())  # rsync refuses a secrets file others can read
        replace_file(self.conf, text[0].encode())
        self._written = text
        return True
