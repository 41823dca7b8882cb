"""Dead properties (PROPPATCH) kept as extended attributes of the node.

`{ns}name` is stored as the xattr `user.dav:{ns}name` with the property's
XML as its value. So properties are in the catalog with the rest of the
working tree, survive restarts, move with MOVE, are copied by COPY, and are
frozen into snapshots (where they stay readable).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from wsgidav import xml_tools
from wsgidav.dav_error import HTTP_FORBIDDEN, HTTP_INSUFFICIENT_STORAGE, DAVError
from wsgidav.xml_tools import etree

from engine.errors import NotFound
from engine.mount import MountView

PREFIX = b"user.dav:"
MAX_NAME = 255  # an xattr name's limit, prefix included
MAX_VALUE = 64 << 10  # an xattr value's limit


def is_dead(name: str) -> bool:
    return not name.startswith("{DAV:}")


def key(name: str) -> bytes:
    k = PREFIX + name.encode("utf-8")
    if len(k) > MAX_NAME:
        raise DAVError(HTTP_FORBIDDEN, context_info=f"property names are at most {MAX_NAME - len(PREFIX)} bytes")
    return k


def dead(xattrs: Mapping[bytes, bytes]) -> dict[bytes, bytes]:
    return {k: v for k, v in xattrs.items() if k.startswith(PREFIX)}


def names(xattrs: Mapping[bytes, bytes]) -> list[str]:
    return sorted(k[len(PREFIX) :].decode("utf-8") for k in dead(xattrs))


def value(xattrs: Mapping[bytes, bytes], name: str) -> Any:
    stored = xattrs.get(key(name))
    if stored is None:
        raise DAVError(404)
    return xml_tools.string_to_xml(stored)


def store(view: MountView, number: int, name: str, element: Any, dry_run: bool) -> None:
    """Set a property (`element`) or remove it (None); removing a missing one is no error."""
    k = key(name)
    if element is None:
        if not dry_run:
            with contextlib.suppress(NotFound):
                view.removexattr(number, k)
        return
    data = etree.tostring(element)
    if len(data) > MAX_VALUE:
        raise DAVError(HTTP_INSUFFICIENT_STORAGE, context_info=f"property values are at most {MAX_VALUE} bytes")
    if not dry_run:
        view.setxattr(number, k, data)
