"""The Flask application: the REST API and the web UI over one set of services (an application factory)."""

from __future__ import annotations

import logging
import secrets

from flask import Flask, Response, jsonify, redirect, request, url_for
from werkzeug.exceptions import HTTPException

from engine.errors import CairnError

from . import auth
from .api import api
from .services import Services
from .web import web
from .web.base import error_page

log = logging.getLogger(__name__)
MAX_BODY = 1 << 20  # API and form bodies; uploads go through WebDAV


def create_app(services: Services) -> Flask:
    app = Flask(__name__, static_folder=None)  # static files are the web blueprint's, at /static
    app.config.update(
        # Sign-in never reads Flask's signed session (auth.py keeps web sessions in the catalog); its key
        # is random per process and kept nowhere, so nothing stored anywhere can forge a session.
        SECRET_KEY=secrets.token_bytes(32), MAX_CONTENT_LENGTH=MAX_BODY,
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
    )  # fmt: skip
    app.extensions["cairn"] = services
    app.register_blueprint(api)
    app.register_blueprint(web)
    app.after_request(_security_headers)

    @app.errorhandler(Exception)
    def failed(e: Exception) -> Response | tuple[Response, int] | tuple[str, int]:
        status, message = _status(e)
        if request.path.startswith("/api/"):
            answer = jsonify({"error": message})
        elif isinstance(e, auth.PasswordChange):
            return redirect(url_for("web.password"))  # type: ignore[return-value]
        elif status == 401:  # back to this page after signing in; a form's POST-only path, to the dashboard
            target = request.full_path.rstrip("?") if request.method == "GET" else "/"
            return redirect(url_for("web.login", next=target))  # type: ignore[return-value]
        else:
            answer = Response(error_page(status, message), mimetype="text/html")
        retry = getattr(e, "retry_after", None)
        if retry is not None:
            answer.headers["Retry-After"] = str(max(1, round(retry)))
        return answer, status

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


def _status(e: Exception) -> tuple[int, str]:
    """The status and words for a failed request: each error class carries its own status (engine/errors.py)."""
    if isinstance(e, HTTPException):
        return e.code or 500, e.description or e.name
    if isinstance(e, CairnError):
        if e.status >= 500:  # raised on purpose, and said in words: logged without a traceback
            log.warning("%s %s: %s: %s", request.method, request.path, type(e).__name__, e)
        return e.status, str(e) or type(e).__name__
    log.error("unexpected error in a request", exc_info=e)
    return 500, "internal error (logged)"
