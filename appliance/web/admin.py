"""The web UI's administration: users, groups and which group holds each source (administrators), and
choosing one's own password (everyone; first of all after signing in with a one-time password).

A reset password is shown once, on the page the reset answers with, and kept nowhere.
"""

from __future__ import annotations

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.errors import InvalidArgument

from .. import auth
from ..request import change_own_password, require_admin, services
from .base import page, web

ROLES = ("member", "operator", "admin")


@web.get("/password")
def password() -> str:
    user = auth.require_user()
    return page("password.html", forced=user.must_change, error=None)


@web.post("/password")
def password_post() -> str | BaseResponse:
    user = auth.require_user()
    form = request.form
    new = form.get("new_password", "")
    try:
        if new != form.get("repeat", ""):
            raise InvalidArgument("the two new passwords differ")
        change_own_password(user, form.get("password", ""), new)
    except Exception as e:  # said on the form
        return page("password.html", forced=user.must_change, error=str(e) or "wrong password")
    return redirect(url_for("web.dashboard"))


@web.get("/users")
def users() -> str:
    require_admin("only an administrator may see every user")
    return _users_page()


def _users_page(reset: tuple[str, str] | None = None) -> str:
    """The users page; `reset`: a user and the one-time password just made for them, shown this once."""
    accounts = services().accounts
    return page("users.html", people=accounts.list_users(), groups=accounts.list_groups(), roles=ROLES,
                sources=sorted(accounts.source_access().items()), reset=reset)  # fmt: skip


@web.post("/users")
def users_post() -> str | BaseResponse:
    """The users page's forms (administrators): users, roles, groups, and where sources belong."""
    me = require_admin("only an administrator may change users and groups")
    accounts, form = services().accounts, request.form
    action, name = form.get("action"), form.get("name", "")
    if action == "add-user":
        accounts.add_user(name, form.get("password", ""), admin=form.get("admin") == "on", one_time=True)
    elif action == "remove-user":
        if name == me.name:
            raise InvalidArgument("you cannot remove yourself")
        if form.get("confirm") != name:
            raise InvalidArgument(f"type the user's name, {name}, to remove them")
        accounts.remove_user(name)
    elif action == "reset-password":
        return _users_page(reset=(name, accounts.reset_password(name)))
    elif action == "set-admin":
        accounts.set_admin(name, form.get("admin") == "yes")
    elif action == "add-group":
        accounts.add_group(name)
    elif action == "remove-group":
        accounts.remove_group(name)
    elif action == "set-role":
        role = form.get("role", "none")
        accounts.set_role(form.get("group", ""), form.get("user", ""), None if role == "none" else role)
    elif action == "assign-source":
        accounts.assign_source(name, form.get("group") or None, form.get("owner") or None)
    else:
        raise InvalidArgument("unknown action")
    return redirect(url_for("web.users"))
