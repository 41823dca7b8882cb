"""Boot of the disk image under qemu without KVM (TCG), as tests/test_disk_image.py boots it.

Each of RUNS runs boots a fresh copy of the image with a blank data disk (the first boot: the disk is
formatted, the first administrator made), powers it off with the power button, and boots it again (a
later boot). For each boot it notes, from qemu's start, when the console shows GRUB's menu (firmware:
the floor no image can go under), the root file system (kernel and initramfs), the login prompt
(systemd), the "cairn ready" line, and when the web page first answers over the forwarded port.
Reports the medians over the runs. Target: the web page answering in under 60 s.

    make image && make bench-boot      (IMAGE=FILE boots that image; RUNS=3)

Writes bench/out/boot.json.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.test_disk_image import Machine, data_disk, overlay, seed_disk  # noqa: E402

OUT = ROOT / "bench" / "out"
MARKS = {"grub": "The highlighted entry", "root file system": "cairn-root: clean", "login prompt": " login: ",
         "cairn ready": "cairn ready: "}  # fmt: skip


def _answers(port: int) -> bool:
    try:
        with (socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
              ssl._create_unverified_context().wrap_socket(raw) as tls):  # fmt: skip
            tls.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            return tls.recv(12).startswith(b"HTTP/1.")
    except OSError:
        return False


def boot(machine: Machine) -> dict[str, float]:
    """Seconds from qemu's start to each mark, and to the web page answering."""
    seen: dict[str, float] = {}
    while time.monotonic() - machine.started < 300:
        assert machine.proc.poll() is None, "qemu ended"
        now = time.monotonic() - machine.started
        text = machine.text()
        for mark, words in MARKS.items():
            if mark not in seen and words in text:
                seen[mark] = now
        if "cairn ready" in seen and _answers(machine.https):
            seen["web page answering"] = time.monotonic() - machine.started
            return seen
        time.sleep(0.2)
    raise SystemExit("no 'cairn ready' within 300 s:\n" + machine.text()[-3000:])


def main() -> None:
    image = Path(os.environ.get("IMAGE", ROOT / "build/image/cairn.qcow2"))
    if not image.exists():
        raise SystemExit(f"{image}: no image; `make image` builds one (or give IMAGE=FILE)")
    runs = int(os.environ.get("RUNS", "3"))
    found: dict[str, list[dict[str, float]]] = {"first boot (BIOS)": [], "later boot (BIOS)": []}
    for run in range(runs):
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            disk, data, seed = overlay(image, tmp / "disk.qcow2"), data_disk(tmp), seed_disk(tmp)
            for n, kind in enumerate(found, 1):
                machine = Machine(tmp, disk, data, seed, n)
                try:
                    found[kind].append(boot(machine))
                    machine.power_off()
                finally:
                    machine.kill()
                print(f"run {run + 1}, {kind}: " + ", ".join(f"{k} {v:.1f} s" for k, v in found[kind][-1].items()))
    report = {kind: {mark: round(statistics.median(b[mark] for b in boots), 1)
                     for mark in boots[0] if all(mark in b for b in boots)}  # a console may miss a mark
              for kind, boots in found.items()}  # fmt: skip
    report["image"] = {"qcow2 MB": round(image.stat().st_size / 1e6), "runs": runs}
    print(json.dumps(report, indent=2))
    OUT.mkdir(exist_ok=True)
    (OUT / "boot.json").write_text(json.dumps({"runs": found, "medians": report}, indent=2))


if __name__ == "__main__":
    main()
