"""The disk image: built (`make image`), booted under qemu (software emulation), signed in to over HTTPS with
the password its console prints, backed up into over the SSH door, restored from, powered off, booted again
(the first boot under BIOS, the second under UEFI).

The image is built once per content of its inputs (appliance/system/ and Cairn's sources) into
IMAGE_CACHE; a run with the same inputs boots the one built before; CAIRN_IMAGE=FILE boots that one.
`-m "not image"` leaves the test out.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import free_port

pytestmark = [pytest.mark.image, pytest.mark.slow, pytest.mark.timeout(1800)]  # a build, then two boots

REPO = Path(__file__).resolve().parent.parent
IMAGE_CACHE = Path(os.environ.get("CAIRN_IMAGE_CACHE", "/var/cache/cairn-image"))
READY = re.compile(
    r"cairn ready: (?P<urls>.*?)fingerprint (?P<fp>[0-9A-F:]{95})(?: admin one-time password (?P<pw>\S+))?"
)
OVMF = "/usr/share/ovmf/OVMF.fd"  # UEFI firmware (Debian's ovmf); without it, SeaBIOS
BOOT_WAIT = 300  # seconds to the console's "cairn ready" line; a boot takes about a minute under TCG here


def _inputs() -> str:
    """The hash of everything the image holds from this repository."""
    files = subprocess.run(["git", "ls-files", "appliance", "engine", "dav", "vfs", "image", "pyproject.toml"],
                           cwd=REPO, capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
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


class Machine:
    """One boot of the image: its console, and the appliance's HTTPS and SSH ports on loopback."""

    def __init__(self, tmp: Path, disk: Path, data: Path, seed: Path, boot: int, uefi: bool = False):
        self.console = tmp / f"console-{boot}.log"
        self.https, self.ssh = free_port(), free_port()
        self.qmp = tmp / f"qmp-{boot}.sock"
        forwards = f"hostfwd=tcp:127.0.0.1:{self.https}-:443,hostfwd=tcp:127.0.0.1:{self.ssh}-:22"
        self.proc = subprocess.Popen([
            "qemu-system-x86_64", "-machine", "pc", "-cpu", "max", "-smp", "2", "-m", "1536", "-nographic",
            *(["-bios", OVMF] if uefi else []),
            "-serial", f"file:{self.console}", "-qmp", f"unix:{self.qmp},server,nowait",
            "-drive", f"file={disk},if=virtio,format=qcow2", "-drive", f"file={data},if=virtio,format=qcow2",
            "-drive", f"file={seed},if=virtio,format=raw,readonly=on",
            "-netdev", f"user,id=net,{forwards}", "-device", "virtio-net-pci,netdev=net", "-device", "virtio-rng-pci",
        ], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        self.started = time.monotonic()

    def ready(self) -> re.Match[str]:
        while time.monotonic() - self.started < BOOT_WAIT:
            assert self.proc.poll() is None, self.proc.stderr.read().decode() if self.proc.stderr else "qemu ended"
            text = self.console.read_text(errors="replace") if self.console.exists() else ""
            found = READY.search(text)
            if found:
                return found
            time.sleep(1)
        raise AssertionError("no 'cairn ready' on the console:\n" + self.console.read_text(errors="replace")[-4000:])

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
        raise AssertionError("no shutdown after three presses:\n" + self.console.read_text(errors="replace")[-3000:])

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
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=60,
                                           context=ssl._create_unverified_context())  # fmt: skip
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body), headers=self.headers)
            assert isinstance(conn.sock, ssl.SSLSocket)
            cert = conn.sock.getpeercert(binary_form=True)
            assert cert is not None
            seen = ":".join(f"{b:02X}" for b in hashlib.sha256(cert).digest())
            assert seen == self.fingerprint, "not the certificate the console named"
            reply = conn.getresponse()
            data = reply.read()
            assert reply.status == status, (method, path, reply.status, data[:500])
            cookie = reply.getheader("Set-Cookie")
            if cookie:
                self.headers["Cookie"] = cookie.split(";", 1)[0]
            return json.loads(data) if reply.getheader("Content-Type", "").startswith("application/json") else data
        finally:
            conn.close()

    def sign_in(self, password: str) -> dict[str, Any]:
        me = self.call("POST", "/api/v1/login", {"name": "admin", "password": password})
        self.headers["X-CSRF-Token"] = me["csrf"]
        return me  # type: ignore[no-any-return]


def _seed(tmp: Path) -> Path:
    """A NoCloud seed (a FAT disk labelled CIDATA): the host name, and yes to formatting the data disk."""
    seed = tmp / "seed.img"
    subprocess.run(["truncate", "-s", "2M", str(seed)], check=True)
    subprocess.run(["mkfs.vfat", "-n", "CIDATA", str(seed)], check=True, capture_output=True)
    (tmp / "meta-data").write_text("instance-id: cairn-test\nlocal-hostname: cairn-test\n")
    (tmp / "user-data").write_text("#cloud-config\nformat_data: yes\n")
    for name in ("meta-data", "user-data"):
        subprocess.run(["mcopy", "-i", str(seed), str(tmp / name), f"::{name}"], check=True)
    return seed


@pytest.fixture
def machine_files(image: Path, tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    disk, data = tmp_path / "disk.qcow2", tmp_path / "data.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image), "-F", "qcow2", str(disk)], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(data), "4G"], check=True)
    yield disk, data, _seed(tmp_path)


def test_the_image_boots_serves_https_takes_a_backup_and_keeps_it_across_a_reboot(
    machine_files: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    disk, data, seed = machine_files
    first = Machine(tmp_path, disk, data, seed, 1)
    try:
        ready = first.ready()
        booted = time.monotonic() - first.started
        print(f"first boot to a web page answering: {booted:.0f} s")
        console = first.console.read_text(errors="replace")
        assert "the backups are on /dev/vdb" in console and "host name cairn-test" in console
        assert ready["pw"], "no one-time password on the console"
        web = Web(first.https, ready["fp"])
        assert web.sign_in(ready["pw"])["user"]["must_change"] is True
        new = "a password of the test's own"
        web.call("POST", "/api/v1/me/password", {"password": ready["pw"], "new_password": new})
        web.call("POST", "/api/v1/sources", {"name": "laptop"}, status=201)
        key = tmp_path / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        web.call("POST", "/api/v1/sources/laptop/keys", {"key": key.with_suffix(".pub").read_text()}, status=201)
        src = tmp_path / "src"
        (src / "docs").mkdir(parents=True)
        (src / "docs" / "report.txt").write_text("numbers of the quarter\n")
        (src / "big").write_bytes(os.urandom(3 << 20))
        ssh = (f"ssh -p {first.ssh} -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null "
               "-o LogLevel=ERROR")  # fmt: skip
        sent = subprocess.run(["rsync", "-a", "-e", ssh, f"{src}/", "cairn@127.0.0.1:"], capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        for _ in range(120):  # the session's snapshot, once the door has seen it end
            snapshots = web.call("GET", "/api/v1/sources/laptop/snapshots")
            if snapshots:
                break
            time.sleep(1)
        (snap,) = [s["name"] for s in snapshots]
        back = web.call("GET", f"/api/v1/sources/laptop/snapshots/{snap}/file?path=/docs/report.txt")
        assert back == b"numbers of the quarter\n"
        first.power_off()
    finally:
        first.kill()

    second = Machine(tmp_path, disk, data, seed, 2, uefi=True)  # the same disk boots under UEFI too
    try:
        ready = second.ready()
        print(f"second boot (UEFI) to a web page answering: {time.monotonic() - second.started:.0f} s")
        assert "BdsDxe: starting" in second.console.read_text(errors="replace")  # OVMF started GRUB's EFI image
        assert not ready["pw"]  # changed: the console no longer shows it
        web = Web(second.https, ready["fp"])
        web.sign_in(new)
        assert [s["name"] for s in web.call("GET", "/api/v1/sources/laptop/snapshots")] == [snap]
        assert web.call("GET", f"/api/v1/sources/laptop/snapshots/{snap}/file?path=/big") == (src / "big").read_bytes()
        second.power_off()
    finally:
        second.kill()
