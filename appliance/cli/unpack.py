"""A restore from an appliance: PATH of a snapshot as a tar.zst (dav/archive.py), unpacked as the local restore writes.

What the archive carries comes back: modes with setuid, setgid and sticky bits, owners by number (when
run as root), times (a folder's after its contents), symlinks, device nodes and fifos, and extended
attributes, POSIX ACLs among them. Each file is written under a temporary name and renamed once it is
whole and not reported damaged: the archive is asked with `damaged=list`, so a file the appliance cannot
read arrives as zeros followed by a pax global record naming it, and is dropped (exit 3, as locally).
An archive that stops short (the appliance could not go on) is an error, and what arrived stays.
Not carried: hard links (each name arrives as its own file) and holes.
"""

from __future__ import annotations

import http.client
import json
import os
import tarfile
from dataclasses import dataclass, field
from decimal import Decimal
from typing import IO, Any, cast

import zstandard

from dav.archive import DAMAGED, XATTR
from engine.errors import CairnError, Exists

from .client import Client


@dataclass
class Unpacked:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)

    def doc(self) -> dict[str, Any]:
        return {"files": self.files, "dirs": self.dirs, "bytes": self.bytes, "errors": self.errors,
                "damaged": self.damaged}  # fmt: skip


def restore(client: Client, source: str, snap: str, path: str, dest: str, overwrite: bool) -> dict[str, Any]:
    """PATH (a folder or one entry) of a snapshot to DEST; DEST must not exist (an empty folder may) unless
    `overwrite`."""
    if not overwrite and os.path.lexists(dest) and not (os.path.isdir(dest) and not os.listdir(dest)):
        raise Exists(f"{dest} exists; restore elsewhere, or give --overwrite to replace what is there")
    reply = client.stream(f"/sources/{source}/snapshots/{snap}/archive", path=path or "/", format="tar.zst",
                          damaged="list")  # fmt: skip
    with reply:
        return _Unpack(reply, dest, f"{source} @ {snap}").run(path)


class _Unpack:
    def __init__(self, reply: Any, dest: str, label: str):
        self.frame = Frame(reply)
        self.dest, self.label = dest, label
        self.done = Unpacked()
        self.folders: list[tuple[str, tarfile.TarInfo]] = []  # their owners, modes and times come last
        # A file written under its temporary name: tmp, final, its path in the archive.
        self.pending: tuple[str, str, str] | None = None
        self.seen = 0  # damaged paths the archive has named so far
        self.written = 0
        self.single = False

    def run(self, path: str) -> dict[str, Any]:
        tar: tarfile.TarFile | None = None
        try:
            try:
                with tarfile.open(fileobj=cast(IO[bytes], self.frame), mode="r|", errorlevel=1) as tar:
                    for member in tar:
                        self._settle(tar)
                        self._one(tar, member)
            except tarfile.ReadError:
                pass  # tarfile's word for a pax global record at the very end, or for a cut archive
            while self.frame.read(1 << 16):  # the frame's end, after the end-of-archive blocks
                pass
            if tar is not None and self.frame.complete:
                self._settle(tar)
        except (tarfile.ReadError, http.client.HTTPException, zstandard.ZstdError, ConnectionError, TimeoutError):
            pass  # a cut archive: said below
        except OSError as e:  # this machine's side: a full disk, a read-only folder
            raise CairnError(f"restoring to {self.dest}: {e}") from e
        finally:
            self._drop_pending()
        if not self.frame.complete:
            raise CairnError(
                f"the archive of {self.label} ended unfinished after {self.done.files} files: the appliance could "
                f"not read everything (its log names the path; `cairn pool scrub` finds damage). What arrived is "
                f"in {self.dest}"
            )
        if tar is not None:
            for folder, member in sorted(self.folders, key=lambda f: f[0].count(os.sep), reverse=True):
                self._attributes(tar, member, folder)
        if self.single and self.done.damaged:
            raise CairnError(f"{self.label}: {path}: its data could not be read from the pool")
        return self.done.doc()

    def _one(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        archived = member.name
        inner = member.name.split("/", 1)[1] if "/" in member.name else ""
        if inner and (inner.startswith("/") or {".", "..", ""} & set(inner.split("/"))):
            self.done.errors.append(f"{inner}: not a name a snapshot holds; skipped")
            return
        if not inner and not member.isdir():
            self.single = True  # one entry asked for by name: DEST is its own name
        target = os.path.join(self.dest, inner) if inner else self.dest
        parent = os.path.dirname(os.path.abspath(target))
        top = os.path.realpath(self.dest)
        if inner and os.path.commonpath([top, os.path.realpath(parent)]) != top:
            self.done.errors.append(f"{inner}: its folder leads out of {self.dest} (a symlink); skipped")
            return
        if member.isdir():
            os.makedirs(target, exist_ok=True)
            self.folders.append((target, member))
            self.done.dirs += 1
            return
        os.makedirs(parent, exist_ok=True)
        self.written += 1
        member.name = f".cairn-restore.{os.getpid()}.{self.written}"  # short: any name may be 255 bytes
        tar.extract(member, parent, numeric_owner=True, filter=_keep_modes)
        tmp = os.path.join(parent, member.name)
        self._xattrs(member, tmp)
        self._time(member, tmp)
        self.pending = (tmp, target, archived)
        if member.isfile():
            self.done.files += 1
            self.done.bytes += member.size

    def _settle(self, tar: tarfile.TarFile) -> None:
        """The file before: renamed to its name, or dropped if the archive has just named it damaged."""
        listed = json.loads(tar.pax_headers.get(DAMAGED, "[]"))
        named, self.seen = listed[self.seen :], len(listed)
        for path in named:
            inner = path.split("/", 1)[1] if "/" in path else ""
            if path.endswith("/"):
                self.done.damaged.append(inner)  # a folder the appliance could not list
            elif self.pending is not None and self.pending[2] == path:
                os.unlink(self.pending[0])
                self.done.damaged.append(inner or os.path.basename(self.dest))
                self.done.files -= 1
                self.pending = None
        if self.pending is None:
            return
        tmp, final, _ = self.pending
        self.pending = None
        if os.path.isdir(final) and not os.path.islink(final):
            os.unlink(tmp)
            self.done.errors.append(f"{final}: a folder is in the way; not replaced")
            return
        os.replace(tmp, final)

    def _drop_pending(self) -> None:
        if self.pending is not None and os.path.lexists(self.pending[0]):
            os.unlink(self.pending[0])  # never a file cut short, even under its temporary name
        self.pending = None

    def _attributes(self, tar: tarfile.TarFile, member: tarfile.TarInfo, folder: str) -> None:
        try:
            tar.chown(member, folder, numeric_owner=True)
            tar.chmod(member, folder)
            tar.utime(member, folder)
        except tarfile.ExtractError as e:
            self.done.errors.append(f"{folder}: {e}")
        self._xattrs(member, folder)
        self._time(member, folder)

    def _time(self, member: tarfile.TarInfo, path: str) -> None:
        """The modification time to the nanosecond, from the pax record (tarfile keeps a float)."""
        exact = member.pax_headers.get("mtime")
        if exact is None:
            return
        ns = int(Decimal(exact) * 1_000_000_000)
        try:
            os.utime(path, ns=(ns, ns), follow_symlinks=False)
        except OSError as e:
            self.done.errors.append(f"{path}: its time: {e.strerror}")

    def _xattrs(self, member: tarfile.TarInfo, path: str) -> None:
        for key, value in member.pax_headers.items():
            if not key.startswith(XATTR):
                continue
            name = key[len(XATTR) :].encode("utf-8", "surrogateescape")
            try:
                os.setxattr(path, name, value.encode("utf-8", "surrogateescape"), follow_symlinks=False)
            except OSError as e:
                self.done.errors.append(f"{path}: extended attribute {name.decode('utf-8', 'replace')}: {e.strerror}")


def _keep_modes(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
    """tarfile's "tar" filter (nothing outside DEST, no absolute links) without its loss of setuid, setgid
    and sticky bits: the snapshot's modes, as a local restore writes them."""
    checked = tarfile.tar_filter(member, path)
    return checked.replace(mode=member.mode, deep=False) if checked is not None else None


class Frame:
    """A zstd stream decompressed as it is read, which says whether its frame ended (a finished archive)."""

    def __init__(self, raw: Any):
        self.raw = raw
        self.frame = zstandard.ZstdDecompressor().decompressobj()
        self.buffer = bytearray()

    @property
    def complete(self) -> bool:
        return bool(self.frame.eof)

    def read(self, size: int = -1) -> bytes:
        while (size < 0 or len(self.buffer) < size) and not self.frame.eof:
            data = self.raw.read(1 << 16)
            if not data:
                break
            self.buffer += self.frame.decompress(data)
        n = len(self.buffer) if size < 0 else min(size, len(self.buffer))
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out
