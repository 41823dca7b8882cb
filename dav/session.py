"""One request's view of the mount: paths resolved by lookups, snapshot entries released at the end.

The mount view remembers each snapshot entry it hands out until told to
forget it (FUSE does so with `forget`). A request remembers what it looked
up here and forgets all of it when its response is finished, so browsing a
snapshot of a million files keeps nothing after the request.
"""

from __future__ import annotations

from collections.abc import Iterator

from wsgidav.dav_error import HTTP_BAD_REQUEST, DAVError

from engine.errors import CairnError
from engine.meta import Stat
from engine.mount import MountView, paths
from engine.mount.nodes import SNAPSHOT

KEY = "cairn.session"


class Session:
    """Used by the one thread that serves its request."""

    def __init__(self, view: MountView):
        self.view = view
        self._held: list[int] = []

    def hold(self, stat: Stat) -> Stat:
        if stat.ino >> 62 == SNAPSHOT:
            self._held.append(stat.ino)
        return stat

    def resolve(self, path: str) -> list[Stat]:
        """The Stats along a URL path (already percent-decoded), root first."""
        stats = paths.resolve(self.view, names_of(path))
        for stat in stats:
            self.hold(stat)
        return stats

    def lookup(self, parent: int, name: bytes) -> Stat:
        stat = self.view.lookup(parent, name)
        if paths.is_latest(stat):
            stat = self.view.lookup(parent, self.view.readlink(stat.ino))
        return self.hold(stat)

    def pages(self, number: int) -> Iterator[list[tuple[bytes, Stat]]]:
        for page in paths.pages(self.view, number):
            out = []
            for name, stat in page:
                self.hold(stat)
                if paths.is_latest(stat):
                    stat = self.lookup(number, name)
                out.append((name, stat))
            yield out

    def release(self) -> None:
        """Forget the snapshot entries this request looked up."""
        held, self._held = self._held, []
        for number in held:
            self.view.forget(number, 1)


def names_of(path: str) -> list[bytes]:
    """A URL path's names as the engine spells them; `.`, `..`, NUL and overlong names are a 400."""
    try:
        return paths.split(path.encode("utf-8", "surrogateescape"))
    except CairnError as e:
        raise DAVError(HTTP_BAD_REQUEST, context_info=str(e)) from e


def session_of(environ: dict[str, object], view: MountView) -> Session:
    session = environ.get(KEY)
    if not isinstance(session, Session):
        session = environ[KEY] = Session(view)
    return session
