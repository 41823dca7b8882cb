"""The web UI's front doors: a source's page with its backup status, its clients (SSH keys, the rsync daemon's
password) and copy-paste instructions for Linux, macOS, NAS and Windows clients (windows_client.py).

Registered on the `web` blueprint (the package imports this module). A generated
private key and a generated password go to the browser once, in the answer
to the POST that made them, and are kept nowhere.
"""

from __future__ import annotations

import shlex

from flask import Response, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from engine.errors import Exists, InvalidArgument, NotFound
from engine.sessions import Session

from ..access import can
from ..doors.rsyncd import SECRET, new_secret, set_secret
from ..request import allowed_source, client_host, services
from ..services import DoorsInfo
from ..status import statuses
from ..windows_client import SWITCHES, task_file, task_xml, windows_share
from ..words import span
from .base import page, web

EXCLUDES = ("/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/media")  # kernel, devices and mounts: not data
DOORS = {"ssh": "rsync over SSH", "rsyncd": "rsync daemon", "smb": "SMB"}
LABELS = {"green": "ok", "amber": "failing", "red": "stale"}


@web.app_template_filter("duration")
def duration(session: Session) -> str:
    if session.ended is None:
        return "running"
    return span(session.ended - session.started)


@web.app_template_filter("door")
def door(name: str) -> str:
    return DOORS.get(name, name)


@web.app_template_global("status_label")
def status_label(colour: str, last_backup: float | None) -> str:
    return "never backed up" if last_backup is None else LABELS.get(colour, colour)


@web.get("/sources/<name>")
def source(name: str) -> str:
    return source_page(name)


def source_page(name: str, *, error: str | None = None, pasted: str = "", new_secret: str | None = None) -> str:
    """A source's page: snapshots, backup status, recent sessions, clients and how to set them up."""
    user, group, owner = allowed_source(name, "see")
    svc = services()
    snaps = list(reversed(svc.deployment.list_snapshots(name)))
    status = next((s for s in statuses(svc) if s.source == name), None)
    secret_set = svc.deployment.catalog.setting(SECRET + name) is not None
    newest = snaps[0].name if snaps else None
    share = windows_share(svc, user, name, group, owner, client_host())
    return page("source.html", source=name, group=group, owner=owner, snapshots=snaps,
                run=can(user, "run", group, owner), configure=can(user, "configure", group, owner),
                status=status, sessions=svc.sessions.recent(name, 10), keys=svc.keys.of(name),
                secret_set=secret_set, new_secret=new_secret, error=error, pasted=pasted, doors=svc.doors,
                howto=client_setup(name, client_host(), svc.doors, newest, new_secret),
                windows=share if share.port is not None else None, switches=SWITCHES)  # fmt: skip


@web.post("/sources/<name>/keys")
def add_key(name: str) -> str | BaseResponse:
    """Register a pasted public key; a key that is not one is shown on the page, nothing registered."""
    allowed_source(name, "configure")
    text = request.form.get("key", "")
    try:
        services().keys.add(name, text, request.form.get("name") or None)
    except (InvalidArgument, Exists) as e:
        shown = source_page(name, error=str(e), pasted=text)
        return Response(shown, status=400 if isinstance(e, InvalidArgument) else 409)
    return redirect(url_for("web.source", name=name, _anchor="clients"))


@web.post("/sources/<name>/keys/generate")
def generate_key(name: str) -> Response:
    """A new key pair: the public half registered, the private half downloaded once and kept nowhere."""
    allowed_source(name, "configure")
    _key, private = services().keys.generate(name, request.form.get("name") or f"cairn-{name}")
    reply = Response(private, mimetype="application/octet-stream")
    reply.headers["Content-Disposition"] = f'attachment; filename="{key_file(name)}"'
    reply.headers["Cache-Control"] = "no-store"
    return reply


@web.post("/sources/<name>/keys/<int(max=9223372036854775807):key_id>/remove")
def remove_key(name: str, key_id: int) -> BaseResponse:
    allowed_source(name, "configure")
    services().keys.remove(name, key_id)
    return redirect(url_for("web.source", name=name, _anchor="clients"))


@web.post("/sources/<name>/rsync-password")
def rsync_password(name: str) -> str | BaseResponse:
    """A new rsync daemon password, shown on the page this answer is and never again; or none (`remove`)."""
    allowed_source(name, "configure")
    catalog = services().deployment.catalog
    if request.form.get("action") == "remove":
        set_secret(catalog, name, None)
        return redirect(url_for("web.source", name=name, _anchor="clients"))
    secret = new_secret()
    set_secret(catalog, name, secret)
    reply = Response(source_page(name, new_secret=secret))
    reply.headers["Cache-Control"] = "no-store"  # the back button must not show it again from a cache
    return reply


@web.get("/sources/<name>/robocopy-task.xml")
def robocopy_task(name: str) -> Response:
    """The Task Scheduler task that runs the Windows backup nightly: for those who may back the source up."""
    user, group, owner = allowed_source(name, "run")
    share = windows_share(services(), user, name, group, owner, client_host())
    if share.port is None or not share.served:
        raise NotFound(f"source {name!r} has no SMB share" + (": the SMB door is shut" if share.port is None else ""))
    reply = Response(task_xml(share), mimetype="application/xml")
    reply.headers["Content-Disposition"] = f'attachment; filename="{task_file(name)}"'
    return reply


def key_file(source: str) -> str:
    return f"cairn-{source}-key"  # source names are ASCII letters, digits, '.', '_' and '-'


def client_setup(source: str, host: str, doors: DoorsInfo | None, snapshot: str | None,
                 secret: str | None = None) -> dict[str, str]:  # fmt: skip
    """The copy-paste texts of the source page, by name (those of a door that is off are left out)."""
    if doors is None:
        return {}
    snap = snapshot or "SNAPSHOT"
    texts: dict[str, str] = {}
    if doors.ssh_port is not None:
        texts.update(_ssh_texts(source, host, doors.ssh_port, doors.ssh_user, snap))
    if doors.rsyncd_port is not None:
        where = f"rsync://{source}@{host}:{doors.rsyncd_port}/{source}"
        secret_file = f"/root/cairn-{source}.secret"
        texts["nas_secret"] = (
            f"umask 077\nprintf '%s\\n' '{secret or 'THE-PASSWORD'}' > {secret_file}"  # the file is 0600
        )
        texts["nas_backup"] = f"rsync -aHAXS --numeric-ids --delete --password-file={secret_file} /volume1/ {where}/"
        texts["nas_restore"] = (
            f"rsync -aHAXS --numeric-ids --password-file={secret_file} {where}@snapshots/{snap}/ /volume1/restore/"
        )
    return texts


KEEP = "--backup --suffix=.before-restore"  # a restore onto the client keeps what it replaces, beside it


def client_restore(source: str, host: str, doors: DoorsInfo | None, snap: str, path: str,
                   is_dir: bool) -> dict[str, str]:  # fmt: skip
    """Commands that bring PATH of a snapshot back onto the client machine, to where it was, through the
    front doors that are open: the client reads from the appliance with its own key or password."""
    if doors is None:
        return {}
    rel, slash = path.strip("/"), "/" if is_dir else ""
    back = shlex.quote(f"/{rel}{slash}")
    texts: dict[str, str] = {}
    if doors.ssh_port is not None:
        ssh = f"ssh -p {doors.ssh_port} -i /root/.ssh/{key_file(source)}"
        there = shlex.quote(f"{doors.ssh_user}@{host}:snapshots/{snap}/{rel}{slash}")
        texts["ssh"] = f"rsync -aHAXS --numeric-ids {KEEP} -e '{ssh}' \\\n  {there} {back}"
    if doors.rsyncd_port is not None:
        there = shlex.quote(f"rsync://{source}@{host}:{doors.rsyncd_port}/{source}@snapshots/{snap}/{rel}{slash}")
        texts["rsyncd"] = (
            f"rsync -aHAXS --numeric-ids {KEEP} --password-file=/root/cairn-{source}.secret \\\n  {there} {back}"
        )
    if doors.smb_port is not None:
        texts["smb"] = "\\\\" + host + "\\" + source + "\\" + rel.replace("/", "\\")
    return texts


def _ssh_texts(source: str, host: str, port: int, user: str, snap: str) -> dict[str, str]:
    key, mac_key = f"/root/.ssh/{key_file(source)}", f"/var/root/.ssh/{key_file(source)}"
    ssh, target = f"ssh -p {port} -i {key}", f"{user}@{host}:"
    excludes = " ".join(f"--exclude='{d}/*'" for d in EXCLUDES)  # the folders stay, empty, for a full restore
    command = f"rsync -aHAXS --numeric-ids --delete -e '{ssh}' \\\n  {excludes} \\\n  / {target}"
    return {
        "linux_key": f"install -d -m 700 /root/.ssh\ninstall -m 600 {key_file(source)} {key}",
        "linux_backup": command,
        "linux_service": (
            "# /etc/systemd/system/cairn-backup.service\n[Unit]\n"
            f"Description=Back up this machine to Cairn (source {source})\n"
            "Wants=network-online.target\nAfter=network-online.target\n\n[Service]\nType=oneshot\n"
            "# 24: files vanished while rsync read them, as on any running system\nSuccessExitStatus=24\n"
            f"Nice=10\nIOSchedulingClass=idle\nExecStart=/usr/bin/{command}\n"
        ),
        "linux_timer": (
            "# /etc/systemd/system/cairn-backup.timer\n[Unit]\nDescription=Nightly backup to Cairn\n\n"
            "[Timer]\nOnCalendar=daily\nPersistent=true\nRandomizedDelaySec=1h\n\n"
            "[Install]\nWantedBy=timers.target\n"
        ),
        "linux_enable": "systemctl daemon-reload\nsystemctl enable --now cairn-backup.timer",
        "linux_restore": (
            f"# a folder of snapshot {snap}:\n"
            f"rsync -aHAXS --numeric-ids -e '{ssh}' {target}snapshots/{snap}/etc/ /restore/etc/\n"
            "# what the last backup wrote (current/):\n"
            f"rsync -aHAXS --numeric-ids -e '{ssh}' {target}current/home/ /restore/home/"
        ),
        "mac_key": f"sudo install -d -m 700 /var/root/.ssh\nsudo install -m 600 {key_file(source)} {mac_key}",
        "mac_plist": _plist(f"ssh -p {port} -i {mac_key}", target),
        "mac_enable": "sudo launchctl bootstrap system /Library/LaunchDaemons/org.cairn.backup.plist",
        "mac_restore": (
            f"sudo /opt/homebrew/bin/rsync -aHAXS --numeric-ids -e 'ssh -p {port} -i {mac_key}' "
            f"{target}snapshots/{snap}/Users/ /Users/Shared/restore/"
        ),
    }


def _plist(ssh: str, target: str) -> str:
    """A launchd job that runs the backup at 02:30 (and at the next wake, if the Mac slept through it)."""
    args = ["/opt/homebrew/bin/rsync", "-aHAXS", "--numeric-ids", "--delete", "-e", ssh,
            "--exclude=/Users/*/Library/Caches/", "/Users", target]  # fmt: skip
    strings = "\n".join(f"    <string>{a}</string>" for a in args)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
        '<plist version="1.0">\n<dict>\n  <key>Label</key>\n  <string>org.cairn.backup</string>\n'
        f"  <key>ProgramArguments</key>\n  <array>\n{strings}\n  </array>\n"
        "  <key>StartCalendarInterval</key>\n"
        "  <dict>\n    <key>Hour</key>\n    <integer>2</integer>\n    <key>Minute</key>\n    <integer>30</integer>\n"
        "  </dict>\n  <key>StandardErrorPath</key>\n  <string>/var/log/cairn-backup.log</string>\n</dict>\n</plist>\n"
    )
