"""WebDAV resources over the mount view: folders and files, translated and nothing else.

Every write goes through the same MountView calls the FUSE mount makes, so
the rules are the mount's: files live in `current/`, MKCOL and DELETE at the
root add and remove a source, MKCOL in `snapshots/` takes a snapshot,
snapshots are read-only (403). Files are sent as downloads. Symlinks, devices and
other special files are not shown: HTTP has no way to say what they are;
archives (`?format=tar.zst`) keep them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from typing import Any

from wsgidav import util
from wsgidav.dav_error import HTTP_BAD_REQUEST, HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection

from engine.errors import NotFound
from engine.meta import Kind, Stat
from engine.mount import MountView, paths
from engine.mount.nodes import ROOT_NODE, WORKING, node_of

from . import props
from .archive import attachment
from .errors import translated
from .scope import KEY as SCOPE_KEY
from .session import Session, names_of
from .upload import Upload

READ_SIZE = 1 << 20  # one chunk on average: a GET reads the pool a chunk at a time


def text(name: bytes) -> str | None:
    """A name as URL text; None for a name that is not UTF-8 (not shown)."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        return None


def in_working_tree(stat: Stat | None) -> bool:
    return stat is not None and node_of(stat.ino).space == WORKING


class Node:
    """What folders and files share: where they are, their times and dead properties."""

    name: str
    path: str
    environ: dict[str, Any]
    stat: Stat

    def setup(self, session: Session, stat: Stat, parent: Stat | None, name: bytes) -> None:
        self.session = session
        self.view: MountView = session.view
        self.stat = stat
        self.parent = parent
        self.raw_name = name
        # Asked for once per property in a PROPFIND: read once per resource (one request).
        self._xattrs: Mapping[bytes, bytes] | None = None

    def xattrs(self) -> Mapping[bytes, bytes]:
        if self._xattrs is None:
            with translated():
                self._xattrs = self.view.xattrs(self.number)
        return self._xattrs

    @property
    def number(self) -> int:
        return self.stat.ino

    def writable(self) -> bool:
        return in_working_tree(self.stat) and in_working_tree(self.parent)

    def require_writable(self) -> None:
        if not self.writable():
            raise DAVError(HTTP_FORBIDDEN, context_info="only current/ can be changed; snapshots are read-only")

    def get_creation_date(self) -> float:
        return self.stat.ctime_ns / 1e9

    def get_last_modified(self) -> float:
        return self.stat.mtime_ns / 1e9

    def get_display_name(self) -> str:
        return text(self.raw_name) or ""

    def prevent_locking(self) -> bool:
        return not in_working_tree(self.stat)

    def set_last_modified(self, dest_path: str, time_stamp: int | str, *, dry_run: bool) -> bool:
        """From X-OC-Mtime (seconds) or Win32LastModifiedTime (an HTTP date)."""
        secs = time_stamp if isinstance(time_stamp, int) else util.parse_time_string(time_stamp)
        if secs is None:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"not a time: {time_stamp!r}")
        self.require_writable()
        if not dry_run:
            with translated():
                self.stat = self.view.setattr(self.number, mtime_ns=int(secs) * 1_000_000_000)
        return True

    # -- dead properties: extended attributes of the node ---------------------

    def get_property_names(self, *, is_allprop: bool) -> list[str]:
        names: list[str] = super().get_property_names(is_allprop=is_allprop)  # type: ignore[misc]
        return names + props.names(self.xattrs())

    def get_property_value(self, name: str) -> Any:
        if props.is_dead(name):
            return props.value(self.xattrs(), name)
        return super().get_property_value(name)  # type: ignore[misc]

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> Any:
        if not props.is_dead(name) or name.startswith("{urn:schemas-microsoft-com:}"):
            return super().set_property_value(name, value, dry_run=dry_run)  # type: ignore[misc]
        self.require_writable()
        self._xattrs = None
        with translated():
            props.store(self.view, self.number, name, value, dry_run)
        return None

    def remove_all_properties(self, *, recursive: bool) -> None:
        """Dead properties are xattrs: they go with the node."""

    # -- copy and move --------------------------------------------------------

    def destination(self, dest_path: str) -> tuple[Stat, bytes]:
        """The directory a COPY or MOVE lands in, and the new name."""
        names = names_of(dest_path)
        if not names:
            raise DAVError(HTTP_FORBIDDEN, context_info="cannot replace the root")
        with translated():
            parent = self.session.resolve("/".join(n.decode("utf-8", "surrogateescape") for n in names[:-1]))[-1]
        if not in_working_tree(parent):
            raise DAVError(HTTP_FORBIDDEN, context_info="COPY and MOVE land in current/ only")
        return parent, names[-1]

    def handle_move(self, dest_path: str) -> bool:
        self.require_writable()
        return False  # wsgidav checks locks and overwrite, then calls move_recursive

    def support_recursive_move(self, dest_path: str) -> bool:
        parent, _ = self.destination(dest_path)
        return node_of(parent.ino).owner == node_of(self.number).owner  # one source: a rename

    def move_recursive(self, dest_path: str) -> list[Any]:
        parent, name = self.destination(dest_path)
        assert self.parent is not None
        with translated():
            self.view.rename(self.parent.ino, self.raw_name, parent.ino, name)
        return []

    def delete(self) -> None:
        assert self.parent is not None
        if node_of(self.parent.ino) == ROOT_NODE:  # a source as a whole, as rmdir at the mount's root
            with translated():  # the engine refuses a source that has snapshots (409)
                self.view.rmdir(self.parent.ino, self.raw_name)
            self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]
            return
        self.require_writable()
        with translated():
            paths.remove(self.view, self.parent.ino, self.raw_name)
        self.remove_all_locks(recursive=True)  # type: ignore[attr-defined]


class Folder(Node, DAVCollection):  # type: ignore[misc]
    def __init__(self, path: str, environ: dict[str, Any], session: Session, stat: Stat, parent: Stat | None):
        DAVCollection.__init__(self, path, environ)
        self.setup(session, stat, parent, names_of(path)[-1] if parent else b"")

    def members(self) -> Iterator[Node]:
        """The shown members, a page of lookups at a time."""
        with translated():
            for page in self.session.pages(self.number):
                for name, stat in page:
                    res = self.member(name, stat)
                    if res is not None:
                        yield res

    def member(self, name: bytes, stat: Stat) -> Node | None:
        label = text(name)
        if label is None:
            return None
        allowed = self.environ.get(SCOPE_KEY)
        if allowed is not None and self.parent is None and not allowed(label, "see"):
            return None  # the root lists only the sources this user may see
        path = util.join_uri(self.path, label)
        if stat.kind == Kind.DIR:
            return Folder(path, self.environ, self.session, stat, self.stat)
        if stat.kind == Kind.FILE:
            return File(path, self.environ, self.session, stat, self.stat)
        return None

    def get_member_list(self) -> list[Node]:
        return list(self.members())

    def get_member_names(self) -> list[str]:
        return [m.name for m in self.members()]

    def get_member(self, name: str) -> Node | None:
        raw = name.encode("utf-8", "surrogateescape")
        try:
            with translated():
                stat = self.session.lookup(self.number, raw)
        except DAVError:
            return None
        return self.member(raw, stat)

    def get_used_bytes(self) -> None:
        return None

    def create_collection(self, name: str) -> None:
        """MKCOL: a directory in current/, a source at the root, a snapshot in snapshots/."""
        with translated():  # a new snapshot's root is remembered by the view: held, to be forgotten
            self.session.hold(self.view.mkdir(self.number, name.encode("utf-8"), 0o755))

    def create_empty_resource(self, name: str) -> File:
        raw = name.encode("utf-8")
        if not in_working_tree(self.stat):
            raise DAVError(HTTP_FORBIDDEN, context_info="files live in current/; snapshots are read-only")
        path = util.join_uri(self.path, name)
        if self.environ.get("REQUEST_METHOD") == "PUT":
            return File(path, self.environ, self.session, None, self.stat, raw)  # named once complete
        with translated():  # LOCK on a new name makes an empty file
            stat = self.view.create(self.number, raw, 0o644)
            self.view.release(stat.ino)
        return File(path, self.environ, self.session, stat, self.stat)

    def support_recursive_delete(self) -> bool:
        return True

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        parent, name = self.destination(dest_path)
        with translated():
            try:
                target = self.view.lookup(parent.ino, name)
            except NotFound:
                target = self.view.mkdir(parent.ino, name, self.stat.mode)
            self.view.setattr(target.ino, mode=self.stat.mode, mtime_ns=self.stat.mtime_ns)
            for key, value in props.dead(self.xattrs()).items():
                self.view.setxattr(target.ino, key, value)


class File(Node, DAVNonCollection):  # type: ignore[misc]
    def __init__(
        self, path: str, environ: dict[str, Any], session: Session, stat: Stat | None, parent: Stat,
        new_name: bytes | None = None,
    ):  # fmt: skip
        DAVNonCollection.__init__(self, path, environ)
        name = new_name if new_name is not None else names_of(path)[-1]
        # A PUT to a new name has no node until its body is complete.
        placeholder = Stat(0, 0o100644, 1, 0, 0, 0, 0, 0, 0, 0, 0)
        self.setup(session, stat or placeholder, parent, name)
        self.upload: Upload | None = None
        self._tag: str | None = None

    def writable(self) -> bool:
        return in_working_tree(self.parent) and (self.stat.ino == 0 or in_working_tree(self.stat))

    def get_content_length(self) -> int:
        return self.stat.size

    def get_content_type(self) -> str:
        return str(util.guess_mime_type(self.path))

    def get_etag(self) -> str | None:
        if self.stat.ino == 0:
            return None
        if self._tag is None:  # asked several times a request (headers, If-Match, the PUT reply)
            with translated():
                self._tag = paths.content_tag(self.view, self.number)
        return self._tag

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> Content:
        return Content(self.view, self.number, self.stat.size)

    def finalize_headers(self, environ: dict[str, Any], response_headers: list[tuple[str, str]]) -> None:
        """GET and HEAD: a file is a download, never a page (the share has the web UI's origin)."""
        response_headers.append(("Content-Disposition", attachment(self.raw_name.decode("utf-8", "replace"))))

    def begin_write(self, *, content_type: str | None = None) -> Upload:
        self.require_writable()
        assert self.parent is not None
        with translated():
            self.upload = Upload(self.view, self.parent.ino, self.raw_name, self.environ)
        return self.upload

    def end_write(self, *, with_errors: bool) -> None:
        upload, self.upload = self.upload, None
        if upload is None:
            return
        with translated():
            if with_errors:
                upload.abort()
            else:
                self.stat, self._tag = upload.commit(), None

    def copy_move_single(self, dest_path: str, *, is_move: bool) -> None:
        parent, name = self.destination(dest_path)
        with translated():
            paths.copy_file(self.view, self.number, parent.ino, name)


class Content(io.RawIOBase):
    """A file's bytes for GET: read a chunk-sized piece at a time, seekable for Range."""

    def __init__(self, view: MountView, number: int, size: int):
        super().__init__()
        self.view = view
        self.number = number
        self.size = size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            size = self.size - self.pos
        with translated():
            data = self.view.read(self.number, self.pos, min(size, READ_SIZE))
        self.pos += len(data)
        return data
