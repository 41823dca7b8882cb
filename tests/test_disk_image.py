"""The disk image: built (`make image`) and booted under qemu (software emulation).

- A first boot (BIOS): signed in to over HTTPS with the password its console prints (which the console
  stops showing once it is changed), backed up into over the SSH door, restored from, powered off; booted
  again, the snapshot still there.
- An upgrade: the image of the version before the catalog's last migration boots with a static address
  from its NoCloud seed and is backed up into; then this version's image (under UEFI) boots on the same
  data disk, migrates the catalog, and finds, restores and searches what the older one kept.

The image is built once per content of its inputs (appliance/system/ and Cairn's sources) into
IMAGE_CACHE; a run with the same inputs boots the one built before; CAIRN_IMAGE=FILE boots that one.
`-m "not image"` leaves the tests out.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from appliance.doors.sshd import HOST_KEYS

from .servers import free_port

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]  # a build, then boots

REPO = Path(__file__).resolve().parent.parent
IMAGE_CACHE = Path(os.environ.get("CAIRN_IMAGE_CACHE", "/var/cache/cairn-image"))
READY = re.compile(
    r"cairn ready: (?P<urls>.*?)fingerprint (?P<fp>[0-9A-F:]{95})(?: admin one-time password (?P<pw>\S+))?"
)
OVMF = "/usr/share/ovmf/OVMF.fd"  # UEFI firmware (Debian's ovmf); without it, SeaBIOS
BOOT_WAIT = 300  # seconds to the console's "cairn ready" line; a boot takes about a minute under TCG here
STATIC = "10.0.2.50"  # the upgrade's machines take this address from their seed (qemu's network is 10.0.2.0/24)
SEED_PASSWORD = "the seed's password"


def _git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()


def _inputs() -> str:
    """The hash of everything the image holds from this repository."""
    files = _git("ls-files", "--cached", "--others", "--exclude-standard",  # new files too: the build takes them
                 "appliance", "engine", "dav", "vfs", "image", "pyproject.toml").split()  # fmt: skip
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + (REPO / name).read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image() -> Path:
    given = os.environ.get("CAIRN_IMAGE")  # an image built by hand (`make image`), for a quick loop
    if given:
        return Path(given)
    built = IMAGE_CACHE / _inputs()
    if not (built / "cairn.qcow2").exists():
        shutil.rmtree(built, ignore_errors=True)
        started = time.monotonic()
        done = subprocess.run([str(REPO / "appliance/system/build-image.sh"), str(built)], capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"image built in {time.monotonic() - started:.0f} s")
        (built / "cairn.raw").unlink()  # the qcow2 is what boots
    return built / "cairn.qcow2"


def _catalog_head(commit: str) -> str:
    found = re.search(r'^HEAD = "(\w+)"', _git("show", f"{commit}:engine/catalog/db.py"), re.M)
    assert found
    return found[1]


@pytest.fixture(scope="module")
def older_image(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This image with the Cairn of the commit before the newest migration was added in it: the version
    whose catalog that migration upgrades."""
    added = _git("log", "-1", "--diff-filter=A", "--format=%H", "--", "engine/catalog/migrations/versions")
    assert _git("rev-parse", "--is-shallow-repository") == "false", "the older version is in the history: unshallow"
    commit = _git("rev-parse", f"{added}^")
    assert _catalog_head(commit) != _catalog_head("HEAD")
    work = tmp_path_factory.mktemp("older")
    (work / "src").mkdir()
    tree = subprocess.run(["git", "archive", commit], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(work / "src")], input=tree, check=True)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(work), str(work / "src")],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = work.glob("cairn_backup-*.whl")
    raw, root = work / "cairn.raw", work / "root"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(image), str(raw)], check=True)
    start = int(subprocess.run(["partx", "-g", "-o", "START", "-n", "3", str(raw)], capture_output=True, text=True,
                               check=True).stdout)  # fmt: skip
    root.mkdir()
    subprocess.run(["mount", "-o", f"loop,offset={start * 512}", str(raw), str(root)], check=True)
    try:
        for m in ("dev", "proc"):
            subprocess.run(["mount", "--bind", f"/{m}", str(root / m)], check=True)
        shutil.copy(wheel, root / "tmp")
        subprocess.run(["chroot", str(root), "/opt/cairn/bin/python", "-m", "pip", "install", "-q", "--no-index",
                        "--no-deps", "--force-reinstall", f"/tmp/{wheel.name}"], check=True, capture_output=True,
                       env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})  # fmt: skip
        (root / "tmp" / wheel.name).unlink()
    finally:
        for m in ("proc", "dev", ""):
            subprocess.run(["umount", str(root / m)], check=False)
    print(f"the older image: Cairn of {commit[:10]}, catalog {_catalog_head(commit)}")
    return raw


def overlay(base: Path, disk: Path) -> Path:
    """A disk that writes beside `base` and leaves it as it is."""
    kind = "raw" if base.suffix == ".raw" else "qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", kind, str(disk)], check=True)
    return disk


class Machine:
    """One boot of the image: its console, and the appliance's HTTPS and SSH ports on loopback."""

    def __init__(self, tmp: Path, disk: Path, data: Path, seed: Path, boot: int, uefi: bool = False,
                 address: str = ""):  # fmt: skip
        """`address`: where the machine is on qemu's network (empty: the one qemu's DHCP gives)."""
        self.console = tmp / f"console-{boot}.log"
        self.https, self.ssh = free_port(), free_port()
        self.qmp = tmp / f"qmp-{boot}.sock"
        forwards = f"hostfwd=tcp:127.0.0.1:{self.https}-{address}:443,hostfwd=tcp:127.0.0.1:{self.ssh}-{address}:22"
        self.proc = subprocess.Popen([
            "qemu-system-x86_64", "-machine", "pc", "-cpu", "max", "-smp", "2", "-m", "1536", "-nographic",
            *(["-bios", OVMF] if uefi else []),
            "-serial", f"file:{self.console}", "-qmp", f"unix:{self.qmp},server,nowait",
            "-drive", f"file={disk},if=virtio,format=qcow2", "-drive", f"file={data},if=virtio,format=qcow2",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            "-netdev", f"user,id=net,{forwards}", "-device", "virtio-net-pci,netdev=net", "-device", "virtio-rng-pci",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        self.started = time.monotonic()

    def text(self) -> str:
        return self.console.read_text(errors="replace") if self.console.exists() else ""

    def ready(self, count: int = 1, wait: float = BOOT_WAIT) -> re.Match[str]:
        """The console's `count`th "cairn ready" line (the console says it again when what it shows changed)."""
        while time.monotonic() - self.started < wait:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else "qemu ended"
            found = list(READY.finditer(self.text()))
            if len(found) >= count:
                return found[count - 1]
            time.sleep(1)
        raise AssertionError(f"no 'cairn ready' line {count} on the console:\n" + self.text()[-4000:])

    def power_off(self) -> None:
        """The ACPI power button, pressed over QMP (again if the first press went unheard); logind shuts down."""
        for _ in range(3):
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(30)
                s.connect(str(self.qmp))
                with s.makefile("rwb") as replies:
                    replies.readline()  # the greeting
                    for command in ("qmp_capabilities", "system_powerdown"):
                        replies.write(json.dumps({"execute": command}).encode() + b"\n")
                        replies.flush()
                        while "return" not in json.loads(replies.readline()):
                            pass  # an event
            try:
                self.proc.wait(timeout=90)  # systemd stops cairn, unmounts, powers off
                return
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError("no shutdown after three presses:\n" + self.text()[-3000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


class Web:
    """JSON over HTTPS to the appliance, checking its certificate against the console's fingerprint."""

    def __init__(self, port: int, fingerprint: str):
        self.port, self.fingerprint = port, fingerprint
        self.headers: dict[str, str] = {"Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        """JSON to the API (the session's cookie and CSRF token kept); the answer, JSON or bytes."""
        reply, data = self.send(method, path, None if body is None else json.dumps(body).encode(), self.headers)
        assert reply.status == status, (method, path, reply.status, data[:500])
        cookie = reply.getheader("Set-Cookie")
        if cookie:
            self.headers["Cookie"] = cookie.split(";", 1)[0]
        return json.loads(data) if reply.getheader("Content-Type", "").startswith("application/json") else data

    def send(self, method: str, path: str, body: bytes | None,
             headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes]:  # fmt: skip
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60,
                                           context=ssl._create_unverified_context())  # fmt: skip
        try:
            conn.request(method, path, body=body, headers=headers)
            assert isinstance(conn.sock, ssl.SSLSocket)
            cert = conn.sock.getpeercert(binary_form=True)
            assert cert is not None
            seen = ":".join(f"{b:02X}" for b in hashlib.sha256(cert).digest())
            assert seen == self.fingerprint, "not the certificate the console named"
            reply = conn.getresponse()
            return reply, reply.read()
        finally:
            conn.close()

    def sign_in(self, password: str) -> dict[str, Any]:
        me = self.call("POST", "/api/v1/login", {"name": "admin", "password": password})
        self.headers["X-CSRF-Token"] = me["csrf"]
        return me  # type: ignore[no-any-return]


def seed_disk(tmp: Path, user_data: str = "", network: str = "") -> Path:
    """A NoCloud seed (a FAT disk labelled CIDATA): the host name, yes to formatting the data disk, and more."""
    seed = tmp / "seed.img"
    subprocess.run(["truncate", "-s", "2M", str(seed)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "CIDATA", str(seed)], check=True, capture_output=True)
    files = {"meta-data": "instance-id: cairn-test\nlocal-hostname: cairn-test\n",
             "user-data": f"#cloud-config\nformat_data: yes\n{user_data}", "network-config": network}  # fmt: skip
    for name, text in files.items():
        if text:
            (tmp / name).write_text(text)
            subprocess.run(["mcopy", "-i", str(seed), str(tmp / name), f"::{name}"], check=True)
    return seed


def data_disk(tmp: Path) -> Path:
    data = tmp / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "4G"], check=True)
    return data


def _wait_for_snapshots(web: Web, source: str, count: int) -> list[str]:
    for _ in range(120):  # a backup session's snapshot, once the door has seen it end
        names = [s["name"] for s in web.call("GET", f"/api/v1/sources/{source}/snapshots")]
        if len(names) >= count:
            return names
        time.sleep(1)
    raise AssertionError(f"{source} has {names}, not {count} snapshots")


def _rsync_over_ssh(web: Web, machine: Machine, source: str, src: Path, tmp: Path) -> None:
    """A client's key for `source`, then `rsync -a src/` into it over the SSH door."""
    key = tmp / f"key-{machine.ssh}"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    web.call("POST", f"/api/v1/sources/{source}/keys", {"key": key.with_suffix(".pub").read_text()}, status=201)
    ssh = (f"ssh -p {machine.ssh} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
           "-o LogLevel=ERROR")  # fmt: skip
    sent = subprocess.run(["rsync", "-a", "-e", ssh, f"{src}/", "cairn@127.0.0.1:"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert sent.returncode == 0, sent.stderr


def _host_keys(machine: Machine) -> set[str]:
    """The SSH door's host keys, as a client first sees them (one kind at a time: sshd is slow under TCG)."""
    keys = set()
    for kind in HOST_KEYS:
        scan = subprocess.run(["ssh-keyscan", "-T", "60", "-t", kind, "-p", str(machine.ssh), "127.0.0.1"],
                              capture_output=True, text=True, timeout=120)  # fmt: skip
        found = [line.split(" ", 1)[1] for line in scan.stdout.splitlines() if line and not line.startswith("#")]
        assert len(found) == 1, (kind, scan.stdout, scan.stderr)
        keys.add(found[0])
    return keys


def test_the_image_boots_serves_https_takes_a_backup_and_boots_again(image: Path, tmp_path: Path) -> None:
    disk, data, seed = overlay(image, tmp_path / "disk.qcow2"), data_disk(tmp_path), seed_disk(tmp_path)
    first = Machine(tmp_path, disk, data, seed, 1)
    try:
        ready = first.ready()
        print(f"first boot to a web page answering: {time.monotonic() - first.started:.0f} s")
        console = first.text()
        assert "the backups are on /dev/vdb" in console and "host name cairn-test" in console
        assert ready["pw"], "no one-time password on the console"
        web = Web(first.https, ready["fp"])
        assert web.sign_in(ready["pw"])["user"]["must_change"] is True
        web.call("POST", "/api/v1/me/password", {"password": ready["pw"], "new_password": "the test's own"})
        again = first.ready(count=2, wait=time.monotonic() - first.started + 60)
        assert not again["pw"] and again["fp"] == ready["fp"]  # the console no longer shows it
        web.call("POST", "/api/v1/sources", {"name": "laptop"}, status=201)
        src = tmp_path / "src"
        (src / "docs").mkdir(parents=True)
        (src / "docs" / "report.txt").write_text("numbers of the quarter\n")
        (src / "big").write_bytes(os.urandom(3 << 20))
        _rsync_over_ssh(web, first, "laptop", src, tmp_path)
        (snap,) = _wait_for_snapshots(web, "laptop", 1)
        back = web.call("GET", f"/api/v1/sources/laptop/snapshots/{snap}/file?path=/docs/report.txt")
        assert back == b"numbers of the quarter\n"
        first.power_off()
    finally:
        first.kill()

    again = Machine(tmp_path, disk, data, seed, 2)  # the same machine's next boot: fstab mounts the data disk
    try:
        ready = again.ready()
        print(f"a later boot to a web page answering: {time.monotonic() - again.started:.0f} s")
        assert "the backups are on /dev/vdb" in again.text() and not ready["pw"]
        web = Web(again.https, ready["fp"])
        web.sign_in("the test's own")
        assert _wait_for_snapshots(web, "laptop", 1) == [snap]
        assert web.call("GET", f"/api/v1/sources/laptop/snapshots/{snap}/file?path=/big") == (src / "big").read_bytes()
        again.power_off()
    finally:
        again.kill()


STATIC_NETWORK = f"""version: 2
ethernets:
  eth0:
    addresses: [{STATIC}/24]
    routes: [{{to: default, via: 10.0.2.2}}]
    nameservers: {{addresses: [10.0.2.3]}}
"""


def test_a_newer_image_takes_up_the_data_disk_of_an_older_one(image: Path, older_image: Path, tmp_path: Path) -> None:
    data = data_disk(tmp_path)
    seed = seed_disk(tmp_path, user_data=f"admin_password: {SEED_PASSWORD}\n", network=STATIC_NETWORK)
    older = Machine(tmp_path, overlay(older_image, tmp_path / "older.qcow2"), data, seed, 1, address=STATIC)
    try:
        ready = older.ready()
        print(f"the older image's first boot to a web page answering: {time.monotonic() - older.started:.0f} s")
        assert ready["urls"].split() == [f"https://{STATIC}/"] and not ready["pw"]  # the seed's address, password
        assert f"network: eth0: {STATIC}/24 via 10.0.2.2" in older.text()
        web = Web(older.https, ready["fp"])
        web.sign_in(SEED_PASSWORD)
        web.call("POST", "/api/v1/sources", {"name": "server"}, status=201)
        auth = {"Authorization": "Basic " + base64.b64encode(f"admin:{SEED_PASSWORD}".encode()).decode()}
        for method, path, body in (
            ("MKCOL", "/dav/server/current/etc", None),
            ("PUT", "/dav/server/current/etc/settings.conf", b"kept across the upgrade\n"),
        ):
            assert web.send(method, path, body, auth)[0].status == 201
        web.call("POST", "/api/v1/sources/server/snapshots", status=202)
        (snap,) = _wait_for_snapshots(web, "server", 1)
        keys = _host_keys(older)
        older.power_off()
    finally:
        older.kill()

    newer = Machine(tmp_path, overlay(image, tmp_path / "newer.qcow2"), data, seed, 2, uefi=True, address=STATIC)
    try:
        ready = newer.ready()
        print(f"this image's first boot (UEFI) on the older data disk: {time.monotonic() - newer.started:.0f} s")
        console = newer.text()
        assert "BdsDxe: starting" in console  # OVMF started GRUB's EFI image
        assert "the backups are on /dev/vdb" in console and "formatting" not in console
        web = Web(newer.https, ready["fp"])
        web.sign_in(SEED_PASSWORD)
        assert _wait_for_snapshots(web, "server", 1) == [snap]
        snapshot = f"/api/v1/sources/server/snapshots/{snap}"
        assert web.call("GET", f"{snapshot}/file?path=/etc/settings.conf") == b"kept across the upgrade\n"
        found = web.call("GET", "/api/v1/sources/server/search?q=settings")["results"]  # the new migration's index
        assert [(f["path"], f["first"], f["last"]) for f in found] == [("/etc/settings.conf", snap, snap)]
        assert _host_keys(newer) == keys  # the doors' host keys live on the data disk
        src = tmp_path / "more"
        src.mkdir()
        (src / "after-the-upgrade.txt").write_text("backed up by the newer version\n")
        _rsync_over_ssh(web, newer, "server", src, tmp_path)
        assert len(_wait_for_snapshots(web, "server", 2)) == 2
        newer.power_off()
    finally:
        newer.kill()
