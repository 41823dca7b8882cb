"""Local trees with everything rsync -aHAXS carries, and an rsync comparison."""

from __future__ import annotations

import os
import random
import socket
import subprocess
from pathlib import Path


def make_tree(root: Path, seed: int = 0) -> None:
    """Contents of all sizes, odd modes and owners, links, xattrs, ACLs, holes, specials, odd names."""
    rnd = random.Random(seed)
    r = os.fsencode(root)
    os.makedirs(r + b"/empty dir")
    os.makedirs(r + b"/deep/" + b"/".join(b"level%d" % i for i in range(30)))
    (root / "deep").joinpath(*[f"level{i}" for i in range(30)], "leaf").write_bytes(b"deep")
    for size in (0, 1, 100, 4095, 4096, 65537, 300_000, 2_500_000, 9_000_000):
        (root / f"size-{size}").write_bytes(rnd.randbytes(size))
    (root / "text").write_bytes(b"compressible line of text\n" * 50_000)
    odd = [b"with space", b"new\nline", b"\xff\xfe invalid utf-8", b"x" * 255, b"tab\there", b"-dash", b"*star?"]
    os.makedirs(r + b"/odd")
    for name in odd:
        with open(r + b"/odd/" + name, "wb") as f:
            f.write(name)
    for path, mode in (("setuid", 0o4755), ("setgid", 0o2750), ("private", 0o600), ("all", 0o777)):
        (root / path).write_bytes(path.encode())
        os.chmod(root / path, mode)
    os.makedirs(root / "sticky")
    os.chmod(root / "sticky", 0o1777)
    (root / "owned").write_bytes(b"owned")
    os.chown(root / "owned", 1234, 5678)
    os.symlink("size-100", root / "relative-link")
    os.symlink("/nonexistent/absolute target", root / "dangling-absolute")
    os.symlink("../odd", root / "sticky" / "dir-link")
    os.lchown(root / "relative-link", 42, 43)
    (root / "hard-a").write_bytes(b"hard linked")
    os.link(root / "hard-a", root / "hard-b")
    os.link(root / "hard-a", root / "odd" / "hard-c")
    (root / "xattrs").write_bytes(b"x")
    os.setxattr(root / "xattrs", "user.comment", b"hello \x00 binary")
    os.setxattr(root / "xattrs", "user.empty", b"")
    (root / "acl").write_bytes(b"acl")
    subprocess.run(["setfacl", "-m", "u:1000:rw,g:100:r", str(root / "acl")], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1000:rwx", str(root / "sticky")], check=True)
    with open(root / "sparse", "wb") as f:
        f.truncate(64 << 20)
        f.seek(10 << 20)
        f.write(b"data in the middle")
    with open(root / "sparse-tail", "wb") as f:
        f.write(b"head")
        f.truncate(8 << 20)
    os.mkfifo(root / "fifo")
    os.mknod(root / "null-device", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "block-device", 0o660 | 0o060000, os.makedev(7, 99))
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(root / "socket"))
    sock.close()
    for p in (root / "size-100", root / "odd"):
        os.utime(p, ns=(1_000_000_001, 1_234_567_890_123_456_789))
    os.utime(root / "relative-link", ns=(5, 987_654_321_000_000_001), follow_symlinks=False)


def rsync_differences(src: Path, dest: Path, checksum: bool = True) -> list[str]:
    """What `rsync -aHAXS --numeric-ids [-c] --dry-run --itemize-changes` would change."""
    args = ["rsync", "-aHAXS", "--numeric-ids", "--dry-run", "--itemize-changes"]
    if checksum:
        args.append("-c")
    out = subprocess.run([*args, f"{src}/", f"{dest}/"], check=True, capture_output=True)
    return [line for line in out.stdout.decode("utf-8", "backslashreplace").splitlines() if line.strip()]
