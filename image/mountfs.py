"""The image pool as the mount's `images/` directory (engine/mount/images.py's ImageProvider).

`<disk>.img` is the writable image: created by `create` (`truncate -s`,
`dd`, `qemu-img convert`), written at any offset, committed when the last
writer closes it or calls fsync. `<disk>@<snapshot>.img` is the version a
snapshot froze, read-only.
"""

from __future__ import annotations

import stat as st
import threading
from collections import OrderedDict

from engine.cache import check_may_block
from engine.deployment import SourceInfo
from engine.errors import InvalidName, NotFound, ReadOnly
from engine.meta import Stat
from engine.mount.nodes import IMAGE, IMAGE_VERSION, Node, node_of

from .disk import VersionReader
from .pool import ImageInfo, ImagePool, check_disk_name

SUFFIX = b".img"
READERS = 64  # versions whose block map nodes stay in memory between reads


class MountImages:
    """Thread-safe: `_lock` guards the caches and open counts; the pool and disks guard themselves."""

    def __init__(self, pool: ImagePool):
        self.pool = pool
        self._lock = threading.Lock()
        self._infos: dict[int, ImageInfo] = {}  # node number -> image or version
        self._readers: OrderedDict[int, VersionReader] = OrderedDict()
        self._writers: dict[int, int] = {}  # node number -> open handles that write

    def _number(self, source_id: int, info: ImageInfo) -> int:
        part = info.id if info.snapshot is None else IMAGE_VERSION | info.id
        number = Node(IMAGE, source_id, part).number
        with self._lock:
            self._infos[number] = info
        return number

    def _stat(self, source_id: int, info: ImageInfo) -> Stat:
        number = self._number(source_id, info)
        mode = st.S_IFREG | (0o644 if info.snapshot is None else 0o444)
        size = self._size(number, info)
        t = int(info.changed * 1e9)
        return Stat(number, mode, 1, 0, 0, 0, size, -(-size // 512), t, t, t)

    def _size(self, number: int, info: ImageInfo) -> int:
        return info.size if info.snapshot is not None else self.pool.live_size(info)

    def _info(self, number: int) -> ImageInfo:
        with self._lock:
            info = self._infos.get(number)
        if info is not None:
            return info
        check_may_block()
        part = node_of(number).ino
        info = self.pool.by_id(part & ~IMAGE_VERSION, bool(part & IMAGE_VERSION))
        with self._lock:
            self._infos[number] = info
        return info

    # -- ImageProvider -------------------------------------------------------

    def listdir(self, source: SourceInfo) -> list[tuple[bytes, Stat]]:
        check_may_block()
        found = self.pool.images(source.name) + self.pool.versions(source.name)
        return sorted((i.file_name.encode(), self._stat(source.id, i)) for i in found)

    def lookup(self, source: SourceInfo, name: bytes) -> Stat:
        try:
            text = _disk_file(name)
        except InvalidName:
            raise NotFound(f"no image {name!r}") from None
        check_may_block()
        disk, _, snapshot = text.partition("@")
        if snapshot:
            return self._stat(source.id, self.pool.version(source.name, disk, snapshot))
        return self._stat(source.id, self.pool.find(source.name, disk))

    def getattr(self, number: int) -> Stat:
        return self._stat(node_of(number).owner, self._info(number))

    def read(self, number: int, offset: int, size: int) -> bytes:
        return self._reader(number).read(offset, size)

    def _reader(self, number: int) -> VersionReader:
        info = self._info(number)
        if info.snapshot is None:
            return self.pool.reader(info)  # the open disk, or the image as committed
        with self._lock:
            reader = self._readers.get(number)
            if reader is not None:
                self._readers.move_to_end(number)
                return reader
        reader = self.pool.reader(info)
        with self._lock:
            self._readers[number] = reader
            if len(self._readers) > READERS:
                self._readers.popitem(last=False)
        return reader

    def create(self, source: SourceInfo, name: bytes, mode: int) -> Stat:
        text = _disk_file(name)
        if "@" in text:
            raise ReadOnly("<disk>@<snapshot>.img names an image version, which a snapshot makes")
        check_may_block()
        info = self.pool.create(source.name, check_disk_name(text))
        number = self._number(source.id, info)
        self.open(number, True)
        return self._stat(source.id, info)

    def unlink(self, source: SourceInfo, name: bytes) -> None:
        text = _disk_file(name)
        if "@" in text:
            raise ReadOnly("image versions belong to their snapshot; delete the snapshot")
        check_may_block()
        info = self.pool.find(source.name, text)
        self.pool.remove(source.name, text)
        number = Node(IMAGE, source.id, info.id).number
        with self._lock:
            self._infos.pop(number, None)

    def truncate(self, number: int, size: int) -> Stat:
        info = self._writable(number)
        check_may_block()
        self.pool.open_disk(info).truncate(size)
        with self._lock:
            held = number in self._writers
        if not held:  # `truncate -s` opens nothing: commit now
            self.pool.commit(info.source, info.name)
        return self.getattr(number)

    def open(self, number: int, write: bool) -> None:
        if not write:
            return
        info = self._writable(number)
        check_may_block()
        self.pool.open_disk(info)
        with self._lock:
            self._writers[number] = self._writers.get(number, 0) + 1

    def release(self, number: int) -> None:
        with self._lock:
            count = self._writers.get(number)
        if count is None:
            return
        if count == 1:
            check_may_block()  # the last writer: commit
        with self._lock:
            count = self._writers.pop(number) - 1
            if count:
                self._writers[number] = count
                return
        info = self._info(number)
        self.pool.commit(info.source, info.name)

    def write(self, number: int, offset: int, data: bytes) -> int:
        info = self._writable(number)
        return self.pool.open_disk(info).write(offset, data)

    def fsync(self, number: int) -> None:
        info = self._info(number)
        if info.snapshot is None:
            self.pool.commit(info.source, info.name)

    def _writable(self, number: int) -> ImageInfo:
        info = self._info(number)
        if info.snapshot is not None:
            raise ReadOnly("image versions are read-only")
        return info


def _disk_file(name: bytes) -> str:
    if not name.endswith(SUFFIX) or len(name) == len(SUFFIX):
        raise InvalidName(f"images/ holds only <disk>.img files, not {name!r}")
    try:
        return name[: -len(SUFFIX)].decode("utf-8")
    except UnicodeDecodeError:
        raise NotFound(f"no image {name!r}") from None
