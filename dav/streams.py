"""Responses that are streamed instead of built whole: directory listings and archives.

wsgidav builds a PROPFIND answer as one XML tree; for a directory of
100,000 entries that is hundreds of MB. Depth-1 PROPFINDs on a directory
are answered here instead, a page of entries at a time, with wsgidav's own
property code for each entry. Archives (`GET dir?format=zip`) are streamed
too. Both have no Content-Length (cheroot sends them chunked); they are
started with the server's own start_response, as wsgidav's would log an
error for a response without a length.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from wsgidav import util
from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_FORBIDDEN,
    HTTP_NOT_FOUND,
    DAVError,
    PRECONDITION_CODE_PropfindFiniteDepth,
)
from wsgidav.mw.base_mw import BaseMiddleware
from wsgidav.xml_tools import etree, make_multistatus_el

from engine.mount import paths
from engine.mount.view import PREFETCH_BYTES

from . import archive
from .resources import Folder, Node

log = logging.getLogger(__name__)
START_RESPONSE = "cairn.start_response"
HEAD = b'<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">'
TAIL = b"</D:multistatus>\n"
PAGE = 500  # entries per piece of a streamed listing

StartResponse = Callable[..., Any]


class Streams(BaseMiddleware):  # type: ignore[misc]
    """Sits after authentication in wsgidav's middleware stack."""

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            return self._route(environ, start_response)
        except DAVError as e:
            return util.send_status_response(environ, start_response, e)  # type: ignore[no-any-return]

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "PROPFIND" and environ.get("HTTP_DEPTH", "infinity").lower() == "infinity":
            # No Depth means infinity (RFC 4918 9.1); a whole tree in one answer is refused.
            raise DAVError(HTTP_FORBIDDEN, err_condition=PRECONDITION_CODE_PropfindFiniteDepth)
        if method == "PROPFIND" and environ.get("HTTP_DEPTH") == "1":
            res = self._resource(environ)
            if isinstance(res, Folder):
                return self.propfind(environ, res)
        elif method == "GET" and "format" in parse_qs(environ.get("QUERY_STRING", "")):
            return self.archive(environ)
        return self.next_app(environ, start_response)  # type: ignore[no-any-return]

    def _resource(self, environ: dict[str, Any]) -> Node | None:
        provider = environ["wsgidav.provider"]
        return None if provider is None else provider.get_resource_inst(environ["PATH_INFO"], environ)

    def propfind(self, environ: dict[str, Any], folder: Folder) -> Iterable[bytes]:
        mode, names = _propfind_request(environ)
        environ[START_RESPONSE]("207 Multi-Status", [
            ("Content-Type", "application/xml; charset=utf-8"), ("Date", util.get_rfc1123_time()),
        ])  # fmt: skip
        return _multistatus(folder, mode, names)

    def archive(self, environ: dict[str, Any]) -> Iterable[bytes]:
        fmt = parse_qs(environ.get("QUERY_STRING", ""))["format"][-1]
        if fmt not in archive.FORMATS:
            raise DAVError(HTTP_BAD_REQUEST, context_info=f"format is one of {', '.join(archive.FORMATS)}")
        folder = self._resource(environ)
        if not isinstance(folder, Folder):
            raise DAVError(HTTP_NOT_FOUND, context_info="archives are made of directories")
        name = folder.name or "cairn"
        make = archive.zip_archive if fmt == "zip" else archive.tar_zst
        environ[START_RESPONSE]("200 OK", [
            ("Content-Type", archive.FORMATS[fmt]),
            ("Content-Disposition", archive.attachment(f"{name}.{fmt}")),
            ("Date", util.get_rfc1123_time()),
        ])  # fmt: skip
        return _logged(make(folder.session, folder.stat, name), environ)


def _propfind_request(environ: dict[str, Any]) -> tuple[str, list[str] | None]:
    """The PROPFIND body's mode (allprop, name, named) and property names, as wsgidav reads it."""
    body = util.parse_xml_body(environ, allow_empty=True)
    if body is None:
        return "allprop", None
    if body.tag != "{DAV:}propfind":
        raise DAVError(HTTP_BAD_REQUEST, context_info="expected a DAV:propfind body")
    mode, names = None, []
    for el in body:
        wanted = {"{DAV:}allprop": "allprop", "{DAV:}propname": "name", "{DAV:}prop": "named"}.get(el.tag)
        if wanted is None:
            continue
        if mode is not None and mode != wanted:
            raise DAVError(HTTP_BAD_REQUEST, context_info="allprop, propname and prop exclude each other")
        mode = wanted
        names += [p.tag for p in el]
    if mode is None:
        raise DAVError(HTTP_BAD_REQUEST, context_info="a propfind body names allprop, propname or prop")
    return mode, (names if mode == "named" else None)


def _multistatus(folder: Folder, mode: str, names: list[str] | None) -> Iterator[bytes]:
    yield HEAD
    yield _responses([folder], mode, names)
    page: list[Node] = []
    budget = PREFETCH_BYTES  # per listing, as the mount does for snapshots
    for member in folder.members():
        page.append(member)
        if len(page) == PAGE:
            budget -= paths.prefetch(folder.view, [m.stat for m in page], budget)
            yield _responses(page, mode, names)
            page = []
    paths.prefetch(folder.view, [m.stat for m in page], budget)
    yield _responses(page, mode, names) + TAIL


def _responses(resources: list[Node], mode: str, names: list[str] | None) -> bytes:
    multistatus = make_multistatus_el()
    for res in resources:
        props = res.get_properties(mode, name_list=names)  # type: ignore[attr-defined]
        util.add_property_response(multistatus, res.get_href(), props)  # type: ignore[attr-defined]
    return b"".join(etree.tostring(r, encoding="UTF-8", xml_declaration=False) for r in multistatus)


def _logged(body: Iterator[bytes], environ: dict[str, Any]) -> Iterator[bytes]:
    """Headers are sent: a failure can only cut the stream short, so it is logged."""
    try:
        yield from body
    except Exception:
        log.exception("archive of %s cut short", environ.get("PATH_INFO"))
        raise
