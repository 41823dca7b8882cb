"""Mounting: pyfuse3 on trio, clean unmount on SIGTERM/SIGINT, stale mounts cleared."""

from __future__ import annotations

import errno
import logging
import os
import signal
import subprocess
from pathlib import Path

import pyfuse3
import trio

from engine.errors import CairnError
from engine.hostmounts import mounts
from engine.mount import MountView

from .ops import Operations, in_request
from .writers import Writers

log = logging.getLogger(__name__)

# The kernel reads ahead 128 KiB per FUSE request by default. A whole chunk
# (about 1 MiB) per request and two in flight read a 2 GiB snapshot in 3.5-4.0 s
# instead of 5.5 s here (tar | wc), with an eighth of the requests.
READ_AHEAD_KB = 2048
PUSH_STOP = 10.0  # seconds an unmount waits for pages being pushed to the kernel


def clear_stale(mountpoint: Path) -> None:
    """Detach a mount left by a killed process; refuse a mount that still answers."""
    target = os.path.realpath(mountpoint)
    if not any(mount == target for mount, _ in mounts()):
        return
    try:
        os.listdir(mountpoint)  # a stat could be answered from the kernel's cache
    except OSError as e:
        if e.errno != errno.ENOTCONN:
            raise
        log.warning("clearing the stale mount at %s", mountpoint)
        subprocess.run(["fusermount3", "-u", "-z", target], check=True, capture_output=True)
        return
    raise CairnError(f"{mountpoint} is already mounted and answering; unmount it first")


def raise_read_ahead(mountpoint: Path, kb: int = READ_AHEAD_KB) -> None:
    """Set the mount's read-ahead (its backing device's in sysfs); only root may, so others keep the default."""
    dev = os.stat(mountpoint).st_dev
    path = Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb")
    try:
        path.write_text(str(kb))
    except OSError as e:
        log.debug("read-ahead stays at the kernel's default: %s", e)


def serve(view: MountView, mountpoint: Path, *, debug: bool = False, writers: Writers | None = None) -> None:
    """Mount `view` and serve until SIGTERM or SIGINT; then unmount and return."""
    clear_stale(mountpoint)
    mountpoint.mkdir(parents=True, exist_ok=True)
    ops = Operations(view, writers=writers)
    options = set(pyfuse3.default_options)
    # nodev, nosuid: a device node or set-uid file a client stored opens or runs nothing here.
    options |= {"fsname=cairn", "subtype=cairn", "allow_other", "nodev", "nosuid"}
    if debug:
        options.add("debug")
    pyfuse3.init(ops, str(mountpoint), options)
    try:
        trio.run(_main, mountpoint, ops)
    finally:
        ops.close()
        pyfuse3.close(unmount=True)


async def _main(mountpoint: Path, ops: Operations) -> None:
    in_request.set(True)  # for every task and thread that serves a request: the kernel knows their changes
    async with trio.open_nursery() as nursery:

        async def serve_requests() -> None:
            await pyfuse3.main()
            nursery.cancel_scope.cancel()  # unmounted from outside (fusermount -u)

        nursery.start_soon(serve_requests)
        # The mount can die silently in init: ask it something, from a thread,
        # once the loop serves requests (asking before would deadlock).
        with trio.fail_after(30):
            await trio.to_thread.run_sync(raise_read_ahead, mountpoint)
        log.info("mounted at %s", mountpoint)
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                log.info("signal received: unmounting")
                # Pushing stops while the loop still answers: the kernel may hold
                # a page being pushed until a READ of it is answered.
                with trio.move_on_after(PUSH_STOP):
                    await trio.to_thread.run_sync(ops.close, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()
                return
