"""Windows clients of the SMB door: a source's share as the signed-in user reaches it, the commands that map
it, back up into it with robocopy and restore from its Previous Versions, and a Task Scheduler task that runs
the backup every night.

The source page (web/doors.py) and the API (`/sources/<name>/smb`) show the same texts. The host is the one
request.client_host checked: the commands are pasted into cmd.exe, the task runs them as an administrator.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .access import can
from .accounts import User
from .config import Config
from .doors.smb import unserved, versions
from .services import Services

WINDOWS_PORT = 445  # the only port Windows' SMB client dials
ANY_SNAPSHOT = "@GMT-YYYY.MM.DD-HH.MM.SS"
BACKED_UP = r"C:\Users"  # every profile on the machine: documents, desktops, application data
LOG_DIR = r"%ProgramData%\Cairn"  # robocopy does not make its log's folder
TASK_NS = "http://schemas.microsoft.com/windows/2004/02/mit/task"
NIGHTLY = "2024-01-01T01:00:00"  # the trigger's first day; local time, no zone: 01:00 wherever the client is
# Why each switch is there, in the order of the command line (the page lists them).
SWITCHES = (
    ("/MIR", "mirror: copy every folder, empty ones too, and delete from the share what is gone from "
             r"C:\Users (the snapshots keep it)"),
    ("/COPY:DAT", "copy each file's data, attributes and times (not its NTFS permissions: the share keeps none)"),
    ("/DCOPY:T", "keep the folders' times too"),
    ("/R:1 /W:1", "retry a file that cannot be read (a program holds it open) once, after 1 s, instead of "
                  "robocopy's default of a million times 30 s"),
    ("/XJ", r"skip junctions (C:\Users\All Users, the Application Data loops in every profile), which robocopy "
            "would otherwise follow in circles"),
    ("/NP", "no per-file percentages in the log"),
    ("/LOG:…", "write what happened to a log file, replaced at each run"),
)  # fmt: skip


@dataclass(frozen=True)
class WindowsShare:
    """A source's share as one user reaches it from Windows (port None: the SMB door is shut)."""

    source: str
    host: str  # as a UNC path spells it
    port: int | None
    user: str
    served: bool  # False: the source's name cannot be a share (doors/smb.py `unserved`)
    write: bool  # may run the source: back up into the share; else only read it
    password_set: bool  # the account has an SMB password (one set since SMB support existed)
    idle: float  # smb_idle: seconds from robocopy's disconnect to the end of the session
    snapshot: str | None  # the newest snapshot, if there is one
    token: str | None  # ... and its Previous Versions token

    @property
    def unc(self) -> str:
        return f"\\\\{self.host}\\{self.source}"

    @property
    def log(self) -> str:
        return f"{LOG_DIR}\\{self.source}.log"

    def robocopy_args(self) -> list[str]:
        return [BACKED_UP, self.unc, "/MIR", "/COPY:DAT", "/DCOPY:T", "/R:1", "/W:1", "/XJ", "/NP",
                f"/LOG:{self.log}"]  # fmt: skip

    def texts(self) -> dict[str, str]:
        """The copy-paste texts, by name; none when the door is shut or the source has no share."""
        if self.port is None or not self.served:
            return {}
        robocopy = " ".join(["robocopy", *self.robocopy_args()])
        return {
            "win_share": self.unc,
            "win_cmdkey": f"cmdkey /add:{self.host} /user:{self.user} /pass",
            "win_net_use": f"net use Z: {self.unc} /user:{self.user} /persistent:yes",
            "win_robocopy": robocopy,
            "win_backup": f'if not exist "{LOG_DIR}" mkdir "{LOG_DIR}"\n{robocopy}',
            "win_schtasks": (
                f'schtasks /Create /TN "Cairn {self.source}" /XML "%USERPROFILE%\\Downloads\\{task_file(self.source)}" '
                '/RU "%USERDOMAIN%\\%USERNAME%" /RP *'
            ),
            "win_restore": f"robocopy {self.unc}\\{self.token or ANY_SNAPSHOT}\\%USERNAME%\\Documents C:\\restore /E",
        }

    def to_json(self) -> dict[str, Any]:
        shared = self.port is not None and self.served
        return {
            "port": self.port, "windows_port": self.port == WINDOWS_PORT, "served": self.served,
            "share": self.unc if shared else None, "access": "write" if self.write else "read",
            "password_set": self.password_set, "session_idle": self.idle,
            "snapshot": self.snapshot, "snapshot_token": self.token, "commands": self.texts(),
        }  # fmt: skip


def windows_share(svc: Services, user: User, source: str, group: str | None, owner: str | None,
                  host: str) -> WindowsShare:  # fmt: skip
    """The share of `source` for `user`, who may see it, reached at `host` (already checked: request.client_host)."""
    dep = svc.deployment
    names = [s.name for s in dep.list_sources()]  # in the order the shares are made: the first twin wins
    snaps = [(source, s.name, s.created) for s in dep.list_snapshots(source)]
    tokens = {Path(folder).name: token for token, folder in versions(Path("/"), snaps).get(source, {}).items()}
    newest = max(snaps, key=lambda s: s[2])[1] if snaps else None
    return WindowsShare(
        source=source, host=unc_host(host), port=svc.doors.smb_port if svc.doors else None, user=user.name,
        served=source not in unserved(names), write=can(user, "run", group, owner),
        password_set=user.id in svc.accounts.nt_hashes(),
        idle=float(Config(dep.catalog).value("smb_idle", source, group)),
        snapshot=newest, token=tokens.get(newest) if newest else None,
    )  # fmt: skip


def unc_host(host: str) -> str:
    """A host as a UNC path can name it: an IPv6 address as Windows spells it (`fd00--1.ipv6-literal.net`)."""
    if host.startswith("["):
        return host[1:-1].replace(":", "-") + ".ipv6-literal.net"
    return host


def task_file(source: str) -> str:
    return f"cairn-{source}.xml"  # source names are ASCII letters, digits, '.', '_' and '-'


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    element.text = text
    return element


def task_xml(share: WindowsShare) -> bytes:
    """A Task Scheduler 1.2 task: the backup nightly at 01:00 (+ up to 30 min), as the importing user, signed
    in or not, with highest privileges; a night the machine was off runs at its next start. No password:
    Windows asks for the account's when the task is imported, and cmdkey keeps the share's."""
    task = ET.Element("Task", {"version": "1.2", "xmlns": TASK_NS})
    info = _sub(task, "RegistrationInfo")
    _sub(info, "Description", f"Back up {BACKED_UP} to Cairn: {share.unc} (log: {share.log})")
    trigger = _sub(_sub(task, "Triggers"), "CalendarTrigger")  # the schema's order: boundary, enabled, delay
    _sub(trigger, "StartBoundary", NIGHTLY)
    _sub(trigger, "Enabled", "true")
    _sub(trigger, "RandomDelay", "PT30M")  # a building's clients do not all start at once
    _sub(_sub(trigger, "ScheduleByDay"), "DaysInterval", "1")
    principal = _sub(_sub(task, "Principals"), "Principal", id="Author")
    _sub(principal, "LogonType", "Password")  # "whether the user is logged on or not", with network access
    _sub(principal, "RunLevel", "HighestAvailable")  # other users' profiles are an administrator's to read
    settings = _sub(task, "Settings")
    for tag, value in (("MultipleInstancesPolicy", "IgnoreNew"), ("DisallowStartIfOnBatteries", "false"),
                       ("StopIfGoingOnBatteries", "false"), ("StartWhenAvailable", "true"),
                       ("RunOnlyIfNetworkAvailable", "true"), ("AllowStartOnDemand", "true"), ("Enabled", "true"),
                       ("ExecutionTimeLimit", "PT12H"), ("Priority", "7")):  # fmt: skip
        _sub(settings, tag, value)
    actions = _sub(task, "Actions", Context="Author")
    folder = _sub(actions, "Exec")  # actions run in order: the log's folder first
    _sub(folder, "Command", r"%SystemRoot%\System32\cmd.exe")
    _sub(folder, "Arguments", f'/d /c if not exist "{LOG_DIR}" mkdir "{LOG_DIR}"')
    robocopy = _sub(actions, "Exec")
    _sub(robocopy, "Command", r"%SystemRoot%\System32\robocopy.exe")
    _sub(robocopy, "Arguments", " ".join(share.robocopy_args()))
    ET.indent(task)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(task, encoding="unicode").encode() + b"\n"
