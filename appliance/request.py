"""What the REST API and the web pages share about a request: the services, JSON from a client, and
what the signed-in user may reach (sources, groups, jobs, setting levels).

Whatever is not theirs to see does not exist for them: a 404, never a 403 that confirms a name.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

from flask import current_app, request

from engine.errors import InvalidArgument, NotFound
from engine.nameindex import Found
from engine.recover import refuse_existing

from . import auth
from .access import can, manages
from .accounts import User
from .jobs import Job
from .services import Services
from .shapes import source_doc

MAX_DEPTH = 32  # levels of JSON nesting a client may send: no setting or body needs more than 4
# A name or address as DNS and URLs spell them: the Host header is the client's to set, the commands on a
# source's page are pasted into root shells, and a redirect must not lead elsewhere; nothing else is taken.
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\]")


def services() -> Services:
    return current_app.extensions["cairn"]  # type: ignore[no-any-return]


def parse_json(raw: str | bytes, must: str) -> Any:
    """JSON from a client (a request body, a form's value): any flaw is a 400 saying `must`, never a 500."""
    try:
        doc = json.loads(raw)
    except RecursionError:  # the parser recurses once a level: ~1,000 levels exhaust the stack
        raise InvalidArgument(f"{must}, nested at most {MAX_DEPTH} levels deep") from None
    except ValueError as e:
        raise InvalidArgument(f"{must}: {e}") from None
    level, todo = 0, [doc]
    while todo:  # breadth first, one level a round, without recursion
        level += 1
        if level > MAX_DEPTH:
            raise InvalidArgument(f"{must}, nested at most {MAX_DEPTH} levels deep")
        todo = [v for d in todo if isinstance(d, (dict, list)) for v in (d.values() if isinstance(d, dict) else d)]
    return doc


def allowed_source(name: str, action: str) -> tuple[User, str | None, str | None]:
    """The user, after checking they may `action` the source (404 if they may not even see it)."""
    user = auth.require_user()
    access = services().accounts.source_access()
    if name not in access:
        raise NotFound(f"no source {name!r}")
    group, owner = access[name]
    if not can(user, "see", group, owner):
        raise NotFound(f"no source {name!r}")  # what one may not see does not exist
    if not can(user, action, group, owner):
        raise auth.Forbidden(f"you may not {action} source {name!r}")
    return user, group, owner


def visible_group(user: User, group: str) -> None:
    """404 unless `user` is in `group` or an administrator (groups one is not in do not exist for one)."""
    if not user.admin and group not in user.roles:
        raise NotFound(f"no group {group!r}")
    if user.admin:
        services().accounts.group_id(group)


def require_admin(why: str = "only an administrator may do this") -> User:
    user = auth.require_user()
    if not user.admin:
        raise auth.Forbidden(why)
    return user


def visible_sources(user: User) -> list[dict[str, Any]]:
    """The sources a user may see, with their group, owner, and whether the user may run them."""
    access = services().accounts.source_access()
    out = []
    for s in services().deployment.list_sources():
        group, owner = access.get(s.name, (None, None))
        if can(user, "see", group, owner):
            out.append({**source_doc(s, group, owner), "run": can(user, "run", group, owner)})
    return out


def changes(name: str, old: str, new: str, limit: int) -> list[dict[str, Any]]:
    from engine.reader import diff

    dep = services().deployment
    out = []
    for c in diff(dep.snapshot(name, old), dep.snapshot(name, new)):
        entry = c.new or c.old
        out.append({"path": os.fsdecode(c.path), "change": c.change, "size": entry.size if entry else 0})
        if len(out) >= limit:
            break
    return out


def find_names(name: str, query: str, limit: int = 100) -> tuple[list[Found], bool]:
    """A search of a source's snapshots by name, once there is something to search for."""
    if not query.strip():
        raise InvalidArgument("type a name, or a part of one, to search for")
    if len(query) > 255:
        raise InvalidArgument("a name to search for has at most 255 characters")
    return services().deployment.search(name, query.strip(), limit)


def submit_restore(
    name: str, snap: str, path: str, to: str | None, into: str | None, overwrite: bool = False
) -> Job:  # fmt: skip
    """The restore job, once the user may restore from `name` (and into `into`) and the snapshot exists."""
    user, _, _ = allowed_source(name, "restore")
    if into is not None and into != name:
        allowed_source(into, "restore")
    dep = services().deployment
    dep.snapshot_info(name, snap)  # 404 now rather than a failed job later
    if not overwrite:  # 409 now; the job checks again
        refuse_existing(dep.working_tree(into or name), to or path, into or name)
    params = {"source": name, "snapshot": snap, "path": path, "to": to, "into": into, "overwrite": overwrite}
    return services().jobs.submit("restore", params, source_id=services().deployment.source(name).id, user_id=user.id)


def change_own_password(user: User, current: str, new: str) -> None:
    """The signed-in user's new password: the current one is asked for and counted as a sign-in, a one-time
    one cannot be kept, and every other web session of theirs ends (the one that made the change stays)."""
    limiter, key = services().logins, auth.limiter_key(user.name)
    limiter.check(key)
    try:
        services().accounts.login(user.name, current)
    except Exception:
        limiter.failed(key)
        raise
    if user.must_change and new == current:
        raise InvalidArgument("choose a password other than the one-time one")
    session = auth.web_session()
    services().accounts.set_password(user.name, new, keep_session=session.id if session is not None else None)


def _sees(user: User, job: Job) -> bool:
    return user.admin or job.requested_by == user.id


def visible_jobs(limit: int) -> list[Job]:
    """Of the last `limit` jobs, those the user may see: their own, or all for an administrator."""
    user = auth.require_user()
    return [j for j in services().jobs.list(limit=limit) if _sees(user, j)]


def visible_job(job_id: int) -> Job:
    """A job the user may see (others' do not exist for them)."""
    found = services().jobs.get(job_id)
    if not _sees(auth.require_user(), found):
        raise NotFound(f"no job {job_id}")
    return found


def readable_level(group: str | None, source_name: str | None) -> str | None:
    """The group whose settings the user may read at this level (a source's own group when a source is given).

    Global settings are every signed-in user's to read; a group's, its members' and the administrators'
    (other groups do not exist for them); a source's, of whoever may see the source.
    """
    user = auth.require_user()
    if source_name is not None:
        return allowed_source(source_name, "see")[1]
    if group is not None:
        visible_group(user, group)
    return group


def check_may_configure(group: str | None, source_name: str | None) -> User:
    """Settings of a source are its configurers'; a group's are its administrators'; global ones, admins'."""
    user = auth.require_user()
    if source_name is not None:
        allowed_source(source_name, "configure")
        return user
    if group is not None:
        visible_group(user, group)
    if not manages(user, group):
        raise auth.Forbidden("only an administrator may change global or group settings")
    return user


def client_host() -> str:
    """The appliance's name as the browser reached it, without the port (a placeholder if it looks odd)."""
    return host_name(request.host) or "APPLIANCE"


def host_name(host: str) -> str | None:
    """The name or address in a Host header, without the port; None if it is anything else."""
    name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]
    return name if _HOST.fullmatch(name) else None
