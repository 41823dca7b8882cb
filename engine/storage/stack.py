"""Builds a pool's backend from its configuration: the one place filters are stacked.

The stack, from the backend out (each layer wraps the one before):

  backend     local | memory | s3
  ratelimit   innermost, so that it sees every request the service sees:
              retries, multipart parts and verify's read-backs all count,
              and a 429/503 SlowDown pauses all of them
  retry       retries errors that say they are temporary; a throttled call
              has already set ratelimit's pause, which its retry waits out
  verify      read back after write; its GETs and re-PUTs are retried
  spool       durable write-back: writes land on local disk and drain
              through verify, retry and ratelimit in the background
  read cache  outermost: a hit costs no request at all

Configuration: the backend's settings plus an optional `filters` object,
e.g. `{"kind": "s3", "bucket": "b", "filters": {"ratelimit": {"requests":
{"put": [100, 5]}}, "verify": {}, "cache": {"max_bytes": 1073741824}}}`.
Retry is on for backends that are not local unless `"retry": false`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidArgument
from . import ratelimit, verify
from .backend import Backend
from .local import LocalBackend
from .memory import MemoryBackend
from .readcache import ReadCache
from .retry import Retry
from .spool import Spool

FILTERS = ("ratelimit", "retry", "verify", "spool", "cache")
PACK_LIMIT = 64 << 20  # a spool must hold at least a few packs
CACHE_BYTES = 2 << 30  # 2 GiB: 128 packs, the working set of a restore of a few GiB


def open_backend(
    config: dict[str, Any], *, cache_dir: str | os.PathLike[str] | None = None,
    spool_dir: str | os.PathLike[str] | None = None,
) -> Backend:  # fmt: skip
    """`config` is the pool's backend configuration as stored in the catalog.

    `cache_dir` is where this machine keeps the pool's read cache, `spool_dir`
    its write-back spool (each instance of a deployment has its own); a
    `path` in the filter's settings overrides either.
    """
    filters = config.get("filters", {})
    if not isinstance(filters, dict) or set(filters) - set(FILTERS):
        raise InvalidArgument(f"filters must be an object with some of: {', '.join(FILTERS)}")
    backend = _open_base(config)
    if "ratelimit" in filters:
        backend = ratelimit.from_config(backend, filters["ratelimit"])
    retry = filters.get("retry", not backend.properties.local)
    if retry:
        backend = Retry(backend, **_retry_settings(retry))
    if "verify" in filters:
        backend = verify.from_config(backend, filters["verify"])
    if "spool" in filters:
        backend = _spool(backend, filters["spool"], spool_dir)
    if "cache" in filters:
        backend = _read_cache(backend, filters["cache"], cache_dir)
    return backend


def _open_base(config: dict[str, Any]) -> Backend:
    kind = config.get("kind")
    if kind == "local":
        return LocalBackend(config["path"])
    if kind == "memory":
        return MemoryBackend()
    if kind == "s3":
        from .s3 import S3Backend  # boto3 takes 0.3 s to import; local pools need not pay it

        return S3Backend(config)
    raise InvalidArgument(f"unknown backend kind {kind!r}")


def _retry_settings(config: object) -> dict[str, Any]:
    if config is True:
        return {}
    if not isinstance(config, dict) or set(config) - {"attempts", "first_delay", "max_delay"}:
        raise InvalidArgument("retry settings are true, false or an object of attempts, first_delay, max_delay")
    try:
        return {k: int(v) if k == "attempts" else float(v) for k, v in config.items()}
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"retry settings must be numbers: {e}") from e


def _read_cache(backend: Backend, config: object, cache_dir: str | os.PathLike[str] | None) -> Backend:
    if not isinstance(config, dict) or set(config) - {"path", "max_bytes"}:
        raise InvalidArgument("cache settings are an object of path, max_bytes")
    path = config.get("path", cache_dir)
    if path is None:
        raise InvalidArgument("the read cache needs a directory: give its path")
    max_bytes = config.get("max_bytes", CACHE_BYTES)
    if not isinstance(max_bytes, int) or max_bytes < 0:
        raise InvalidArgument("cache max_bytes must be a number of bytes")
    return ReadCache(backend, Path(path), max_bytes)


def _spool(backend: Backend, config: object, spool_dir: str | os.PathLike[str] | None) -> Backend:
    if not isinstance(config, dict) or set(config) - {"path", "max_bytes"}:
        raise InvalidArgument("spool settings are an object of path, max_bytes")
    path = config.get("path", spool_dir)
    if path is None:
        raise InvalidArgument("the spool needs a directory: give its path")
    max_bytes = config.get("max_bytes")
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < PACK_LIMIT):
        raise InvalidArgument(f"spool max_bytes must be a number of bytes, at least {PACK_LIMIT}")
    return Spool(backend, Path(path), max_bytes)
