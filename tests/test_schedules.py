"""Retention policies, settings in levels, and the scheduler that takes snapshots and applies them."""

from __future__ import annotations

import calendar
import re
import time
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.retention import Policy, keep
from appliance.scheduler import Scheduler
from appliance.services import Services
from engine.deployment import Deployment
from engine.errors import InvalidArgument
from engine.snapshots import SnapshotInfo

from .test_backup_restore import cairn, cairn_json


def _snap(name: str, when: str) -> SnapshotInfo:
    created = calendar.timegm(time.strptime(when, "%Y-%m-%d %H:%M"))
    return SnapshotInfo(name, "h1", "u", name, b"", float(created), 0, 0)


# Two snapshots a day for 40 days, then a few in the last hours.
HISTORY = [_snap(f"d{d:02}{h}", f"2026-{10 + (d > 30):02}-{(d - 1) % 30 + 1:02} {h}:00")
           for d in range(1, 41) for h in ("06", "18")]  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "kept"),
    [
        ({}, {s.name for s in HISTORY}),
        ({"last": 3}, {"d4018", "d4006", "d3918"}),
        ({"daily": 2}, {"d4018", "d3918"}),
        ({"last": 1, "daily": 2}, {"d4018", "d3918"}),
        ({"hourly": 3}, {"d4018", "d4006", "d3918"}),
        ({"weekly": 2}, {"d4018", "d3818"}),  # 2026-11-10 is a Tuesday of ISO week 46; week 45 ends on Sunday 11-08
        ({"monthly": 2}, {"d4018", "d3018"}),
        ({"yearly": 5}, {"d4018"}),
    ],
)
def test_retention_keeps_what_restic_would(policy: dict[str, int], kept: set[str]) -> None:
    names, why = keep(Policy.from_json(policy), HISTORY, utc=True)
    assert names == kept
    assert all(why[n] for n in names)


@pytest.mark.parametrize("bad", [{"daily": -1}, {"weekly": "3"}, {"often": 2}, [], {"last": True}])
def test_bad_policies_are_refused(bad: object) -> None:
    with pytest.raises(InvalidArgument):
        Policy.from_json(bad)


def test_settings_in_levels(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        config = Config(dep.catalog)
        assert config.effective("h1", "g1")["schedule"] == {"value": None, "from": "default"}
        config.set("schedule", "0 2 * * *")
        config.set("schedule", "30 1 * * *", group="g1")
        config.set("retention", {"daily": 7}, source="h1")
        shown = config.effective("h1", "g1")
        assert shown["schedule"] == {"value": "30 1 * * *", "from": "group:g1"}
        assert shown["retention"] == {"value": {"daily": 7}, "from": "source:h1"}
        assert config.effective("h2", None)["schedule"] == {"value": "0 2 * * *", "from": "global"}
        config.set("schedule", None, group="g1")  # removed there: the global value shows again
        assert config.effective("h1", "g1")["schedule"]["from"] == "global"
        # Settings of the whole appliance are refused at a level; one stored there before is not read.
        whole = {"tree_cache": 64, "tree_idle": 30, "smtp": {"host": "mail"}, "digest_schedule": "0 7 * * *"}
        for key, value in whole.items():
            with pytest.raises(InvalidArgument, match="whole appliance"):
                config.set(key, value, source="h1")
            with pytest.raises(InvalidArgument, match="whole appliance"):
                config.set(key, value, group="g1")
        dep.catalog.set_setting("cfg/source:h1/tree_cache", "64")
        assert config.effective("h1", "g1")["tree_cache"] == {"value": 512, "from": "default"}
        config.set("tree_cache", None, source="h1")  # and can be removed
        assert dep.catalog.setting("cfg/source:h1/tree_cache") is None
        for key, value in [("schedule", "every day"), ("retention", {"daily": -2}), ("nope", 1),
                           ("notify_email", "not-an-address")]:  # fmt: skip
            with pytest.raises(InvalidArgument):
                config.set(key, value)


def test_scheduler_takes_due_snapshots_and_applies_retention(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep, workers=1)
        dep.add_source("h1")
        dep.add_source("idle")
        from engine.backup import backup

        backup(dep.working_tree("h1"), dep.blobs, str(src))
        config = Config(dep.catalog)
        config.set("schedule", "*/5 * * * *", source="h1")  # every five minutes
        config.set("retention", {"last": 2}, source="h1")
        config.set("snapshot_unchanged", True, source="h1")  # nothing changes here: taken anyway
        clock = [time.time()]
        scheduler = Scheduler(services, now=lambda: clock[0])
        assert scheduler.run_once() == []  # not due yet: the source is new
        assert services.runner is not None
        services.runner.start()
        try:
            for step in range(4):
                clock[0] += 300
                assert scheduler.run_once() == ["h1"]
                assert scheduler.run_once() == []  # done for this slot
                _wait_jobs(services, 1 + step)
        finally:
            services.runner.stop()
        jobs = services.jobs.list()
        assert [j.state for j in jobs] == ["done"] * 4, [j.error for j in jobs]
        assert len(dep.list_snapshots("h1")) == 2  # retention kept the last two
        assert jobs[0].progress is not None and len(jobs[0].progress["deleted"]) == 1


def test_a_schedule_that_never_comes_round_is_refused_and_stops_no_other_source(tmp_path: Path) -> None:
    with Deployment.open(tmp_path / "data") as dep:
        services = Services.build(dep, workers=1)
        config = Config(dep.catalog)
        for never in ("0 0 30 2 *", "0 0 31 4 *"):  # February 30th, April 31st: valid syntax, no next run
            with pytest.raises(InvalidArgument, match="comes round"):
                config.set("schedule", never, source="h1")
        dep.add_source("bad")
        dep.add_source("good")
        # A value stored before it was checked (an older appliance, a hand-edited catalog).
        dep.catalog.set_setting("cfg/source:bad/schedule", '"0 0 30 2 *"')
        config.set("schedule", "*/5 * * * *", source="good")
        clock = [time.time() + 600]
        scheduler = Scheduler(services, now=lambda: clock[0])
        scheduler.run_once()  # the baseline of each source
        clock[0] += 300
        assert scheduler.run_once() == ["good"]


def test_two_appliances_on_one_catalog_submit_each_run_once(data_dir: Path, db_url: str) -> None:
    """Schedulers share nothing but the catalog: the last run is swapped there, so one of them wins each slot."""
    import threading

    with Deployment.open(data_dir, db_url) as dep:
        services = Services.build(dep, workers=0)
        dep.add_source("h1")
        Config(dep.catalog).set("schedule", "*/5 * * * *", source="h1")
        clock = [time.time()]
        appliances = [Scheduler(services, now=lambda: clock[0]) for _ in range(4)]
        appliances[0].run_once()  # the baseline
        for _ in range(5):
            clock[0] += 300
            gate = threading.Barrier(len(appliances))
            submitted: list[list[str]] = []

            def look(scheduler: Scheduler, gate: threading.Barrier = gate, out: list[list[str]] = submitted) -> None:
                gate.wait()
                out.append(scheduler.run_once())

            threads = [threading.Thread(target=look, args=(s,)) for s in appliances]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(submitted) == [[], [], [], ["h1"]]
        assert len(services.jobs.list()) == 5


def _wait_jobs(services: Services, count: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        done = [j for j in services.jobs.list() if j.state in ("done", "failed")]
        if len(done) >= count:
            return
        assert time.monotonic() < deadline, services.jobs.list()
        time.sleep(0.05)


def test_config_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cairn(data, "source", "add", "h1")
    cairn(data, "config", "set", "retention", '{"daily": 7, "weekly": 4}', "--source", "h1")
    cairn(data, "config", "set", "schedule", '"0 3 * * *"')
    shown = cairn_json(data, "config", "show", "--source", "h1")
    assert shown["retention"] == {"value": {"daily": 7, "weekly": 4}, "from": "source:h1"}  # type: ignore[index]
    assert shown["schedule"] == {"value": "0 3 * * *", "from": "global"}  # type: ignore[index]
    bad = cairn(data, "config", "set", "schedule", '"sometimes"', check=False)
    assert bad.returncode == 1 and "cron expression" in bad.stderr


def test_failures_are_mailed_and_a_digest_is_sent(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller

    from .servers import free_port

    class Inbox:
        def __init__(self) -> None:
            self.mails: list[tuple[list[str], str]] = []

        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            self.mails.append((envelope.rcpt_tos, envelope.content.decode()))  # type: ignore[attr-defined]
            return "250 OK"

    inbox = Inbox()
    port = free_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with Deployment.open(tmp_path / "data") as dep:
            services = Services.build(dep, workers=1)
            config = Config(dep.catalog)
            config.set("smtp", {"host": "127.0.0.1", "port": port, "from": "cairn@example.org"})
            config.set("notify_email", "ops@example.org")
            config.set("digest_schedule", "0 * * * *")
            dep.add_source("h1")
            assert services.runner is not None
            services.runner.start()
            try:
                services.jobs.submit("snapshot", {"source": "nope"})  # no such source: fails
                services.jobs.submit("snapshot", {"source": "h1", "name": "ok"}, source_id=dep.source("h1").id)
                _wait_jobs(services, 2)
                clock = [time.time()]
                scheduler = Scheduler(services, now=lambda: clock[0])
                assert scheduler.run_once() == []  # the first look sets the baseline
                clock[0] += 3600
                assert scheduler.run_once() == ["digest"]
                _wait_jobs(services, 3)
            finally:
                services.runner.stop()
        deadline = time.monotonic() + 30
        while len(inbox.mails) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        subjects = [re.search(r"^Subject: (.*)$", body, re.M).group(1).strip() for _, body in inbox.mails]  # type: ignore[union-attr]
        assert any("snapshot job" in s and "failed" in s for s in subjects), subjects
        assert any(s == "Cairn: 1 jobs done, 1 failed" for s in subjects), subjects
        assert all(to == ["ops@example.org"] for to, _ in inbox.mails)
    finally:
        smtp.stop()
