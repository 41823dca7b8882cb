"""The appliance's services, built once and handed to the web app, the job runner and the mount."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from engine import gc
from engine.check import damage_doc, scrub
from engine.deployment import Deployment
from engine.mount import MountView
from engine.recover import restore_in_place
from engine.sessions import Sessions
from image.mountfs import MountImages
from image.pool import ImagePool

from .accounts import Accounts
from .auth import LoginLimiter
from .config import Config
from .doors.keys import SourceKeys
from .doors.sessions import BackupSessions
from .jobs import Handler, Job, JobQueue, Progress, Runner
from .notify import Notifier
from .retention import Policy, keep


@dataclass(frozen=True)
class DoorsInfo:
    """What a client needs to reach the front doors: their ports, the SSH user and host key fingerprints."""

    ssh_port: int | None
    rsyncd_port: int | None
    ssh_user: str
    host_keys: tuple[str, ...]  # as `ssh-keygen -l` prints them
    smb_port: int | None = None


@dataclass
class Services:
    deployment: Deployment
    accounts: Accounts
    jobs: JobQueue
    logins: LoginLimiter
    runner: Runner | None = None
    view: MountView = dataclasses.field(init=False)
    images: ImagePool = dataclasses.field(init=False)
    sessions: Sessions = dataclasses.field(init=False)
    keys: SourceKeys = dataclasses.field(init=False)
    backups: BackupSessions = dataclasses.field(init=False)
    notifier: Notifier = dataclasses.field(init=False)
    doors: DoorsInfo | None = None  # set by `cairn serve` once the front doors listen

    def __post_init__(self) -> None:
        self.images = ImagePool(self.deployment)  # disks in images/, frozen with each snapshot
        self.sessions = Sessions(self.deployment.catalog, self.deployment.owner)
        self.keys = SourceKeys(self.deployment.catalog)
        # The mount's tree (WebDAV, archives of snapshot folders), images included.
        self.view = MountView(self.deployment, MountImages(self.images))

    def close(self) -> None:
        self.images.close()

    @classmethod
    def build(cls, deployment: Deployment, *, workers: int = 2) -> Services:
        services = cls(deployment, Accounts.of(deployment), JobQueue(deployment.catalog), LoginLimiter())
        config = Config(deployment.catalog)
        notifier = services.notifier = Notifier(config, services.jobs, services.source_of)
        services.backups = BackupSessions(deployment, services.sessions, services.jobs, config, services.accounts,
                                          notifier)  # fmt: skip
        handlers = {**job_handlers(deployment, services.accounts, config, services.sessions),
                    "digest": lambda job, progress: notifier.digest()}  # fmt: skip
        services.runner = Runner(services.jobs, handlers, workers, notifier.job_finished)
        return services

    def source_of(self, source_id: int) -> tuple[str | None, str | None]:
        """A source's name and group, by id (None, None once it is gone)."""
        for s in self.deployment.list_sources():
            if s.id == source_id:
                return s.name, self.accounts.source_access().get(s.name, (None, None))[0]
        return None, None


def job_handlers(dep: Deployment, accounts: Accounts, config: Config, sessions: Sessions) -> dict[str, Handler]:
    """What each kind of job does: long work, never inside a request or a FUSE handler."""

    def snapshot(job: Job, progress: Progress) -> dict[str, Any]:
        p = job.params
        session = p.get("session")
        wait_for_sessions(sessions, p["source"], progress)
        group = accounts.source_access().get(p["source"], (None, None))[0]
        if_changed = bool(p.get("scheduled")) and not config.value("snapshot_unchanged", p["source"], group)
        try:
            done = take_snapshot(dep, accounts, config, p["source"], p.get("name"), progress, if_changed=if_changed)
        except Exception as e:
            if session is not None:
                sessions.took(int(session), None, str(e))
            raise
        if session is not None:
            sessions.took(int(session), done["snapshot"])
        return done

    def forget_source(source: str) -> list[str]:
        return forget(dep, accounts, config, source)

    def restore(job: Job, progress: Progress) -> dict[str, Any]:
        p = job.params
        return restore_in_place(dep, p["source"], p["snapshot"], p["path"], p.get("to"), p.get("into"),
                                bool(p.get("overwrite", False)))  # fmt: skip

    def forget_job(job: Job, progress: Progress) -> dict[str, Any]:
        return {"deleted": forget_source(job.params["source"])}

    def collect(job: Job, progress: Progress) -> dict[str, Any]:
        p = job.params
        report = gc.collect(dep, repack_below=float(p.get("repack_below", gc.REPACK_BELOW)),
                            dry_run=bool(p.get("dry_run", False)),
                            progress=lambda r: progress(dataclasses.asdict(r)))  # fmt: skip
        return dataclasses.asdict(report)

    def scrub_pool(job: Job, progress: Progress) -> dict[str, Any]:
        report, summary = scrub(
            dep,
            lambda r: progress({"packs": r.packs, "blobs": r.blobs, "bytes": r.bytes, "total_bytes": r.total_bytes}),
        )
        return {**summary, "damage": damage_doc(report.damage)}

    return {"snapshot": snapshot, "restore": restore, "forget": forget_job, "gc": collect, "scrub": scrub_pool}


def wait_for_sessions(sessions: Sessions, source: str, progress: Progress, poll: float = 1.0) -> None:
    """Wait while backup sessions write into `source`: a snapshot never freezes a half-written rsync."""
    while running := sessions.open_on(source):
        progress({"step": f"waiting for {len(running)} backup session(s) to end", "sessions": [s.id for s in running]})
        time.sleep(poll)


def take_snapshot(dep: Deployment, accounts: Accounts, config: Config, source: str, name: str | None,
                  progress: Progress, *, if_changed: bool = False) -> dict[str, Any]:  # fmt: skip
    """Freeze a source's working tree, then apply its retention policy: the CLI's and the job's one body.

    `if_changed`: nothing is taken when nothing changed since the newest snapshot (`unchanged` says so).
    The last progress report comes before the freeze: a job asked to stop stops at a report, and after
    the freeze the snapshot is taken and its retention must follow.
    """
    progress({"step": "freezing the working tree"})
    started = time.time()
    info = dep.create_snapshot(source, name, if_changed=if_changed)
    if info.created < started:  # an older snapshot came back: nothing changed since it
        return {"source": source, "snapshot": info.name, "unchanged": True, "deleted": []}
    deleted = forget(dep, accounts, config, source)
    return {"source": source, "snapshot": info.name, "uuid": info.uuid, "created": info.created,
            "files": info.files, "bytes": info.bytes, "state": info.state, "deleted": deleted}  # fmt: skip


def forget(dep: Deployment, accounts: Accounts, config: Config, source: str) -> list[str]:
    """Delete the snapshots of `source` its retention policy no longer keeps; their names."""
    group = accounts.source_access().get(source, (None, None))[0]
    policy = Policy.from_json(config.value("retention", source, group))
    snapshots = dep.list_snapshots(source)  # once: what the policy saw is what is deleted from
    kept, _ = keep(policy, snapshots)
    gone = [s.name for s in snapshots if s.name not in kept]
    for name in gone:
        dep.delete_snapshot(source, name)
    return gone
