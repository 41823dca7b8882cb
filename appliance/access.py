"""Who may do what to which source: the roles of accounts.py, applied.

Actions on a source, from least to most: see (list, browse), restore
(download, restore), run (back up, take snapshots), configure (delete
snapshots, change settings). Adding and removing a source is managing its
group (`manages`): global administrators and the group's administrators, on
every way in (API, web UI, the share).
"""

from __future__ import annotations

from .accounts import User

ACTIONS = ("see", "restore", "run", "configure")
_BY_ROLE = {"admin": set(ACTIONS), "operator": set(ACTIONS), "member": set()}
_OWNER = {"see", "restore"}  # what owning a source gives, whatever the role


def can(user: User, action: str, group: str | None, owner: str | None) -> bool:
    """Whether `user` may do `action` to a source held by `group` and owned by `owner`."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")
    if user.admin:
        return True
    if owner is not None and owner == user.name and action in _OWNER:
        return True
    return group is not None and action in _BY_ROLE.get(user.roles.get(group, ""), set())


def manages(user: User, group: str | None) -> bool:
    """Whether `user` may add sources to `group`, remove its sources, change its members and settings.

    `group` None (a source no group holds) is the global administrators' alone.
    """
    return user.admin or (group is not None and user.roles.get(group) == "admin")
