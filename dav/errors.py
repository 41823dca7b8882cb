"""Engine errors as the DAVError a WebDAV client understands: the status each error class carries."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from wsgidav.dav_error import DAVError

from engine import errors

log = logging.getLogger(__name__)


def dav_error(e: errors.CairnError) -> DAVError:
    # The server's own faults (a full disk or a busy backend is not one); LostWrites was logged when it happened.
    if e.status in (500, 502) and not e.temporary and not isinstance(e, errors.LostWrites):
        log.error("engine error in a WebDAV request: %s: %s", type(e).__name__, e)
    retry = [("Retry-After", str(round(e.retry_after)))] if e.retry_after else None  # maintenance, a busy backend
    return DAVError(e.status, context_info=str(e), add_headers=retry)


@contextmanager
def translated() -> Iterator[None]:
    """Raise engine errors as the DAVError a client understands."""
    try:
        yield
    except errors.CairnError as e:
        raise dav_error(e) from e
