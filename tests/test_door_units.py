"""The front doors' pieces without servers: rsync commands, rsync logs, keys, snapshots that wait or skip, status."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.doors.command import ROOT, parse
from appliance.doors.keys import generate_pair, parse_public_key
from appliance.doors.sessions import Stats, read_rsync_log
from appliance.scheduler import Scheduler
from appliance.services import Services
from appliance.status import alarm_stale, statuses
from engine.backup import backup
from engine.deployment import Deployment
from engine.errors import Exists, InvalidArgument

HINT = "rsync -a / cairn@APPLIANCE:"


@pytest.mark.parametrize(
    ("command", "sending", "paths"),
    [
        ("rsync --server -lHogDtpAXrSe.iLsfxCIvu --numeric-ids . /", False, [f"{ROOT}/"]),
        ("rsync --server -logDtpre.iLsfxCIvu --delete . home/", False, [f"{ROOT}/home/"]),
        ("rsync --server -logDtpre.iLsfxCIvu . ''", False, [f"{ROOT}/"]),
        ("/usr/bin/rsync --server -re.iLsfxCIvu --partial-dir=.p . my\\ dir", False, [f"{ROOT}/my dir"]),
        ("rsync --server --sender -logDtpre.iLsfxCIvu . snapshots/s1/etc/", True, [f"{ROOT}/snapshots/s1/etc/"]),
        (
            "rsync --server --sender -re.iLsfxCIvu . current/a current/b",
            True,
            [f"{ROOT}/current/a", f"{ROOT}/current/b"],
        ),
        ("rsync --server -B1024 -re.iLsfxCIvu --bwlimit=100 . x", False, [f"{ROOT}/x"]),
    ],
)
def test_rsync_commands_a_client_sends_are_rooted(command: str, sending: bool, paths: list[str]) -> None:
    cmd = parse(command, HINT)
    assert (cmd.sending, cmd.paths) == (sending, paths)
    assert cmd.argv(log_file="/l", timeout=60)[:4] == ["/usr/bin/rsync", "--server", "--log-file=/l", "--timeout=60"]


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (None, "this account only runs rsync"),
        ("sh -c id", "only rsync runs here"),
        ("sudo rsync --server -re.iLsfxCIvu . /", "only rsync runs here"),
        ("rsync --server -sre.iLsfxCIvu .", "--protect-args is not supported"),
        ("rsync --server -re.iLsfxCIvu . ../other/", "'..' is not allowed"),
        ("rsync --server -re.iLsfxCIvu --temp-dir=../../tmp . x", "'..' is not allowed"),
        ("rsync --server -re.iLsfxCIvu --log-file=/etc/x . x", "--log-file is set by the appliance"),
        ("rsync --server --daemon .", "rsync daemon has its own port"),
        ("rsync --server -re.iLsfxCIvu --write-devices . x", "--write-devices is not allowed"),
        ("rsync --server --sender -re.iLsfxCIvu . /etc/", "restore from current/"),
        ("rsync --server -re.iLsfxCIvu --rsh=sh . x", "is not allowed here"),
        ("rsync --server -rQe.iLsfxCIvu . x", "-Q is not allowed"),
        ("rsync --server -re.iLsfxCIvu", "a '.' before its paths"),
        ("rsync --server -re.iLsfxCIvu x . y", "unexpected argument 'x' before the paths"),
        ("rsync --server 'unclosed", "cannot read the command"),
    ],
)
def test_other_commands_are_refused_in_words(command: str | None, says: str) -> None:
    with pytest.raises(InvalidArgument, match=re.escape(says)):
        parse(command, HINT)


def test_an_rsync_log_gives_bytes_and_changes() -> None:
    log = """2026/12/03 04:03:19 [21740] receiving file list
2026/12/03 04:03:19 [21740] *deleting   d/f
2026/12/03 04:03:19 [21740] >f.st...... g
2026/12/03 04:03:19 [21740] cd+++++++++ d/
2026/12/03 04:03:19 [21740] sent 64 bytes  received 1,171 bytes  total size 11"""
    assert read_rsync_log(log) == Stats(1171, 3)
    assert read_rsync_log("") == Stats(None, 0)


def test_public_keys_are_checked_and_fingerprinted(tmp_path: Path) -> None:
    _private, public = generate_pair("me@host")
    key, fingerprint, comment = parse_public_key(public + "\n")
    assert key == " ".join(public.split()[:2]) and comment == "me@host" and fingerprint.startswith("SHA256:")
    (tmp_path / "k.pub").write_text(public)
    import subprocess

    listed = subprocess.run(["ssh-keygen", "-l", "-f", str(tmp_path / "k.pub")], capture_output=True, text=True)
    assert fingerprint in listed.stdout  # the same fingerprint ssh-keygen prints
    kind, b64 = public.split()[:2]
    for bad in ("", "ssh-ed25519", f"command=\"sh\" {public}", f"ssh-rsa {b64}", f"{kind} {b64[:-4]}!!!!",
                f"{public}\n{public}", "-----BEGIN OPENSSH PRIVATE KEY-----"):  # fmt: skip
        with pytest.raises(InvalidArgument):
            parse_public_key(bad)


def _world(tmp_path: Path) -> tuple[Deployment, Services]:
    dep = Deployment.open(tmp_path / "data")
    services = Services.build(dep, workers=1)
    dep.add_source("h1")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("data")
    backup(dep.working_tree("h1"), dep.blobs, str(tmp_path / "src"))
    return dep, services


def test_a_key_logs_in_to_one_source(tmp_path: Path) -> None:
    dep, services = _world(tmp_path)
    with dep:
        dep.add_source("h2")
        public = generate_pair("c")[1]
        services.keys.add("h1", public)
        with pytest.raises(Exists, match="already registered for source 'h1'"):
            services.keys.add("h2", public)
        assert [k.source for k in services.keys.of()] == ["h1"]


def test_scheduled_snapshots_wait_for_sessions_and_skip_when_nothing_changed(tmp_path: Path) -> None:
    dep, services = _world(tmp_path)
    with dep:
        Config(dep.catalog).set("schedule", "*/5 * * * *", source="h1")
        clock = [time.time()]
        scheduler = Scheduler(services, now=lambda: clock[0])
        scheduler.run_once()
        session = services.backups.begin("h1", "ssh", "10.0.0.1", "key")
        clock[0] += 300
        assert scheduler.run_once() == []  # due, but a session writes: it waits
        services.sessions.end(session.id)
        assert scheduler.run_once() == ["h1"]
        assert services.runner is not None
        services.runner.start()
        try:
            first = _wait_job(services, 1)
            assert first.state == "done" and first.progress is not None and "unchanged" not in first.progress
            clock[0] += 300
            assert scheduler.run_once() == ["h1"]
            second = _wait_job(services, 2)
            assert second.progress is not None and second.progress["unchanged"] is True
            assert len(dep.list_snapshots("h1")) == 1
            Config(dep.catalog).set("snapshot_unchanged", True, source="h1")
            clock[0] += 300
            assert scheduler.run_once() == ["h1"]
            assert _wait_job(services, 3).state == "done"
            assert len(dep.list_snapshots("h1")) == 2  # forced
        finally:
            services.runner.stop()


def test_a_session_snapshot_waits_for_other_sessions_and_is_noted_on_the_session(tmp_path: Path) -> None:
    dep, services = _world(tmp_path)
    with dep:
        other = services.backups.begin("h1", "rsyncd", "10.0.0.2", "h1")
        mine = services.backups.begin("h1", "ssh", "10.0.0.1", "key")
        services.backups.end(mine.id, None, Stats(10, 1))
        assert services.runner is not None
        services.runner.start()
        try:
            time.sleep(1.5)
            assert dep.list_snapshots("h1") == []  # the other session still writes
            services.backups.end(other.id, "rsync exited with code 12: cut")
            job = _wait_job(services, 1)
            assert job.state == "done", job.error
        finally:
            services.runner.stop()
        (snap,) = dep.list_snapshots("h1")
        done, failed = services.sessions.get(mine.id), services.sessions.get(other.id)
        assert (done.state, done.snapshot, done.bytes_received) == ("done", snap.name, 10)
        assert (failed.state, failed.snapshot, failed.reason) == ("failed", None, "rsync exited with code 12: cut")


def test_status_colours_and_a_stale_source_mails_once(tmp_path: Path) -> None:
    dep, services = _world(tmp_path)
    with dep:
        mails: list[tuple[str, str]] = []
        Config(dep.catalog).set("notify_email", "ops@example.org")
        Config(dep.catalog).set("stale_after", 2, source="h1")
        now = time.time()
        (st,) = statuses(services, now)
        assert (st.colour, st.last_backup) == ("red", None)
        assert alarm_stale(services, lambda to, subject, body, stored: mails.append((to, subject)), now) == []
        dep.create_snapshot("h1")
        assert statuses(services, now + 60)[0].colour == "green"
        failed = services.sessions.begin("h1", "ssh", "c", "k")
        services.sessions.end(failed.id, reason="cut")
        assert statuses(services, time.time() + 60)[0].colour == "amber"
        later = time.time() + 3 * 3600
        send = lambda to, subject, body, stored: mails.append((to, subject))  # noqa: E731
        assert statuses(services, later)[0].colour == "red"
        assert alarm_stale(services, send, later) == ["h1"]
        assert alarm_stale(services, send, later + 600) == []  # once per stale spell
        assert mails == [("ops@example.org", "Cairn: source h1 is stale")]
        with pytest.raises(InvalidArgument):
            Config(dep.catalog).set("stale_after", 0)


def _wait_job(services: Services, count: int, timeout: float = 60) -> object:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [j for j in services.jobs.list() if j.kind == "snapshot"]
        if len(jobs) >= count and jobs[0].state in ("done", "failed"):
            return jobs[0]
        assert time.monotonic() < deadline, jobs
        time.sleep(0.1)


assert threading  # the runner's workers are threads; nothing here starts its own


def test_a_failed_session_is_mailed_and_takes_no_snapshot(tmp_path: Path) -> None:
    dep, services = _world(tmp_path)
    with dep:
        Config(dep.catalog).set("notify_email", "ops@example.org", source="h1")
        mails: list[tuple[str, str, str]] = []
        services.notifier.send = lambda to, subject, body, stored=None: mails.append((to, subject, body))  # type: ignore[method-assign]
        session = services.backups.begin("h1", "ssh", "10.0.0.9", "laptop key")
        services.backups.end(session.id, "rsync exited with code 12: cut", Stats(5, 0))
        deadline = time.monotonic() + 10
        while not mails:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        ((to, subject, body),) = mails
        assert to == "ops@example.org" and subject == f"Cairn: backup session #{session.id} of h1 failed"
        assert "10.0.0.9" in body and "code 12: cut" in body
        assert services.jobs.list() == []  # no snapshot job
        dep.check_writable()
        Config(dep.catalog).set("snapshot_after_session", False, source="h1")
        quiet = services.backups.begin("h1", "ssh", "10.0.0.9", "laptop key")
        services.backups.end(quiet.id, None)
        assert services.jobs.list() == [] and services.sessions.get(quiet.id).state == "done"
