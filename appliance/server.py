"""`cairn serve`: the web UI, the REST API and WebDAV on one cheroot port, job workers, the mount.

Wiring happens here and nowhere else: one Deployment, one set of services,
handed to the web app, the job runner and the FUSE mount.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from dav.app import parse_listen
from dav.guard import HTTPServer
from engine.deployment import Deployment
from engine.errors import NotFound
from engine.private import replace_file
from vfs.writers import Writers

from .access import can, manages
from .accounts import FIRST_ADMIN, FIRST_PASSWORD, Accounts
from .app import create_app
from .doors import Doors, Listen
from .doors.ssh import USER
from .scheduler import Scheduler
from .services import DoorsInfo, Services
from .tls import Tls, redirect_app

log = logging.getLogger(__name__)
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def first_admin(services: Services) -> str | None:
    """On the first start, an `admin` with a one-time password: the web UI asks for a new one. It is printed
    once, and kept in DATA/first-password (0600) for the appliance's console until it is changed."""
    accounts, kept = services.accounts, services.accounts.first_password
    if accounts.count_users():
        if kept is not None and kept.exists() and not _one_time(accounts, FIRST_ADMIN):
            kept.unlink()  # changed while an older version ran, which removed it only at its next start
        return None
    password = secrets.token_urlsafe(12)
    if kept is not None:
        replace_file(kept, password.encode() + b"\n")
    accounts.add_user(FIRST_ADMIN, password, admin=True, one_time=True)
    return password


def _one_time(accounts: Accounts, name: str) -> bool:
    try:
        return accounts.user(name).must_change
    except NotFound:
        return False


@dataclass(frozen=True)
class Doorways:
    """Where the front doors listen (None: that door stays shut)."""

    ssh: Listen | None = None
    rsyncd: Listen | None = None
    smb: Listen | None = None

    @classmethod
    def parse(cls, ssh: str | None, rsyncd: str | None, smb: str | None, mountpoint: Path | None) -> Doorways:
        if (ssh or rsyncd or smb) and mountpoint is None:
            raise ValueError("the front doors write through the mount: give --mount too")
        return cls(*(Listen(*parse_listen(a)) if a else None for a in (ssh, rsyncd, smb)))

    def __bool__(self) -> bool:
        return bool(self.ssh or self.rsyncd or self.smb)


def serve(deployment: Deployment, listen: str, mountpoint: Path | None = None, workers: int = 2,
          doorways: Doorways = Doorways(), tls: Tls | None = None, redirect: str | None = None) -> None:  # fmt: skip
    """Serve until SIGTERM or SIGINT (or, with a mount, until it is unmounted).

    `tls`: serve HTTPS with that certificate; `redirect`: HOST:PORT where plain HTTP is sent to HTTPS.
    """
    services = Services.build(deployment, workers=workers)
    password = first_admin(services)
    if password is not None:
        print(f"first start: sign in as admin with the one-time password {password} (kept in "
              f"{deployment.data_dir / FIRST_PASSWORD} until it is changed)", file=sys.stderr, flush=True)  # fmt: skip
    app = _dispatch(create_app(services), _dav(services))
    server = HTTPServer(parse_listen(listen), app)
    if tls is not None:
        server.ssl_adapter = BuiltinSSLAdapter(str(tls.cert), str(tls.key))
    server.prepare()  # binds now: a port in use fails here, before anything else starts
    plain = None
    if redirect is not None:
        if tls is None:
            server.stop()
            raise ValueError("--http-redirect sends plain HTTP to HTTPS: it needs TLS on")
        plain = HTTPServer(parse_listen(redirect), redirect_app(server.bind_addr[1]))
        try:
            plain.prepare()
        except BaseException:
            server.stop()
            raise
        threading.Thread(target=plain.serve, name="cairn-redirect", daemon=True).start()
    closed = services.sessions.close_abandoned()
    if closed:
        log.warning("%d backup session(s) ended as failed: their appliance process stopped", closed)
    doors = None
    writers = Writers()
    if mountpoint is not None and doorways:
        doors = Doors(services, mountpoint, deployment.data_dir, doorways.ssh, doorways.rsyncd, doorways.smb, writers)
        try:
            doors.start()  # before the mount: a session arriving first is told the source is not served yet
        except BaseException:
            doors.stop()  # the servers it did start go with it
            server.stop()
            if plain is not None:
                plain.stop()
            services.close()
            raise
        services.doors = DoorsInfo(doorways.ssh.port if doorways.ssh else None,
                                   doorways.rsyncd.port if doorways.rsyncd else None, USER,
                                   tuple(doors.host_keys), doorways.smb.port if doorways.smb else None)  # fmt: skip
    deployment.start_flusher()
    assert services.runner is not None
    services.runner.start()
    scheduler = Scheduler(services)
    scheduler.start()
    web = threading.Thread(target=server.serve, name="cairn-web", daemon=True)
    web.start()
    scheme = "https" if tls is not None else "http"
    log.info("serving on %s://%s:%d", scheme, *server.bind_addr[:2])
    _announce(f"{scheme}://{listen}", mountpoint, doors, tls, redirect)
    try:
        if mountpoint is not None:
            from vfs.mount import serve as serve_mount

            # till SIGTERM/unmount; the share's view, its caches shared
            serve_mount(services.view, mountpoint, writers=writers)
        else:
            _wait_for_signal()
    finally:
        server.stop()  # from this thread: cheroot must be stopped from outside serve()
        if plain is not None:
            plain.stop()
        if doors is not None:
            doors.stop()
        web.join(timeout=30)
        scheduler.stop()
        services.runner.stop()
        services.sessions.close_abandoned(mine_too=True)
        services.close()


def _announce(url: str, mountpoint: Path | None, doors: Doors | None, tls: Tls | None, redirect: str | None) -> None:
    """Each way in, printed once at start."""
    lines = [f"serving on {url}"]
    if tls is not None:
        lines.append(f"  certificate {tls.cert} ({tls.fingerprint()})")
    if redirect is not None:
        lines.append(f"plain HTTP on {redirect} redirects to HTTPS")
    if mountpoint is not None:
        lines.append(f"mounting the sources at {mountpoint}")
    if doors is not None and doors.ssh_listen is not None:
        lines.append(f"rsync over SSH on {doors.ssh_listen} (user {USER}): {doors.ssh_hint()}")
        lines += [f"  host key {fp}" for fp in doors.host_keys]
    if doors is not None and doors.rsyncd_listen is not None:
        lines.append(
            f"rsync daemon on {doors.rsyncd_listen}: rsync://SOURCE@APPLIANCE:{doors.rsyncd_listen.port}/SOURCE/"
        )
    if doors is not None and doors.smb_listen is not None:
        lines.append(f"SMB shares on {doors.smb_listen}: \\\\APPLIANCE\\SOURCE, signed in as a Cairn user")
    print("\n".join(lines), file=sys.stderr, flush=True)


class _Accounts:
    """The WebDAV share's user list: the appliance's accounts (their password hashes)."""

    def __init__(self, accounts: Accounts):
        self.accounts = accounts

    def get(self, name: str) -> str | None:
        return self.accounts.password_hash(name)

    def __len__(self) -> int:
        return self.accounts.count_users()


def _dav(services: Services) -> WSGIApp:
    """The share at /dav: each user sees and changes what their roles allow (appliance/access.py)."""
    from dav.app import make_app

    def scope(name: str) -> Callable[[str | None, str], bool]:
        try:
            user = services.accounts.user(name)
        except NotFound:  # removed since the password was checked
            return lambda source, action: False
        access = services.accounts.source_access()

        def allowed(source: str | None, action: str) -> bool:
            group, owner = access.get(source, (None, None)) if source is not None else (None, None)
            if action == "manage":  # add or remove the source as a whole (a new one has no group yet)
                return manages(user, group)
            if source is None:
                return user.admin
            return can(user, action, group, owner)

        return allowed

    users: Any = _Accounts(services.accounts)
    # The share counts failed sign-ins in the web UI's and API's limiter: one limit for every way in.
    return make_app(services.view, users, mount_path="/dav", scope=scope, limiter=services.logins)


def _dispatch(web: WSGIApp, dav: WSGIApp) -> WSGIApp:
    """WebDAV at /dav, everything else to the web UI and API (cheroot moves /dav to SCRIPT_NAME)."""
    return wsgi.PathInfoDispatcher({"/dav": dav, "/": web})  # type: ignore[no-untyped-call]


def _wait_for_signal() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    stop.wait()
