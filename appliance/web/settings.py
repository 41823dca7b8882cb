"""The web UI's settings: each setting its own typed form at a level (global, a group, a source).

A cron field shows when it next comes round; retention is six whole numbers; the
SMTP password is write-only (an empty field keeps the stored one, and it is never
sent to a browser); "send test mail" tries the stored SMTP setting (administrators).
Who may set what is check_may_configure's rule, as in the API.
"""

from __future__ import annotations

from typing import Any

from flask import redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.errors import InvalidArgument

from .. import auth
from ..config import GLOBAL, KEPT, Config, next_runs
from ..request import check_may_configure, readable_level, require_admin, services, visible_sources
from ..retention import RULES
from .base import page, web

# How each setting is typed in: the form's fields and their meaning.
KINDS = {
    "schedule": "cron", "digest_schedule": "cron", "retention": "retention", "notify_email": "email",
    "notify_success": "yes-no", "snapshot_after_session": "yes-no", "snapshot_unchanged": "yes-no",
    "stale_after": "hours", "smb_idle": "seconds", "tree_idle": "seconds", "tree_cache": "mib", "smtp": "smtp",
}  # fmt: skip
HELP = {
    "schedule": "When to take a snapshot of the source (cron, local time).",
    "digest_schedule": "When to mail the summary of the last day's jobs (cron, local time).",
    "retention": "How many snapshots to keep: the last ones, and the newest of each hour, day, week, month, year.",
    "notify_email": "Where failures and digests are mailed.",
    "notify_success": "Also mail when a job succeeds.",
    "snapshot_after_session": "A backup session that ends well takes a snapshot.",
    "snapshot_unchanged": "A scheduled snapshot is taken even when nothing changed.",
    "stale_after": "Hours without a successful backup before the source is stale (and mailed about).",
    "smb_idle": "Seconds after an SMB client that wrote leaves before its session ends.",
    "tree_idle": "Seconds without a change before a source's working tree is let go (read at start).",
    "tree_cache": "MiB of memory for the directories of working trees in use (read at start).",
    "smtp": "The mail server.",
}


def _level(at: str) -> tuple[str | None, str | None]:
    """(group, source) from a level's name: "", "group:NAME" or "source:NAME"."""
    kind, _, name = at.partition(":")
    if kind not in ("", "group", "source") or (kind and not name):
        raise InvalidArgument(f"unknown settings level {at!r}")
    return (name if kind == "group" else None), (name if kind == "source" else None)


@web.get("/settings")
def settings_page() -> str:
    """The effective settings at one level (`at`: global, group:G, source:S), and a form for who may set them."""
    user = auth.require_user()
    at = request.args.get("at", "")
    group, source_name = _level(at)
    group = readable_level(group, source_name)
    groups = sorted(services().accounts.list_groups() if user.admin else user.roles)
    try:
        check_may_configure(None if source_name else group, source_name)
        editable = True
    except auth.Forbidden:
        editable = False
    shown = Config(services().deployment.catalog).effective(source_name, group)
    here = "global" if not (group or source_name) else (f"source:{source_name}" if source_name else f"group:{group}")
    rows = [
        {"key": key, "kind": KINDS[key], "help": HELP[key], "value": s["value"], "from": s["from"],
         "here": s["from"] == here, "settable": editable and (here == "global" or key not in GLOBAL),
         "runs": next_runs(s["value"]) if KINDS[key] == "cron" else []}
        for key, s in shown.items()
    ]  # fmt: skip
    return page("settings.html", rows=rows, at=at, group=group, source=source_name, groups=groups, rules=RULES,
                sources=[s["name"] for s in visible_sources(user)], error=request.args.get("error"),
                said=request.args.get("said"), admin=user.admin, kept=KEPT)  # fmt: skip


@web.post("/settings")
def settings_post() -> BaseResponse:
    """Set one setting at the form's level from its typed fields, or remove it there (`clear`)."""
    at = request.form.get("at", "")
    group, source_name = _level(at)
    check_may_configure(group, source_name)
    key = request.form.get("key", "")
    try:
        value = None if request.form.get("clear") else typed(key, request.form)
        Config(services().deployment.catalog).set(key, value, group=group, source=source_name)
    except InvalidArgument as e:
        return redirect(url_for("web.settings_page", at=at, error=str(e)))
    return redirect(url_for("web.settings_page", at=at, said=f"{key} saved"))


@web.post("/settings/test-mail")
def test_mail() -> BaseResponse:
    require_admin("only an administrator may send a test mail")
    to = request.form.get("to", "").strip()
    if "@" not in to:
        return redirect(url_for("web.settings_page", error="give the address to send the test mail to"))
    try:
        services().notifier.test(to)
    except Exception as e:  # said on the page: the mail server's own words
        return redirect(url_for("web.settings_page", error=str(e)))
    return redirect(url_for("web.settings_page", said=f"a test mail went to {to}"))


def typed(key: str, form: Any) -> Any:
    """The setting's value from its form's fields (Config.set checks it further)."""
    kind = KINDS.get(key)
    if kind is None:
        raise InvalidArgument(f"unknown setting {key!r}")
    if kind in ("cron", "email"):
        return form.get("value", "").strip() or None
    if kind == "yes-no":
        return form.get("value") == "yes"
    if kind in ("hours", "seconds", "mib"):
        return _number(form.get("value", ""), key, whole=kind == "mib")
    if kind == "retention":
        return {r: _number(form.get(r) or "0", f"retention {r}", whole=True) for r in RULES}
    host = form.get("host", "").strip()
    if not host:
        return None
    smtp: dict[str, Any] = {"host": host, "port": _number(form.get("port") or "25", "smtp port", whole=True)}
    for field in ("from", "user"):
        if form.get(field, "").strip():
            smtp[field] = form.get(field).strip()
    if form.get("password"):
        smtp["password"] = form.get("password")
    elif form.get("keep_password"):
        smtp["password"] = KEPT  # the stored one stays: it is never in the page to send back
    if form.get("starttls"):
        smtp["starttls"] = True
    return smtp


def _number(raw: str, what: str, *, whole: bool) -> int | float:
    try:
        number = float(raw)
    except ValueError:
        raise InvalidArgument(f"{what} is a number, not {raw!r}") from None
    if whole or number.is_integer():
        if not number.is_integer():
            raise InvalidArgument(f"{what} is a whole number, not {raw!r}")
        return int(number)
    return number
