"""The engine's errors. Each says whether it is temporary, which errno fits, and which HTTP status: the
REST API, the web pages and the WebDAV share all answer with `status`, so they cannot disagree.
"""

from __future__ import annotations

import errno
import os


def quoted(name: bytes | str) -> str:
    """A name for an error message: quoted as text, never as Python's b'...' (odd bytes as escapes)."""
    return repr(os.fsdecode(name))


class CairnError(Exception):
    """Base of every error the engine raises on purpose."""

    errno: int = errno.EIO
    status: int = 500  # the server's fault unless a class says otherwise
    temporary: bool = False
    retry_after: float | None = None  # seconds a client should wait before asking again, where known


class NotFound(CairnError):
    errno = errno.ENOENT
    status = 404


class Exists(CairnError):
    errno = errno.EEXIST
    status = 409


class NotEmpty(CairnError):
    errno = errno.ENOTEMPTY
    status = 409


class NotADirectory(CairnError):
    errno = errno.ENOTDIR
    status = 409


class IsADirectory(CairnError):
    errno = errno.EISDIR
    status = 409


class InvalidName(CairnError):
    errno = errno.EINVAL
    status = 400


class NameTooLong(CairnError):
    errno = errno.ENAMETOOLONG
    status = 400


class InvalidArgument(CairnError):
    errno = errno.EINVAL
    status = 400


class ReadOnly(CairnError):
    """What is asked to change cannot change: a snapshot, an image version, a read-only share."""

    errno = errno.EROFS
    status = 403


class Maintenance(ReadOnly):
    """The appliance is in maintenance mode: no changes until an administrator ends it."""

    status = 503
    temporary = True
    retry_after = 60.0


class NotPermitted(CairnError):
    errno = errno.EPERM
    status = 403


class CrossDevice(CairnError):
    """A rename or link between two sources, which are separate trees."""

    errno = errno.EXDEV
    status = 403


class NoSpace(CairnError):
    errno = errno.ENOSPC
    status = 507


class LostWrites(CairnError):
    """Bytes a client wrote reached neither the pool nor the spool; `errno` is the failure's own."""

    def __init__(self, message: str, *, cause: BaseException | None = None):
        super().__init__(message)
        self.errno = getattr(cause, "errno", None) or errno.EIO


class InUse(CairnError):
    """Something else holds what is asked for (a working tree's lease, a running job): ask again later."""

    errno = errno.EBUSY
    status = 423


class Conflict(CairnError):
    """The request does not fit the state of what it names (cancelling a job that has ended)."""

    status = 409


class Unloaded(CairnError):
    """A change reached a working tree this process let go of (idle, its lease given up): ask again."""

    errno = errno.EAGAIN
    status = 503
    temporary = True


class PoolMismatch(CairnError):
    """The pool's identification file does not match the catalog."""


class PoolMissing(CairnError):
    """The pool, or its identification file, cannot be found."""

    status = 503


class Locked(CairnError):
    """The pool is encrypted and no passphrase or key file was given."""

    errno = errno.EACCES
    status = 503


class WrongKey(CairnError):
    """The passphrase or key file does not unlock the pool's keys."""

    errno = errno.EACCES
    status = 403


class CorruptBlob(CairnError):
    """A blob failed its hash check, or its header or pack cannot be parsed."""

    def __init__(self, message: str, *, blob_id: bytes | None = None, pack: str | None = None):
        super().__init__(message)
        self.blob_id = blob_id
        self.pack = pack


class BackendError(CairnError):
    """A storage backend failed; `temporary` says whether a retry may help."""

    def __init__(self, message: str, *, temporary: bool = False):
        super().__init__(message)
        self.temporary = temporary
        self.status = 503 if temporary else 502  # the backend behind the appliance failed


class ObjectNotFound(BackendError):
    errno = errno.ENOENT


class Throttled(BackendError):
    """The service asked for fewer requests (429, 503 SlowDown); `retry_after` is its hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message, temporary=True)
        self.retry_after = retry_after
