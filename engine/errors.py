"""The engine's errors. Each says whether it is temporary and which errno fits."""

from __future__ import annotations

import errno


class CairnError(Exception):
    """Base of every error the engine raises on purpose."""

    errno: int = errno.EIO
    temporary: bool = False


class NotFound(CairnError):
    errno = errno.ENOENT


class Exists(CairnError):
    errno = errno.EEXIST


class NotEmpty(CairnError):
    errno = errno.ENOTEMPTY


class NotADirectory(CairnError):
    errno = errno.ENOTDIR


class IsADirectory(CairnError):
    errno = errno.EISDIR


class InvalidName(CairnError):
    errno = errno.EINVAL


class NameTooLong(CairnError):
    errno = errno.ENAMETOOLONG


class InvalidArgument(CairnError):
    errno = errno.EINVAL


class ReadOnly(CairnError):
    errno = errno.EROFS


class NotPermitted(CairnError):
    errno = errno.EPERM


class CrossDevice(CairnError):
    """A rename or link between two sources, which are separate trees."""

    errno = errno.EXDEV


class NoSpace(CairnError):
    errno = errno.ENOSPC


class LostWrites(CairnError):
    """Bytes a client wrote reached neither the pool nor the spool; `errno` is the failure's own."""

    def __init__(self, message: str, *, cause: BaseException | None = None):
        super().__init__(message)
        self.errno = getattr(cause, "errno", None) or errno.EIO


class InUse(CairnError):
    """Another process holds the lease on a working tree."""

    errno = errno.EBUSY


class Unloaded(CairnError):
    """A change reached a working tree this process let go of (idle, its lease given up): ask again."""

    errno = errno.EAGAIN


class PoolMismatch(CairnError):
    """The pool's identification file does not match the catalog."""


class PoolMissing(CairnError):
    """The pool, or its identification file, cannot be found."""


class Locked(CairnError):
    """The pool is encrypted and no passphrase or key file was given."""

    errno = errno.EACCES


class WrongKey(CairnError):
    """The passphrase or key file does not unlock the pool's keys."""

    errno = errno.EACCES


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


class ObjectNotFound(BackendError):
    errno = errno.ENOENT


class Throttled(BackendError):
    """The service asked for fewer requests (429, 503 SlowDown); `retry_after` is its hint in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message, temporary=True)
        self.retry_after = retry_after
