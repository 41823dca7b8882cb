"""Samba: `\\\\appliance\\SOURCE`, one share per source, its current/ writable, its snapshots as Previous Versions.

Debian's smbd runs with a config of its own (`<data>/doors/smb/`, 0700),
rewritten from the catalog whenever accounts, roles, sources or snapshots
change (`Shares.refresh`, then SIGHUP):

- Accounts: every Cairn account whose password has an NT hash
  (accounts.py) signs in with its own name and password. Samba wants a
  Unix user behind each: `cairn-<id>` (uid UID_BASE + id), known to smbd
  alone through nss_wrapper (Debian `libnss-wrapper`: a passwd file of its
  own, preloaded), so the machine's users stay as they are; a username map
  turns the account's name into it; its NT hash is in an smbpasswd file.
- Access follows the roles as on /dav: who may see a source reads its
  share, who may run it writes; others do not see the share. Files are
  written as root (`force user`), as the rsync doors write them.
- Previous Versions: shadow_copy2 reads a directory of `@GMT-…` links,
  one per snapshot, named by the snapshot's time (UTC) and pointing at
  `MOUNT/SOURCE/snapshots/NAME`: every snapshot shows, whatever its name.
- SMB2 and SMB3 only, signing required, encryption asked of SMB3 clients,
  no guests, NTLMv2 only.
- Each tree connect and disconnect runs the gate's helper
  (`cairn-door smb connect|disconnect`), as root: smbsessions.py makes
  the backup sessions.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from engine.deployment import Deployment
from engine.errors import InvalidArgument, NotFound
from engine.private import make_dirs, replace_file

from ..access import can
from ..accounts import Accounts, User

log = logging.getLogger(__name__)
UID_BASE = 200000  # + account id: the Unix uid smbd knows an account by (nss_wrapper's, not the machine's)
UNIX = "cairn-"  # + account id: the Unix name smbd knows an account by
RESERVED = {"global", "homes", "printers", "print$", "ipc$"}  # sections smb.conf gives a meaning to
GMT = "@GMT-%Y.%m.%d-%H.%M.%S"  # a Previous Version's token, as Windows asks for it
LCT = "LCT-5F5E1000"  # the smbpasswd entry's last password change (any time: passwords do not expire)
DIRS = ("private", "state", "cache", "lock", "pid", "ncalrpc", "versions")


@dataclass(frozen=True)
class Share:
    source: str
    readers: tuple[str, ...]  # Unix names of the accounts that may see it
    writers: tuple[str, ...]  # ... and of those that may write into current/


def hook_spelling(name: str) -> str:
    """A name as Samba substitutes it into a hook's command line (%U), lower-cased: Samba keeps letters,
    digits, '.', '-', '_' and ' ' and turns anything else into '_'."""
    return re.sub(r"[^A-Za-z0-9._ -]", "_", name).lower()


def unix_name(user_id: int) -> str:
    return f"{UNIX}{user_id}"


def shares(users: list[User], hashes: dict[int, str], sources: list[str],
           access: dict[str, tuple[str | None, str | None]]) -> list[Share]:  # fmt: skip
    """The shares to serve: each source someone with an SMB password may see, its name free in smb.conf."""
    known = [u for u in users if u.id in hashes]
    skipped = set(unserved(sources))
    out = []
    for source in (s for s in sources if s not in skipped):
        group, owner = access.get(source, (None, None))
        readers = tuple(unix_name(u.id) for u in known if can(u, "see", group, owner))
        writers = tuple(unix_name(u.id) for u in known if can(u, "run", group, owner))
        if readers:  # an empty `valid users` would let everyone in
            out.append(Share(source, readers, writers))
    return out


def unserved(sources: list[str]) -> list[str]:
    """Sources whose name cannot be a share (smb.conf's own sections, or a case-twin of an earlier one)."""
    out, taken = [], set()
    for source in sources:
        if source.lower() in RESERVED or source.lower() in taken:
            out.append(source)
        taken.add(source.lower())
    return out


def config_text(folder: Path, mount: Path, host: str, port: int, hooks: str, served: list[Share]) -> str:
    g = [
        "# Written by Cairn from its catalog; changes here are overwritten.",
        "[global]",
        "server role = standalone server", "security = user", "workgroup = WORKGROUP",
        f"passdb backend = smbpasswd:{folder / 'private' / 'smbpasswd'}",
        f"username map = {folder / 'users.map'}",
        "map to guest = never", "restrict anonymous = 2", "guest account = nobody",
        "server min protocol = SMB2_02", "server signing = mandatory", "ntlm auth = ntlmv2-only",
        # SMB3 clients are asked to encrypt (Windows 8 and later do): AES, no slower here than signing alone.
        "server smb encrypt = desired",
        "disable netbios = yes", "dns proxy = no", f"smb ports = {port}",
        *([f"interfaces = {host}", "bind interfaces only = yes"] if host not in ("0.0.0.0", "::", "") else []),
        f"private dir = {folder / 'private'}", f"state directory = {folder / 'state'}",
        f"cache directory = {folder / 'cache'}", f"lock directory = {folder / 'lock'}",
        f"pid directory = {folder / 'pid'}", f"ncalrpc dir = {folder / 'ncalrpc'}",
        "usershare path =", "registry shares = no", "config backend = file",
        "log level = 1", "load printers = no", "printing = bsd", "printcap name = /dev/null",
        "disable spoolss = yes", "access based share enum = yes", "deadtime = 15",
        "rpc start on demand helpers = no",  # samba-dcerpcd runs beside smbd, supervised like it (rpc_command)
        # The mount has no leases or POSIX locks for other processes to see: Samba keeps its own.
        "kernel oplocks = no", "kernel share modes = no", "posix locking = no",
        # Windows' attributes and creation time, in the user.DOSATTRIB xattr the mount and snapshots keep.
        "store dos attributes = yes", "ea support = yes", "nt acl support = no",
        "wide links = no",
        "create mask = 0644", "directory mask = 0755",
        "vfs objects = shadow_copy2", f"shadow:format = {GMT}", "shadow:sort = desc", "shadow:localtime = no",
        "",
    ]  # fmt: skip
    for share in served:
        current = mount / share.source / "current"
        g += [
            f"[{share.source}]", f"comment = {share.source}: writes go into current/; snapshots are Previous Versions",
            f"path = {current}", f"valid users = {' '.join(share.readers)}", "read only = yes",
            "force user = root", "force group = root",  # here, not in [global]: IPC$ lists shares as the user
            *([f"write list = {' '.join(share.writers)}"] if share.writers else []),
            f"shadow:mountpoint = {current}", f"shadow:snapdir = {folder / 'versions' / share.source}",
            f"root preexec = {hooks} smb connect %S %U %I %d", "root preexec close = yes",
            f"root postexec = {hooks} smb disconnect %S %U %I %d", "",
        ]  # fmt: skip
    return "\n".join(g)


def passdb_text(users: list[User], hashes: dict[int, str]) -> str:
    """smbpasswd: name:uid:LM hash (none):NT hash:flags:last change:"""
    lines = [f"{unix_name(u.id)}:{UID_BASE + u.id}:{'X' * 32}:{hashes[u.id]}:[U          ]:{LCT}:"
             for u in users if u.id in hashes]  # fmt: skip
    return "\n".join(lines) + "\n"


def passwd_text(users: list[User], hashes: dict[int, str]) -> str:
    """The passwd file smbd alone reads (nss_wrapper): root, nobody and one entry per account."""
    lines = ["root:x:0:0:root:/root:/bin/sh", "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin"]
    lines += [f"{unix_name(u.id)}:x:{UID_BASE + u.id}:65534:{u.name}:/nonexistent:/usr/sbin/nologin"
              for u in users if u.id in hashes]  # fmt: skip
    return "\n".join(lines) + "\n"


def usermap_text(users: list[User], hashes: dict[int, str]) -> str:
    """Samba's username map: the account's name as signed in with -> its Unix name."""
    return "".join(f'{unix_name(u.id)} = "{u.name}"\n' for u in users if u.id in hashes)


def versions(mount: Path, snapshots: Iterable[tuple[str, str, float]]) -> dict[str, dict[str, str]]:
    """source -> {@GMT token: snapshot directory}, from (source, name, created); two in one second
    take the following free seconds, in the order they were made."""
    out: dict[str, dict[str, str]] = {}
    for source, name, created in sorted(snapshots, key=lambda s: (s[0], s[2])):
        tokens = out.setdefault(source, {})
        t = int(created)
        while time.strftime(GMT, time.gmtime(t)) in tokens:
            t += 1
        tokens[time.strftime(GMT, time.gmtime(t))] = str(mount / source / "snapshots" / name)
    return out


def sync_links(folder: Path, wanted: dict[str, dict[str, str]]) -> bool:
    """Make `folder/SOURCE/@GMT-…` links match `wanted`; whether anything changed."""
    changed = False
    present = {p.name for p in folder.iterdir() if p.is_dir()} if folder.exists() else set()
    for source in present | set(wanted):
        d = folder / source
        want = wanted.get(source, {})
        have = {p.name: os.readlink(p) for p in d.iterdir() if p.is_symlink()} if d.exists() else {}
        for token in have.keys() - want.keys():
            (d / token).unlink()
            changed = True
        if want:
            d.mkdir(mode=0o700, exist_ok=True)
        for token, target in want.items():
            if have.get(token) != target:
                (d / token).unlink(missing_ok=True)
                (d / token).symlink_to(target)
                changed = True
        if not want and d.exists():
            d.rmdir()
    return changed


def nss_wrapper() -> str:
    """Debian's libnss_wrapper.so (package libnss-wrapper), for the architecture at hand."""
    found = sorted(glob.glob("/usr/lib/*/libnss_wrapper.so")) + sorted(glob.glob("/usr/lib/libnss_wrapper.so"))
    if not found:
        raise FileNotFoundError("libnss_wrapper.so is missing: install Debian's libnss-wrapper")
    return found[0]


def environment(folder: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LD_PRELOAD": nss_wrapper(),
        "NSS_WRAPPER_PASSWD": str(folder / "passwd"), "NSS_WRAPPER_GROUP": str(folder / "group"),
    }  # fmt: skip


def command(conf: Path) -> list[str]:
    return ["/usr/sbin/smbd", "--foreground", "--no-process-group", f"--configfile={conf}", "--debug-stdout"]


def rpc_command(conf: Path) -> list[str]:
    """samba-dcerpcd: the RPC services Windows asks for beside the files (the share list, share info)."""
    return ["/usr/libexec/samba/samba-dcerpcd", "--foreground", "--no-process-group", "--libexec-rpcds",
            f"--configfile={conf}", "--debug-stdout"]  # fmt: skip


class Shares:
    """Keeps smbd's files in step with the catalog."""

    def __init__(self, deployment: Deployment, accounts: Accounts, mount: Path, folder: Path, hooks: str,
                 host: str, port: int):  # fmt: skip
        self.deployment, self.accounts = deployment, accounts
        self.mount, self.folder, self.hooks = mount, folder, hooks
        self.host, self.port = host, port
        self.conf = folder / "smb.conf"
        self.spellings: dict[str, set[str]] = {}  # a sign-in name as Samba's hooks spell it -> accounts
        self.readers: dict[str, set[str]] = {}  # source -> the accounts that may use its share now
        self._written: tuple[str, ...] | None = None

    def account(self, typed: str) -> str:
        """The account a client signed in as, from the name Samba's hook gives (%U: what the client typed,
        in any case, with characters such as '@' made '_')."""
        found = self.spellings.get(hook_spelling(typed), set())
        if len(found) > 1:
            raise InvalidArgument(f"the accounts {', '.join(sorted(found))} look alike to Samba ('@' reads as '_'): "
                                  "rename one to use the SMB share")  # fmt: skip
        if not found:
            raise NotFound(f"no account {typed!r}")
        return next(iter(found))

    def prepare(self) -> None:
        for d in DIRS:
            make_dirs(self.folder / d)
        rpc = self.folder / "ncalrpc"
        os.chmod(rpc, 0o755)  # as samba-dcerpcd insists; doors/ above it is closed to others
        for stale in rpc.iterdir():  # sockets a killed samba-dcerpcd left: it will not bind over them
            if stale.is_socket():
                stale.unlink()
        replace_file(self.folder / "group", b"root:x:0:\nnogroup:x:65534:\n")

    def rpc_ready(self) -> bool:
        """Whether samba-dcerpcd listens (smbd asks it for the share list; it does not start one itself)."""
        return (self.folder / "ncalrpc" / "EPMAPPER").is_socket()

    def refresh(self) -> bool:
        """Rewrite the files (and the Previous Versions' links) if the catalog changed them; whether the
        config did (smbd is then told to read it again)."""
        users, hashes = self.accounts.list_users(), self.accounts.nt_hashes()
        sources = [s.name for s in self.deployment.list_sources()]
        served = shares(users, hashes, sources, self.accounts.source_access())
        snaps = [(s.source, s.name, s.created) for s in self.deployment.list_snapshots()]
        sync_links(self.folder / "versions", versions(self.mount, snaps))
        text = (config_text(self.folder, self.mount, self.host, self.port, self.hooks, served),
                passdb_text(users, hashes), passwd_text(users, hashes), usermap_text(users, hashes))  # fmt: skip
        spellings: dict[str, set[str]] = {}
        for u in users:
            for n in (u.name, unix_name(u.id)) if u.id in hashes else ():
                spellings.setdefault(hook_spelling(n), set()).add(u.name)
        self.spellings = spellings
        by_unix = {unix_name(u.id): u.name for u in users}
        self.readers = {s.source: {by_unix[r] for r in s.readers} for s in served}
        if text == self._written:
            return False
        conf, passdb, passwd, usermap = text
        replace_file(self.folder / "private" / "smbpasswd", passdb.encode())
        replace_file(self.folder / "passwd", passwd.encode())
        replace_file(self.folder / "users.map", usermap.encode())
        replace_file(self.conf, conf.encode())  # last: it names the others
        self._written = text
        return True
