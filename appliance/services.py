"""The appliance's services, built once and handed to the web app, the job runner and the mount."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from engine import gc
from engine.check import damage_doc, scrub
from engine.deployment import Deployment
from engine.mount import MountView
from engine.recover import restore_in_place
from image.mountfs import MountImages
from image.pool import ImagePool

from .accounts import Accounts
from .auth import LoginLimiter
from .config import Config
from .jobs import Handler, Job, JobQueue, Progress, Runner
from .notify import Notifier
from .retention import Policy, keep


@dataclass
class Services:
    deployment: Deployment
    accounts: Accounts
    jobs: JobQueue
    logins: LoginLimiter
    runner: Runner | None = None
    view: MountView = dataclasses.field(init=False)
    images: ImagePool = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.images = ImagePool(self.deployment)  # disks in images/, frozen with each snapshot
        # The mount's tree (WebDAV, archives of snapshot folders), images included.
        self.view = MountView(self.deployment, MountImages(self.images))

    def close(self) -> None:
        self.images.close()

    @classmethod
    def build(cls, deployment: Deployment, *, workers: int = 2) -> Services:
        services = cls(deployment, Accounts(deployment.catalog), JobQueue(deployment.catalog), LoginLimiter())
        config = Config(deployment.catalog)
        notifier = Notifier(config, services.jobs, services.source_of)
        handlers = {**job_handlers(deployment, services.accounts, config),
                    "digest": lambda job, progress: notifier.digest()}  # fmt: skip
        services.runner = Runner(services.jobs, handlers, workers, notifier.job_finished)
        return services

    def source_of(self, source_id: int) -> tuple[str | None, str | None]:
        """A source's name and group, by id (None, None once it is gone)."""
        for s in self.deployment.list_sources():
            if s.id == source_id:
                return s.name, self.accounts.source_access().get(s.name, (None, None))[0]
        return None, None


def job_handlers(dep: Deployment, accounts: Accounts, config: Config) -> dict[str, Handler]:
    """What each kind of job does: long work, never inside a request or a FUSE handler."""

    def snapshot(job: Job, progress: Progress) -> dict[str, Any]:
        return take_snapshot(dep, accounts, config, job.params["source"], job.params.get("name"), progress)

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
        report, summary = scrub(dep, lambda r: progress({"packs": r.packs, "blobs": r.blobs, "bytes": r.bytes}))
        return {**summary, "damage": damage_doc(report.damage)}

    return {"snapshot": snapshot, "restore": restore, "forget": forget_job, "gc": collect, "scrub": scrub_pool}


def take_snapshot(dep: Deployment, accounts: Accounts, config: Config, source: str, name: str | None,
                  progress: Progress) -> dict[str, Any]:  # fmt: skip
    """Freeze a source's working tree, then apply its retention policy: the CLI's and the job's one body."""
    progress({"step": "freezing the working tree"})
    info = dep.create_snapshot(source, name)
    progress({"step": "applying the retention policy"})
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
