"""The OpenAPI 3.1 document of /api/v1, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any


def _obj(required: list[str], **props: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props, "additionalProperties": False}


STR = {"type": "string"}
NAME = {"type": "string", "minLength": 1, "maxLength": 255}
ERROR = {"description": "error", "content": {"application/json": {"schema": _obj(["error"], error=STR)}}}


def _op(summary: str, *, body: dict[str, Any] | None = None, ok: str = "200", params: list[str] = (),  # type: ignore[assignment]
        query: list[str] = ()) -> dict[str, Any]:  # type: ignore[assignment]  # fmt: skip
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            ok: {"description": "done", "content": {"application/json": {"schema": {}}}},
            "400": ERROR,
            "401": ERROR,
            "403": ERROR,
            "404": ERROR,
            "409": ERROR,
            "423": ERROR,
            "503": ERROR,
        },
    }
    parameters = [{"name": p, "in": "path", "required": True, "schema": NAME} for p in params]
    parameters += [{"name": q, "in": "query", "required": False, "schema": STR} for q in query]
    if parameters:
        op["parameters"] = parameters
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Cairn",
        "version": "1",
        "description": "Sources, snapshots, the pool, jobs, users and groups of a Cairn appliance. "
        "Authenticate with `Authorization: Bearer <token>` or a session cookie from "
        "/login (then send its `csrf` value as `X-CSRF-Token` with changes).",
    },
    "components": {
        "securitySchemes": {
            "token": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "cairn_session"},
        }
    },
    "security": [{"token": []}, {"session": []}],
    "paths": {
        "/api/v1/openapi.json": {"get": {**_op("This document"), "security": []}},
        "/api/v1/login": {
            "post": {
                **_op("Sign in: sets the session cookie", body=_obj(["name", "password"], name=NAME, password=STR)),
                "security": [],
            }
        },
        "/api/v1/logout": {"post": _op("Sign out")},
        "/api/v1/me": {"get": _op("The signed-in user and the session's CSRF token")},
        "/api/v1/me/password": {
            "post": _op(
                "Change your password (ends your other web sessions)",
                body=_obj(["password", "new_password"], password=STR, new_password=STR),
            ),
        },
        "/api/v1/tokens": {
            "get": _op("Your API tokens"),
            "post": _op("Make an API token (shown once)", body=_obj(["name"], name=NAME), ok="201"),
        },
        "/api/v1/tokens/{token_id}": {
            "delete": {
                **_op("Revoke an API token"),
                "parameters": [{"name": "token_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            }
        },
        "/api/v1/sources": {
            "get": _op("The sources you may see"),
            "post": _op(
                "Add a source (administrators of its group)",
                body=_obj(["name"], name=NAME, group=NAME, owner=NAME),
                ok="201",
            ),
        },
        "/api/v1/sources/{name}/access": {
            "put": _op(
                "Which group holds a source and who owns it, null for none (administrators)",
                params=["name"],
                body=_obj(["group", "owner"], group={"type": ["string", "null"]}, owner={"type": ["string", "null"]}),
            )
        },
        "/api/v1/sources/{name}": {
            "get": _op("A source", params=["name"]),
            "delete": _op(
                "Remove a source without snapshots (administrators of the group holding it)", params=["name"]
            ),
        },
        "/api/v1/sources/{name}/snapshots": {
            "get": _op("A source's snapshots", params=["name"]),
            "post": _op("Take a snapshot (a job)", params=["name"], body=_obj([], name=NAME), ok="202"),
        },
        "/api/v1/sources/{name}/diff": {
            "get": _op("What changed between two snapshots", params=["name"], query=["old", "new", "limit"])
        },
        "/api/v1/sources/{name}/search": {
            "get": _op(
                "Paths in any snapshot whose name holds `q` (with * or ?: matches it)",
                params=["name"],
                query=["q", "limit"],
            )
        },
        "/api/v1/sources/{name}/snapshots/{snap}": {"delete": _op("Delete a snapshot", params=["name", "snap"])},
        "/api/v1/sources/{name}/snapshots/{snap}/restore": {
            "post": _op(
                "Restore a path into current/, at its own path, at `to`, or in source `into` (a job)",
                params=["name", "snap"],
                ok="202",
                body=_obj(["path"], path=STR, to=STR, into=STR, overwrite={"type": "boolean"}),
            )
        },
        "/api/v1/sources/{name}/snapshots/{snap}/entries": {
            "get": _op("List a directory of a snapshot", params=["name", "snap"], query=["path"])
        },
        "/api/v1/sources/{name}/snapshots/{snap}/archive": {
            "get": _op(
                "Download a directory of a snapshot as zip or tar.zst (`damaged=list`: list unreadable files "
                "at the end of a tar.zst instead of ending it there)",
                params=["name", "snap"],
                query=["path", "format", "damaged"],
            )
        },
        "/api/v1/sources/{name}/snapshots/{snap}/file": {
            "get": _op("Download a file of a snapshot", params=["name", "snap"], query=["path"])
        },
        "/api/v1/pool": {"get": _op("Pool usage and state")},
        "/api/v1/usage": {
            "get": _op("Pool bytes, dedup ratio and the size of each source one may see, over time", query=["days"])
        },
        "/api/v1/pool/gc": {
            "post": {
                **_op("Collect garbage (a job; administrators)", ok="202"),
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {
                                    "dry_run": {"type": "boolean"},
                                    "repack_below": {"type": "number", "minimum": 0, "maximum": 1},
                                },
                            }
                        }
                    },
                },
            }
        },
        "/api/v1/pool/scrub": {"post": _op("Scrub the pool (a job; administrators)", ok="202")},
        "/api/v1/jobs": {"get": _op("Recent jobs (yours; all for administrators)", query=["limit"])},
        "/api/v1/jobs/{job_id}": {
            "get": {
                **_op("A job and its progress"),
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            },
            "delete": {
                **_op("Cancel a queued job"),
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            },
        },
        "/api/v1/jobs/{job_id}/events": {
            "get": {
                **_op("A job's progress as server-sent events"),
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
            }
        },
        "/api/v1/maintenance": {
            "get": _op("Whether the deployment is in maintenance mode"),
            "put": _op(
                "Enter or leave maintenance mode (administrators)",
                body=_obj(["on"], on={"type": "boolean"}, reason=STR),
            ),
        },
        "/api/v1/sources/{name}/config": {
            "get": _op("A source's effective settings and where each comes from", params=["name"])
        },
        "/api/v1/sources/{name}/keys": {
            "get": _op("The SSH keys a source's clients log in with (public halves)", params=["name"]),
            "post": _op(
                "Register a public key for the source",
                params=["name"],
                ok="201",
                body=_obj(["key"], key=STR, name=NAME),
            ),
        },
        "/api/v1/sources/{name}/keys/generate": {
            "post": _op(
                "Make a key pair: the public half registered, the private half in this answer only",
                params=["name"],
                ok="201",
                body=_obj([], name=NAME),
            ),
        },
        "/api/v1/sources/{name}/keys/{key_id}": {
            "delete": _op("Remove a key: its client cannot log in from now on", params=["name", "key_id"])
        },
        "/api/v1/sources/{name}/rsync-secret": {
            "get": _op("Whether the rsync daemon serves the source (never the password)", params=["name"]),
            "put": _op(
                "Set the source's rsync password, or make one (shown in this answer only)",
                params=["name"],
                body=_obj([], secret=STR),
            ),
            "delete": _op("Remove the password: the rsync daemon stops serving the source", params=["name"]),
        },
        "/api/v1/sources/{name}/smb": {
            "get": _op(
                "The source's SMB share as you reach it from Windows, whether you may write into it, and the "
                "commands to map it, back up with robocopy and restore (port null: the SMB door is shut)",
                params=["name"],
            )
        },
        "/api/v1/sessions": {
            "get": _op("Recent backup sessions of the sources you may see", query=["source", "limit"])
        },
        "/api/v1/status": {"get": _op("Each source's last successful backup and its colour against stale_after")},
        "/api/v1/doors": {"get": _op("Where the front doors (SSH, rsync daemon, SMB) listen, and the SSH host keys")},
        "/api/v1/schedule": {
            "get": _op(
                "When a cron expression (`cron`) next comes round, in local time (anyone signed in)", query=["cron"]
            )
        },
        "/api/v1/config": {
            "get": _op(
                "Effective settings: global, a group's or a source's (secrets show as {\"set\": true})",
                query=["group", "source"],
            ),
            "put": _op(
                "Set a setting globally, for a group or for a source",
                body=_obj(["key", "value"], key=STR, value={}, group=NAME, source=NAME),
            ),
        },
        "/api/v1/users": {
            "get": _op("Users (administrators)"),
            "post": _op(
                "Add a user (administrators); `one_time`: the password must be changed at the first sign-in",
                ok="201",
                body=_obj(
                    ["name", "password"],
                    name=NAME,
                    password=STR,
                    admin={"type": "boolean"},
                    one_time={"type": "boolean"},
                ),
            ),
        },
        "/api/v1/users/{name}": {
            "delete": _op("Remove a user (administrators; never the last administrator)", params=["name"]),
            "put": _op(
                "Make a user an administrator or no longer one (administrators; never the last one)",
                params=["name"],
                body=_obj(["admin"], admin={"type": "boolean"}),
            ),
        },
        "/api/v1/users/{name}/password": {
            "post": _op(
                "Reset a user's password: a one-time password, in this answer only (administrators)", params=["name"]
            )
        },
        "/api/v1/groups": {
            "get": _op("Groups and their members"),
            "post": _op("Add a group (administrators)", body=_obj(["name"], name=NAME), ok="201"),
        },
        "/api/v1/groups/{group}": {
            "delete": _op("Remove a group; its sources are then held by no group (administrators)", params=["group"])
        },
        "/api/v1/groups/{group}/members/{member}": {
            "put": _op(
                "Give a member a role in a group, or none (null)",
                params=["group", "member"],
                body=_obj(["role"], role={"enum": ["admin", "operator", "member", None]}),
            )
        },
    },
}
