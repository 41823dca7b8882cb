"""What every page of the web UI shares: the blueprint (with the templates and static files), a page in
the signed-in user's frame, and a failed request's page in words.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from .. import auth, words

web = Blueprint("web", __name__, template_folder="templates", static_folder="static")
for _name in ("when", "exact", "ago", "span"):  # the templates word times as the CLI does
    web.add_app_template_filter(getattr(words, _name), _name)
web.add_app_template_filter(words.human_bytes, "size")


def page(template: str, **context: Any) -> str:
    return render_template(template, user=auth.current_user(), csrf=auth.csrf_token(), **context)


REASONS = {400: "Bad request", 403: "Not allowed", 404: "Not found", 405: "Not allowed here", 409: "Conflict",
           413: "Too large", 423: "In use", 429: "Too many attempts", 500: "Something went wrong",
           502: "The storage failed", 503: "Not available now", 507: "Out of space"}  # fmt: skip


def error_page(status: int, message: str) -> str:
    """A failed page in words, with the navigation of whoever is signed in (none if that cannot be told)."""
    try:
        user, csrf = auth.current_user(), auth.csrf_token()
    except Exception:  # the failure may be the sign-in itself (a bad token, a forged form)
        user, csrf = None, ""
    reason = REASONS.get(status, "Error")
    return render_template("error.html", user=user, csrf=csrf, status=status, reason=reason, message=message)
