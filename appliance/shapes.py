"""The JSON shapes of sources and snapshots, one for the REST API and the CLI (local or remote) alike."""

from __future__ import annotations

import os
from typing import Any

from engine.deployment import SourceInfo
from engine.meta import Kind
from engine.nameindex import Found
from engine.snapshots import SnapshotInfo

from .accounts import User


def source_doc(s: SourceInfo, group: str | None, owner: str | None) -> dict[str, Any]:
    return {"name": s.name, "uuid": s.uuid, "group": group, "owner": owner, "created": s.created,
            "snapshots": s.snapshots, "last_snapshot": s.last_snapshot}  # fmt: skip


def snapshot_doc(s: SnapshotInfo) -> dict[str, Any]:
    return {"name": s.name, "source": s.source, "created": s.created, "files": s.files, "bytes": s.bytes,
            "state": s.state, "uuid": s.uuid}  # fmt: skip


def found_doc(found: list[Found], more: bool) -> dict[str, Any]:
    """A search's answer: each path with its newest version and the snapshots that hold it."""
    return {"results": [{"path": os.fsdecode(f.path), "kind": Kind(f.kind).name.lower(), "size": f.size,
                         "mtime": f.mtime_ns / 1e9, "versions": f.versions, "first": f.first, "last": f.last}
                        for f in found], "more": more}  # fmt: skip


def user_doc(u: User) -> dict[str, Any]:
    return {"name": u.name, "admin": u.admin, "roles": u.roles, "must_change": u.must_change}
