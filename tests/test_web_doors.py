"""The web UI's front doors: a source's clients (SSH keys, the rsync daemon's password), its backup status,
the setup instructions, and the sessions on the dashboard and the jobs page."""

from __future__ import annotations

import re
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from playwright.sync_api import Browser
from werkzeug.serving import make_server

from appliance.accounts import NTLM
from appliance.doors.keys import parse_public_key
from appliance.doors.rsyncd import SECRET
from appliance.doors.smb import GMT
from appliance.services import DoorsInfo
from appliance.words import ago

from .appliance_world import PASSWORD, World, world
from .test_web_ui import browser as browser  # the same headless Chromium, started per test

HOST_KEY = "256 SHA256:N6Kz0YbT1fO6tq0c2lXb2bR9QeWcQv3b8X2y8kXjv0M root@cairn (ED25519)"
DOORS = DoorsInfo(ssh_port=2222, rsyncd_port=8873, ssh_user="cairn", host_keys=(HOST_KEY,), smb_port=445)
SITE = "http://backup.example:8080"  # what the browser reached: the commands name backup.example
ROBOCOPY = (r"robocopy C:\Users \\backup.example\b /MIR /COPY:DAT /DCOPY:T /R:1 /W:1 /XJ /NP "
            r"/LOG:%ProgramData%\Cairn\b.log")  # fmt: skip
TASK = "{http://schemas.microsoft.com/windows/2004/02/mit/task}"


@pytest.fixture
def doors_world(tmp_path: Path) -> Iterator[World]:
    """appliance_world's appliance (sources b of g1, owned by mia, and c of g2) with its front doors open."""
    with world(tmp_path) as w:
        w.services.doors = DOORS
        yield w


def public_key(tmp_path: Path, name: str) -> str:
    path = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f", str(path)], check=True)
    return path.with_suffix(".pub").read_text().strip()


def signed_in(w: World, name: str) -> tuple[FlaskClient, str]:
    """A test client signed in as `name` on SITE, and its CSRF token."""
    client = w.app.test_client()
    reply = client.post("/api/v1/login", json={"name": name, "password": PASSWORD}, base_url=SITE)
    assert reply.status_code == 200
    return client, reply.json["csrf"]  # type: ignore[index]


def html(client: FlaskClient, path: str, status: int = 200) -> str:
    reply = client.get(path, base_url=SITE)
    assert reply.status_code == status
    return reply.get_data(as_text=True)


def element(page: str, ident: str) -> str:
    """The text of the element with id `ident` (up to its closing tag), entities left as they are."""
    found = re.search(rf'<(\w+)[^>]* id="{ident}"[^>]*>(.*?)</\1>', page, re.S)
    assert found, f"no #{ident}"
    return found.group(2)


def unescaped(page: str) -> str:
    return page.replace("&#39;", "'").replace("&#34;", '"').replace("&lt;", "<").replace("&gt;", ">")


@contextmanager
def serving(w: World) -> Iterator[str]:
    """The in-process app on a loopback port, for the browser."""
    server = make_server("127.0.0.1", 0, w.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_an_admin_registers_keys_and_a_password_in_the_browser(doors_world: World, browser: Browser,
                                                                tmp_path: Path) -> None:  # fmt: skip
    keys = doors_world.services.keys
    with serving(doors_world) as base:
        page = browser.new_page(accept_downloads=True)
        errors: list[str] = []  # console errors: among them every refusal by the pages' security policy
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(base + "/login")
        page.fill("input[name=name]", "root")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector("#sources")
        page.goto(base + "/sources/b")

        page.get_by_label("Public key").fill("id_ed25519 from my laptop")
        page.click("#add-key button[type=submit]")
        assert "not an OpenSSH public key" in page.locator("#clients-error[role=alert]").inner_text()
        assert "No keys yet." in page.locator("#keys").inner_text() and keys.of("b") == []
        assert page.get_by_label("Public key").input_value() == "id_ed25519 from my laptop"  # kept, to correct

        pasted = public_key(tmp_path, "laptop")
        page.get_by_label("Public key").fill(pasted)
        page.click("#add-key button[type=submit]")
        fingerprint = parse_public_key(pasted)[1]
        listed = page.locator("#keys").inner_text()
        assert fingerprint in listed and "root@laptop" in listed
        assert [k.fingerprint for k in keys.of("b")] == [fingerprint]

        page.fill("#generated-name", "nas-in-the-attic")
        with page.expect_download() as download:
            page.click("#generate-key button[type=submit]")
        assert download.value.suggested_filename == "cairn-b-key"
        private = tmp_path / "cairn-b-key"
        download.value.save_as(private)
        private.chmod(0o600)
        assert private.read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
        derived = subprocess.run(["ssh-keygen", "-y", "-f", str(private)], check=True, capture_output=True, text=True)
        generated = parse_public_key(derived.stdout)[1]
        page.reload()
        listed = page.locator("#keys").inner_text()
        assert generated in listed and "nas-in-the-attic" in listed
        assert "PRIVATE KEY" not in page.content()  # the private half was the download's alone

        page.click("#keys button[aria-label='Remove key root@laptop']")
        assert fingerprint not in page.locator("#keys").inner_text()
        assert [k.fingerprint for k in keys.of("b")] == [generated]

        assert "not set" in page.locator("#rsync-password").inner_text()
        page.click("#password-generate button")
        secret = page.locator("#new-secret code").inner_text()
        assert len(secret) >= 24 and doors_world.dep.catalog.setting(SECRET + "b") == secret
        assert secret in page.locator("#nas-secret").inner_text()  # ready to paste, on this one page
        page.goto(base + "/sources/b")
        assert page.locator("#rsync-password strong").inner_text() == "set"
        assert secret not in page.content() and page.locator("#new-secret").count() == 0
        page.click("#password-remove button")
        assert page.locator("#rsync-password strong").inner_text() == "not set"
        assert doors_world.dep.catalog.setting(SECRET + "b") is None

        rsync = page.locator("#linux-rsync").inner_text()
        assert "rsync -aHAXS --numeric-ids --delete -e 'ssh -p 2222 -i /root/.ssh/cairn-b-key'" in rsync
        assert rsync.endswith("/ cairn@127.0.0.1:")  # the host the browser reached, without the web port
        assert HOST_KEY in page.locator("#linux").locator("xpath=following-sibling::ol[1]").inner_text()
        refused = "Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"
        assert errors == [refused], errors  # the bad key's answer, and nothing the security policy refused


def test_the_instructions_name_the_host_the_ports_and_the_files(doors_world: World) -> None:
    client, _ = signed_in(doors_world, "root")
    page = html(client, "/sources/b").replace("&#39;", "'").replace("&lt;", "<").replace("&gt;", ">")
    ssh = "-e 'ssh -p 2222 -i /root/.ssh/cairn-b-key'"
    rsync = element(page, "linux-rsync")
    assert rsync.startswith(f"rsync -aHAXS --numeric-ids --delete {ssh}") and rsync.endswith(" / cairn@backup.example:")
    assert all(f"--exclude='{d}/*'" in rsync for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/media"))
    service, timer = element(page, "linux-service"), element(page, "linux-timer")
    assert "cairn-backup.service" in service and "Type=oneshot" in service
    assert f"ExecStart=/usr/bin/{rsync}" in service
    assert "cairn-backup.timer" in timer
    assert all(line in timer.splitlines() for line in ("OnCalendar=daily", "Persistent=true", "RandomizedDelaySec=1h"))
    restore = element(page, "linux-restore")
    assert f"rsync -aHAXS --numeric-ids {ssh} cairn@backup.example:snapshots/s1/etc/ /restore/etc/" in restore
    assert "cairn@backup.example:current/home/" in restore
    plist = element(page, "mac-plist")
    assert "<key>StartCalendarInterval</key>" in plist
    assert "<string>ssh -p 2222 -i /var/root/.ssh/cairn-b-key</string>" in plist
    assert "/Library/LaunchDaemons/org.cairn.backup.plist" in page
    nas = element(page, "nas-rsync")
    assert nas == ("rsync -aHAXS --numeric-ids --delete --password-file=/root/cairn-b.secret /volume1/ "
                   "rsync://b@backup.example:8873/b/")  # fmt: skip
    assert "rsync://b@backup.example:8873/b@snapshots/s1/ /volume1/restore/" in element(page, "nas-restore")
    assert page.count(HOST_KEY) == 3  # Linux, macOS and NAS each show it
    assert "backup.example:8080" not in page

    v6 = doors_world.app.test_client()
    v6.post("/api/v1/login", json={"name": "root", "password": PASSWORD}, base_url="http://[::1]:8080")
    assert "/ cairn@[::1]:" in v6.get("/sources/b", base_url="http://[::1]:8080").get_data(as_text=True)

    doors_world.services.doors = DoorsInfo(None, 8873, "cairn", ())  # the rsync daemon alone
    page = html(client, "/sources/b")
    assert 'id="linux-rsync"' not in page and "rsync over SSH is off" in element(page, "ssh-off")
    assert 'id="nas-rsync"' in page


def test_the_restore_page_says_how_to_bring_a_path_back_onto_the_client(doors_world: World) -> None:
    client, _ = signed_in(doors_world, "root")
    page = unescaped(html(client, "/sources/b/snapshots/s1/restore?path=/hello.txt"))
    assert "<title>Restore /hello.txt · Cairn</title>" in page and page.count('id="onto-client-ssh"') == 1
    keep = "--backup --suffix=.before-restore"
    assert element(page, "onto-client-ssh") == (
        f"rsync -aHAXS --numeric-ids {keep} -e 'ssh -p 2222 -i /root/.ssh/cairn-b-key' \\\n"
        "  cairn@backup.example:snapshots/s1/hello.txt /hello.txt"
    )
    assert element(page, "onto-client-rsyncd") == (
        f"rsync -aHAXS --numeric-ids {keep} --password-file=/root/cairn-b.secret \\\n"
        "  rsync://b@backup.example:8873/b@snapshots/s1/hello.txt /hello.txt"
    )
    assert "\\\\backup.example\\b\\hello.txt" in element(page, "onto-client-smb")
    doors_world.services.doors = None
    page = html(client, "/sources/b/snapshots/s1/restore?path=/hello.txt")
    assert "front doors are off" in element(page, "onto-client-off") and 'id="onto-client-ssh"' not in page


def test_with_the_doors_off_the_page_says_how_to_open_them(doors_world: World) -> None:
    doors_world.services.doors = None
    client, _ = signed_in(doors_world, "root")
    page = html(client, "/sources/b")
    assert "The front doors are off" in element(page, "doors-off")
    assert "<pre>cairn serve --mount DIR --ssh HOST:PORT --rsyncd HOST:PORT --smb HOST:PORT</pre>" in page
    assert "make run" in page and 'id="linux-rsync"' not in page and 'id="nas-rsync"' not in page
    assert 'id="win-share"' not in page and "robocopy" not in page


def test_an_owner_sees_status_and_instructions_but_may_not_change_clients(doors_world: World,
                                                                          tmp_path: Path) -> None:  # fmt: skip
    services = doors_world.services
    key = services.keys.add("b", public_key(tmp_path, "laptop"))
    mia, csrf = signed_in(doors_world, "mia")  # a member of g1 who owns b: she may see and restore it
    page = html(mia, "/sources/b")
    assert "Backup status" in element(page, "backup-status") and 'id="linux-rsync"' in page
    assert key.fingerprint in element(page, "keys")
    for form in ("add-key", "generate-key", "password-generate", "password-remove", "Remove key"):
        assert form not in page
    posts = [("/sources/b/keys", {"key": public_key(tmp_path, "other")}), ("/sources/b/keys/generate", {}),
             (f"/sources/b/keys/{key.id}/remove", {}), ("/sources/b/rsync-password", {"action": "generate"}),
             ("/sources/b/rsync-password", {"action": "remove"})]  # fmt: skip
    for path, form in posts:
        assert mia.post(path, data={"csrf": csrf, **form}, base_url=SITE).status_code == 403, path
    assert services.keys.of("b") == [key] and services.deployment.catalog.setting(SECRET + "b") is None
    html(mia, "/sources/c", 404)  # gus's source, in g2: it does not exist for her
    assert mia.post("/sources/c/rsync-password", data={"csrf": csrf}, base_url=SITE).status_code == 404
    root, _ = signed_in(doors_world, "root")
    assert root.post("/sources/b/rsync-password", data={"action": "generate"}, base_url=SITE).status_code == 403
    assert services.deployment.catalog.setting(SECRET + "b") is None  # no CSRF token, no password


def test_the_dashboard_colours_sources_by_their_last_backup(doors_world: World) -> None:
    dep, services = doors_world.dep, doors_world.services
    dep.add_source("fresh")
    services.accounts.assign_source("fresh", "g1", None)
    client, _ = signed_in(doors_world, "root")
    page = html(client, "/")
    assert 'class="status status-red"' in element(page, "source-fresh")
    assert "never backed up" in element(page, "source-fresh")
    assert "status-green" in element(page, "source-b")
    counts = re.sub(r"<[^>]+>|\s+", " ", element(page, "source-counts"))
    assert "2 ok" in counts and "0 stale" in counts and "0 failing" in counts and "1 never backed up" in counts

    dep.create_snapshot("fresh", "first")
    page = html(client, "/")
    assert "status-green" in element(page, "source-fresh") and "just now" in element(page, "source-fresh")
    assert "3 ok" in re.sub(r"<[^>]+>|\s+", " ", element(page, "source-counts"))

    failed = services.sessions.begin("b", "rsyncd", "10.0.0.7", "b")
    services.sessions.end(failed.id, reason="rsync exited with status 23: some files could not be transferred")
    running = services.sessions.begin("c", "ssh", "10.0.0.8", "gus-laptop")
    page = html(client, "/")
    assert "status-amber" in element(page, "source-b") and "status 23" in element(page, "source-b")
    running_table = element(page, "running-sessions")
    assert "gus-laptop" in running_table and "10.0.0.7" not in running_table
    mia, _ = signed_in(doors_world, "mia")
    assert "No backup sessions are running." in html(mia, "/")  # c's session is not hers to see
    source_page = html(client, "/sources/c")
    assert "1 session running now" in re.sub(r"\s+", " ", element(source_page, "backup-status"))
    services.sessions.end(running.id)


def test_the_jobs_page_lists_the_sessions_one_may_see(doors_world: World) -> None:
    sessions = doors_world.services.sessions
    done = sessions.begin("b", "ssh", "192.0.2.10", "mia-laptop")
    sessions.end(done.id, bytes_received=3 * 1024 * 1024, files_changed=42)
    sessions.took(done.id, "s1")
    other = sessions.begin("c", "rsyncd", "192.0.2.20", "c")
    sessions.end(other.id, reason="the client disconnected")
    mia, _ = signed_in(doors_world, "mia")
    table = element(html(mia, "/jobs"), "sessions")
    rows = re.findall(r'<tr class="session">(.*?)</tr>', table, re.S)
    assert len(rows) == 1
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", rows[0], re.S)]
    assert cells[:4] == ["b", "rsync over SSH", "192.0.2.10", "mia-laptop"]
    assert cells[6:10] == ["3.0 MiB", "42", "done", "s1"] and cells[10] == ""
    assert re.fullmatch(r"\d+\.\d s", cells[5])
    root, _ = signed_in(doors_world, "root")
    table = element(html(root, "/jobs"), "sessions")
    assert table.count('<tr class="session">') == 2 and "the client disconnected" in table
    assert table.index("192.0.2.20") < table.index("192.0.2.10")  # newest first


def test_ages_read_as_people_say_them() -> None:
    assert [ago(a) for a in (None, 5, 125, 3 * 3600 + 59, 47 * 3600, 72 * 3600)] == [
        "never", "just now", "2 min ago", "3 h ago", "47 h ago", "3 d ago"]  # fmt: skip


def test_windows_clients_get_the_share_robocopy_and_previous_versions(doors_world: World) -> None:
    root, _ = signed_in(doors_world, "root")
    page = unescaped(html(root, "/sources/b"))
    assert element(page, "win-share") == r"\\backup.example\b"
    assert element(page, "win-net-use") == r"net use Z: \\backup.example\b /user:root /persistent:yes"
    assert element(page, "win-cmdkey") == "cmdkey /add:backup.example /user:root /pass"
    backup = element(page, "win-backup").splitlines()
    assert backup == [r'if not exist "%ProgramData%\Cairn" mkdir "%ProgramData%\Cairn"', ROBOCOPY]
    switches = element(page, "robocopy-switches")
    assert all(f"<code>{s}</code>" in switches for s in ("/MIR", "/COPY:DAT", "/DCOPY:T", "/R:1 /W:1", "/XJ", "/NP"))
    assert "120 seconds after robocopy disconnects" in re.sub(r"\s+", " ", element(page, "smb-session"))
    s1 = doors_world.dep.list_snapshots("b")[0]
    token = time.strftime(GMT, time.gmtime(s1.created))  # Previous Versions name snapshots by their time in UTC
    assert element(page, "win-restore") == rf"robocopy \\backup.example\b\{token}\%USERNAME%\Documents C:\restore /E"
    assert "Previous Versions" in page and 'href="/sources/b/robocopy-task.xml"' in page
    assert 'id="win-schtasks"' in page and "cmdkey" in page
    for note in ("smb-port", "smb-no-password", "smb-read-only", "smb-unserved", "smb-off"):
        assert f'id="{note}"' not in page, note

    doors_world.services.doors = DoorsInfo(2222, 8873, "cairn", (HOST_KEY,), smb_port=4450)
    port = re.sub(r"\s+", " ", element(html(root, "/sources/b"), "smb-port"))
    assert "port 4450" in port and "Windows only talks SMB on port 445" in port
    assert root.get("/api/v1/sources/b/smb", base_url=SITE).json["windows_port"] is False  # type: ignore[index]

    doors_world.services.doors = DoorsInfo(2222, 8873, "cairn", (HOST_KEY,))  # the SMB door shut
    page = html(root, "/sources/b")
    assert 'id="win-share"' not in page and "robocopy" not in page and 'id="linux-rsync"' in page
    assert "cairn serve --smb HOST:PORT" in element(page, "smb-off")


def test_a_reader_without_an_smb_password_is_told_so(doors_world: World) -> None:
    mia_id = doors_world.services.accounts.user("mia").id
    doors_world.dep.catalog.set_setting(f"{NTLM}{mia_id}", None)  # as if her password predated the SMB door
    mia, _ = signed_in(doors_world, "mia")  # she owns b: she may see and restore it, not back it up
    page = unescaped(html(mia, "/sources/b"))
    assert "set your password again" in re.sub(r"\s+", " ", element(page, "smb-no-password")).lower()
    assert "only read this share" in element(page, "smb-read-only")
    assert element(page, "win-net-use") == r"net use Z: \\backup.example\b /user:mia /persistent:yes"
    assert 'id="win-restore"' in page
    assert ROBOCOPY not in page and "robocopy-task.xml" not in page and 'id="win-schtasks"' not in page
    answer = mia.get("/api/v1/sources/b/smb", base_url=SITE).json
    assert answer is not None and answer["access"] == "read" and answer["password_set"] is False
    assert answer["share"] == r"\\backup.example\b"


def test_sources_samba_cannot_share_are_said_to_be_unserved(doors_world: World) -> None:
    dep, accounts = doors_world.dep, doors_world.services.accounts
    for name in ("Homes", "B"):  # Samba's own section, and a case-twin of b that comes first (by name)
        dep.add_source(name)
        accounts.assign_source(name, "g1", None)
    root, _ = signed_in(doors_world, "root")
    for name in ("Homes", "b"):
        page = html(root, f"/sources/{name}")
        assert "not served over SMB" in element(page, "smb-unserved") and "robocopy" not in page
        html(root, f"/sources/{name}/robocopy-task.xml", 404)
        assert root.get(f"/api/v1/sources/{name}/smb", base_url=SITE).json["share"] is None  # type: ignore[index]
    assert element(html(root, "/sources/B"), "win-share") == r"\\backup.example\B"  # the first twin's share


def test_the_task_scheduler_task_runs_robocopy_nightly(doors_world: World) -> None:
    ops, _ = signed_in(doors_world, "ops")  # an operator of g1: he may back b up
    reply = ops.get("/sources/b/robocopy-task.xml", base_url=SITE)
    assert reply.status_code == 200
    assert reply.headers["Content-Disposition"] == 'attachment; filename="cairn-b.xml"'
    body = reply.get_data()
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert PASSWORD.encode() not in body and b"Password</" not in body.replace(b"<LogonType>Password", b"")
    task = ET.fromstring(body)
    assert task.tag == f"{TASK}Task" and task.get("version") == "1.2"
    runs = [(e.findtext(f"{TASK}Command"), e.findtext(f"{TASK}Arguments")) for e in task.iter(f"{TASK}Exec")]
    assert (r"%SystemRoot%\System32\robocopy.exe", ROBOCOPY.removeprefix("robocopy ")) in runs
    assert runs[0][1] == r'/d /c if not exist "%ProgramData%\Cairn" mkdir "%ProgramData%\Cairn"'  # the log's folder
    trigger = task.find(f"{TASK}Triggers/{TASK}CalendarTrigger")
    assert trigger is not None
    assert trigger.findtext(f"{TASK}StartBoundary", "").endswith("T01:00:00")
    assert trigger.findtext(f"{TASK}RandomDelay") == "PT30M"
    assert trigger.findtext(f"{TASK}ScheduleByDay/{TASK}DaysInterval") == "1"
    principal = f"{TASK}Principals/{TASK}Principal/{TASK}"
    assert task.findtext(principal + "LogonType") == "Password"  # run whether the user is logged on or not
    assert task.findtext(principal + "RunLevel") == "HighestAvailable"
    settings = f"{TASK}Settings/{TASK}"
    assert task.findtext(settings + "StartWhenAvailable") == "true"
    assert task.findtext(settings + "ExecutionTimeLimit") == "PT12H"

    mia, _ = signed_in(doors_world, "mia")
    assert mia.get("/sources/b/robocopy-task.xml", base_url=SITE).status_code == 403  # she may only see b
    assert mia.get("/sources/c/robocopy-task.xml", base_url=SITE).status_code == 404  # c is not hers to see
    anonymous = doors_world.app.test_client().get("/sources/b/robocopy-task.xml", base_url=SITE)
    assert anonymous.status_code == 302 and "/login" in anonymous.headers["Location"]
    doors_world.services.doors = DoorsInfo(2222, 8873, "cairn", (HOST_KEY,))
    assert ops.get("/sources/b/robocopy-task.xml", base_url=SITE).status_code == 404  # no SMB door, no task


def test_a_host_header_that_is_no_host_name_gives_the_placeholder(doors_world: World) -> None:
    odd = {"Host": "x;calc&.exe:8080", **doors_world.headers("admin")}
    client = doors_world.app.test_client()
    page = unescaped(client.get("/sources/b", headers=odd).get_data(as_text=True))
    assert element(page, "win-share") == r"\\APPLIANCE\b" and "calc" not in page
    assert element(page, "win-cmdkey") == "cmdkey /add:APPLIANCE /user:root /pass"
    body = client.get("/sources/b/robocopy-task.xml", headers=odd).get_data()
    assert b"calc" not in body and rb"C:\Users \\APPLIANCE\b /MIR" in body
    v6 = client.get("/api/v1/sources/b/smb", headers={"Host": "[fd00::1]:8080", **doors_world.headers("admin")})
    assert v6.json is not None and v6.json["share"] == r"\\fd00--1.ipv6-literal.net\b"  # how UNC names IPv6


def test_the_api_says_where_smb_listens_and_what_the_share_is(doors_world: World) -> None:
    root, _ = signed_in(doors_world, "root")
    assert root.get("/api/v1/doors", base_url=SITE).json["smb"] == {"port": 445}  # type: ignore[index]
    answer = root.get("/api/v1/sources/b/smb", base_url=SITE).json
    assert answer is not None
    assert answer["share"] == r"\\backup.example\b" and answer["access"] == "write" and answer["served"] is True
    assert answer["commands"]["win_robocopy"] == ROBOCOPY and answer["snapshot"] == "s1"
    assert answer["session_idle"] == 120 and answer["password_set"] is True and answer["windows_port"] is True
    assert root.get("/api/v1/sources/c/smb", base_url=SITE).status_code == 200
    gus, _ = signed_in(doors_world, "gus")
    assert gus.get("/api/v1/sources/b/smb", base_url=SITE).status_code == 404
    doors_world.services.doors = None
    assert root.get("/api/v1/doors", base_url=SITE).json["smb"] is None  # type: ignore[index]
    shut = root.get("/api/v1/sources/b/smb", base_url=SITE).json
    assert shut is not None and shut["port"] is None and shut["share"] is None and shut["commands"] == {}
