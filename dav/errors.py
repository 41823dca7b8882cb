"""Engine errors as HTTP statuses: what a WebDAV client should see for each."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from wsgidav.dav_error import (
    HTTP_BAD_REQUEST,
    HTTP_CONFLICT,
    HTTP_FORBIDDEN,
    HTTP_INSUFFICIENT_STORAGE,
    HTTP_INTERNAL_ERROR,
    HTTP_LOCKED,
    HTTP_NOT_FOUND,
    HTTP_SERVICE_UNAVAILABLE,
    DAVError,
)

from engine import errors

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[errors.CairnError], int]] = [
    (errors.NotFound, HTTP_NOT_FOUND),
    (errors.Exists, HTTP_CONFLICT),
    (errors.NotEmpty, HTTP_CONFLICT),
    (errors.NotADirectory, HTTP_CONFLICT),
    (errors.IsADirectory, HTTP_CONFLICT),
    (errors.NameTooLong, HTTP_BAD_REQUEST),
    (errors.InvalidName, HTTP_BAD_REQUEST),
    (errors.InvalidArgument, HTTP_BAD_REQUEST),
    (errors.ReadOnly, HTTP_FORBIDDEN),
    (errors.NotPermitted, HTTP_FORBIDDEN),
    (errors.CrossDevice, HTTP_FORBIDDEN),
    (errors.NoSpace, HTTP_INSUFFICIENT_STORAGE),
    (errors.InUse, HTTP_LOCKED),
    (errors.PoolMissing, HTTP_SERVICE_UNAVAILABLE),
    (errors.CorruptBlob, HTTP_INTERNAL_ERROR),
    (errors.LostWrites, HTTP_INTERNAL_ERROR),  # already logged when the writes failed
]


def dav_error(e: errors.CairnError) -> DAVError:
    for cls, status in STATUS:
        if isinstance(e, cls):
            return DAVError(status, context_info=str(e))
    if e.temporary:
        return DAVError(HTTP_SERVICE_UNAVAILABLE, context_info=str(e))
    log.error("engine error in a WebDAV request: %s", e)
    return DAVError(HTTP_INTERNAL_ERROR, context_info=str(e))


@contextmanager
def translated() -> Iterator[None]:
    """Raise engine errors as the DAVError a client understands."""
    try:
        yield
    except errors.CairnError as e:
        raise dav_error(e) from e
