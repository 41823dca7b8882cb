"""The Flask application: the REST API and the web UI over one set of services (an application factory)."""

from __future__ import annotations

import logging
import secrets
import time

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from engine.errors import (
    CairnError,
    CorruptBlob,
    Exists,
    InUse,
    InvalidArgument,
    NotEmpty,
    NotFound,
    NotPermitted,
    ReadOnly,
)

from . import api as _account_routes  # noqa: F401  (importing a route module registers its routes)
from . import api_doors as _door_routes  # noqa: F401
from . import api_sources as _source_routes  # noqa: F401
from . import auth
from .accounts import BadLogin
from .api_base import api
from .output import human_bytes
from .services import Services
from .web import web
from .web_doors import source as _source_page  # noqa: F401  (registers the source page and its clients on `web`)

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # API and form bodies; uploads go through WebDAV
_STATUS: list[tuple[type[Exception], int]] = [
    (auth.Unauthorized, 401), (BadLogin, 401), (auth.Forbidden, 403), (NotPermitted, 403),
    (auth.TooManyAttempts, 429), (NotFound, 404), (Exists, 409), (NotEmpty, 409), (InUse, 409),
    (ReadOnly, 503), (InvalidArgument, 400), (CorruptBlob, 500), (CairnError, 400),
]  # fmt: skip


def create_app(services: Services) -> Flask:
    app = Flask(__name__)
    app.config.update(
        # Sign-in never reads Flask's signed session (auth.py keeps web sessions in the catalog); its key
        # is random per process and kept nowhere, so nothing stored anywhere can forge a session.
        SECRET_KEY=secrets.token_bytes(32), MAX_CONTENT_LENGTH=MAX_BODY,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
    )  # fmt: skip
    app.extensions["cairn"] = services
    app.jinja_env.filters["when"] = _when
    app.jinja_env.filters["size"] = human_bytes
    app.register_blueprint(api)
    app.register_blueprint(web)
    app.after_request(_security_headers)

    @app.errorhandler(Exception)
    def failed(e: Exception) -> Response | tuple[Response, int] | tuple[str, int]:
        status, message = _status(e)
        if request.path.startswith("/api/"):
            return jsonify({"error": message}), status
        if status == 401:
            from flask import redirect, url_for

            return redirect(url_for("web.login", next=request.path))  # type: ignore[return-value]
        return render_template("error.html", status=status, message=message), status

    return app


# Pages load scripts, styles and events only from this origin, with no inline script: an HTML file that
# reaches the origin (a share's upload) cannot run script in a signed-in browser, nor frame the UI.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")  # fmt: skip


def _security_headers(response: Response) -> Response:
    """Every page and API answer: the policy above, no MIME sniffing, no URLs leaked to other sites."""
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _when(value: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(value)) if value else "never"


def _status(e: Exception) -> tuple[int, str]:
    if isinstance(e, HTTPException):
        return e.code or 500, e.description or e.name
    for kind, status in _STATUS:
        if isinstance(e, kind):
            return status, str(e) or kind.__name__
    log.error("unexpected error in a request", exc_info=e)
    return 500, "internal error (logged)"
