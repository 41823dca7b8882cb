"""What a CLI command acts on: this machine's data directory or an appliance's REST API, one interface.

A command written over a Target has one body: `target(ctx)` gives the local one, or the remote one
with `--remote NAME`. Both answer in the API's JSON shapes (shapes.py), so `--json` prints the same
either way, and the local one does what the appliance's job does (a snapshot waits for the backup
sessions writing into its source). Commands that only make sense on the appliance's own machine
(backup from a local folder, mount, pool create) say so with --remote.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from engine.deployment import Deployment

from ..accounts import Accounts
from ..shapes import found_doc, snapshot_doc, source_doc, user_doc
from . import output
from .base import Context
from .client import Client
from .remote import run_job


class Target(Protocol):
    def sources(self) -> list[dict[str, Any]]: ...

    def add_source(self, name: str) -> dict[str, Any]: ...

    def snapshots(self, source: str | None) -> list[dict[str, Any]]: ...

    def take_snapshot(self, source: str, name: str | None, show: bool) -> dict[str, Any]: ...

    def delete_snapshot(self, source: str, name: str) -> dict[str, Any]: ...

    def search(self, source: str, query: str, limit: int) -> dict[str, Any]: ...

    def restore(self, source: str, snap: str, path: str, dest: str, overwrite: bool, show: bool) -> dict[str, Any]: ...

    def restore_in_place(self, source: str, snap: str, path: str, to: str | None, into: str | None,
                         overwrite: bool, show: bool) -> dict[str, Any]: ...  # fmt: skip

    def pool_usage(self) -> dict[str, Any]: ...

    def gc(self, repack_below: float, dry_run: bool, show: bool) -> dict[str, Any]: ...

    def scrub(self, show: bool) -> dict[str, Any]: ...

    def maintenance(self, on: bool | None, reason: str | None) -> dict[str, Any]: ...

    def users(self) -> list[dict[str, Any]]: ...

    def add_user(self, name: str, password: str, admin: bool, one_time: bool = False) -> dict[str, Any]: ...

    def remove_user(self, name: str) -> dict[str, Any]: ...

    def assign(self, source: str, group: str | None, owner: str | None) -> dict[str, Any]: ...

    def groups(self) -> dict[str, dict[str, str]]: ...

    def add_group(self, name: str) -> dict[str, Any]: ...

    def set_member(self, group: str, user: str, role: str | None) -> dict[str, Any]: ...

    def config(self, group: str | None, source: str | None) -> dict[str, dict[str, Any]]: ...

    def set_config(self, key: str, value: Any, group: str | None, source: str | None) -> dict[str, Any]: ...


class Local:
    def __init__(self, dep: Deployment):
        self.dep = dep
        self.accounts = Accounts.of(dep)

    def sources(self) -> list[dict[str, Any]]:
        access = self.accounts.source_access()
        return [source_doc(s, *access.get(s.name, (None, None))) for s in self.dep.list_sources()]

    def add_source(self, name: str) -> dict[str, Any]:
        return source_doc(self.dep.add_source(name), None, None)

    def snapshots(self, source: str | None) -> list[dict[str, Any]]:
        return [snapshot_doc(s) for s in self.dep.list_snapshots(source)]

    def take_snapshot(self, source: str, name: str | None, show: bool) -> dict[str, Any]:
        from engine.sessions import Sessions

        from ..config import Config
        from ..services import take_snapshot, wait_for_sessions  # the jobs' wiring: only when a snapshot is taken

        self.dep.source(source)  # a clear "no source" before any waiting
        wait_for_sessions(Sessions(self.dep.catalog, self.dep.owner), source, lambda p: None)
        return take_snapshot(self.dep, self.accounts, Config(self.dep.catalog), source, name, lambda p: None)

    def delete_snapshot(self, source: str, name: str) -> dict[str, Any]:
        self.dep.delete_snapshot(source, name)
        return {"deleted": name}

    def search(self, source: str, query: str, limit: int) -> dict[str, Any]:
        return found_doc(*self.dep.search(source, query, limit))

    def restore(self, source: str, snap: str, path: str, dest: str, overwrite: bool, show: bool) -> dict[str, Any]:
        import os

        from engine.restore import restore

        view = self.dep.snapshot(source, snap)
        with output.progress_bar(show, "restore") as bar:
            stats = restore(
                view,
                os.fsencode(path),
                dest,
                overwrite=overwrite,
                progress=lambda s: bar(
                    f"{s.files} of {s.total_files} files, {output.human_bytes(s.bytes)}", s.bytes, s.total_bytes or None
                ),
            )
        return {"files": stats.files, "dirs": stats.dirs, "bytes": stats.bytes, "errors": stats.errors,
                "damaged": stats.damaged}  # fmt: skip

    def restore_in_place(self, source: str, snap: str, path: str, to: str | None, into: str | None,
                         overwrite: bool, show: bool) -> dict[str, Any]:  # fmt: skip
        from engine.recover import restore_in_place

        return restore_in_place(self.dep, source, snap, path, to, into, overwrite)

    def pool_usage(self) -> dict[str, Any]:
        return self.dep.pool_usage()

    def gc(self, repack_below: float, dry_run: bool, show: bool) -> dict[str, Any]:
        import dataclasses

        from engine.gc import collect

        with output.progress_bar(show, "gc") as bar:
            report = collect(
                self.dep, repack_below=repack_below, dry_run=dry_run,
                progress=lambda r: bar(f"{r.packs} packs, {output.human_bytes(r.bytes_freed)} freed"),
            )  # fmt: skip
        return dataclasses.asdict(report)

    def scrub(self, show: bool) -> dict[str, Any]:
        from engine.check import damage_doc, scrub

        with output.progress_bar(show, "scrub") as bar:
            report, summary = scrub(
                self.dep, lambda r: bar(f"{r.packs} packs, {r.blobs} blobs, {output.human_bytes(r.bytes)}")
            )
        return {**summary, "damage": damage_doc(report.damage)}

    def maintenance(self, on: bool | None, reason: str | None) -> dict[str, Any]:
        """Turn maintenance mode on or off (None: only ask); the flag as it then is."""
        if on is not None:
            self.dep.set_maintenance((reason or "maintenance") if on else None)
        return {"maintenance": self.dep.maintenance}

    def users(self) -> list[dict[str, Any]]:
        return [user_doc(u) for u in self.accounts.list_users()]

    def add_user(self, name: str, password: str, admin: bool, one_time: bool = False) -> dict[str, Any]:
        return user_doc(self.accounts.add_user(name, password, admin=admin, one_time=one_time))

    def remove_user(self, name: str) -> dict[str, Any]:
        self.accounts.remove_user(name)
        return {}

    def assign(self, source: str, group: str | None, owner: str | None) -> dict[str, Any]:
        self.accounts.assign_source(source, group, owner)
        return {"name": source, "group": group, "owner": owner}

    def groups(self) -> dict[str, dict[str, str]]:
        return self.accounts.list_groups()

    def add_group(self, name: str) -> dict[str, Any]:
        self.accounts.add_group(name)
        return {"name": name}

    def set_member(self, group: str, user: str, role: str | None) -> dict[str, Any]:
        self.accounts.set_role(group, user, role)
        return {"group": group, "user": user, "role": role}

    def config(self, group: str | None, source: str | None) -> dict[str, dict[str, Any]]:
        from ..config import Config

        if source and not group:
            group = self.accounts.source_access().get(source, (None, None))[0]
        return Config(self.dep.catalog).effective(source, group)

    def set_config(self, key: str, value: Any, group: str | None, source: str | None) -> dict[str, Any]:
        from ..config import Config, hide_secrets

        Config(self.dep.catalog).set(key, value, group=group, source=source)
        return {"key": key, "value": hide_secrets(key, value), "group": group, "source": source}


class Remote:
    def __init__(self, client: Client):
        self.client = client

    def sources(self) -> list[dict[str, Any]]:
        return [{k: v for k, v in s.items() if k != "run"} for s in self.client.call("GET", "/sources")]

    def add_source(self, name: str) -> dict[str, Any]:
        return self.client.call("POST", "/sources", {"name": name})  # type: ignore[no-any-return]

    def snapshots(self, source: str | None) -> list[dict[str, Any]]:
        names = [source] if source else [s["name"] for s in self.sources()]
        return [snap for name in names for snap in self.client.call("GET", f"/sources/{name}/snapshots")]

    def take_snapshot(self, source: str, name: str | None, show: bool) -> dict[str, Any]:
        return run_job(self.client, f"/sources/{source}/snapshots", {"name": name} if name else {}, show)  # type: ignore[no-any-return]

    def delete_snapshot(self, source: str, name: str) -> dict[str, Any]:
        self.client.call("DELETE", f"/sources/{source}/snapshots/{name}")
        return {"deleted": name}

    def search(self, source: str, query: str, limit: int) -> dict[str, Any]:
        return self.client.call("GET", f"/sources/{source}/search", q=query, limit=limit)  # type: ignore[no-any-return]

    def restore(self, source: str, snap: str, path: str, dest: str, overwrite: bool, show: bool) -> dict[str, Any]:
        from . import unpack

        return unpack.restore(self.client, source, snap, path, dest, overwrite)

    def restore_in_place(self, source: str, snap: str, path: str, to: str | None, into: str | None,
                         overwrite: bool, show: bool) -> dict[str, Any]:  # fmt: skip
        body = {"path": path, "to": to, "into": into, "overwrite": overwrite}
        return run_job(self.client, f"/sources/{source}/snapshots/{snap}/restore", body, show)  # type: ignore[no-any-return]

    def pool_usage(self) -> dict[str, Any]:
        return self.client.call("GET", "/pool")  # type: ignore[no-any-return]

    def gc(self, repack_below: float, dry_run: bool, show: bool) -> dict[str, Any]:
        return run_job(self.client, "/pool/gc", {"repack_below": repack_below, "dry_run": dry_run}, show)  # type: ignore[no-any-return]

    def scrub(self, show: bool) -> dict[str, Any]:
        return run_job(self.client, "/pool/scrub", {}, show)  # type: ignore[no-any-return]

    def maintenance(self, on: bool | None, reason: str | None) -> dict[str, Any]:
        if on is None:
            return self.client.call("GET", "/maintenance")  # type: ignore[no-any-return]
        return self.client.call("PUT", "/maintenance", {"on": on, "reason": reason})  # type: ignore[no-any-return]

    def users(self) -> list[dict[str, Any]]:
        return self.client.call("GET", "/users")  # type: ignore[no-any-return]

    def add_user(self, name: str, password: str, admin: bool, one_time: bool = False) -> dict[str, Any]:
        body = {"name": name, "password": password, "admin": admin, "one_time": one_time}
        return self.client.call("POST", "/users", body)  # type: ignore[no-any-return]

    def remove_user(self, name: str) -> dict[str, Any]:
        return self.client.call("DELETE", f"/users/{name}")  # type: ignore[no-any-return]

    def assign(self, source: str, group: str | None, owner: str | None) -> dict[str, Any]:
        return self.client.call("PUT", f"/sources/{source}/access", {"group": group, "owner": owner})  # type: ignore[no-any-return]

    def groups(self) -> dict[str, dict[str, str]]:
        return self.client.call("GET", "/groups")  # type: ignore[no-any-return]

    def add_group(self, name: str) -> dict[str, Any]:
        return self.client.call("POST", "/groups", {"name": name})  # type: ignore[no-any-return]

    def set_member(self, group: str, user: str, role: str | None) -> dict[str, Any]:
        return self.client.call("PUT", f"/groups/{group}/members/{user}", {"role": role})  # type: ignore[no-any-return]

    def config(self, group: str | None, source: str | None) -> dict[str, dict[str, Any]]:
        return self.client.call("GET", "/config", group=group, source=source)  # type: ignore[no-any-return]

    def set_config(self, key: str, value: Any, group: str | None, source: str | None) -> dict[str, Any]:
        return self.client.call("PUT", "/config", {"key": key, "value": value, "group": group, "source": source})  # type: ignore[no-any-return]


@contextmanager
def target(ctx: Context) -> Iterator[Target]:
    if ctx.remote:
        yield Remote(ctx.client())
        return
    with ctx.open() as dep:
        yield Local(dep)
