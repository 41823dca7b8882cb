"""The front doors' side of the gate: what sshd and the rsync daemon run, asking the appliance over its socket.

Copied by the appliance into its run directory as `cairn-door` and run by
the system's python3 with the standard library only (sshd runs it as the
unprivileged `cairn` user, so it may read nothing of the data directory):

  cairn-door keys USER FINGERPRINT   sshd's AuthorizedKeysCommand
  cairn-door rsync KEY               a key's forced command: hands this SSH
                                     session's stdin/stdout/stderr to the
                                     appliance, which runs rsync, and exits
                                     with rsync's status
  cairn-door pre | post              the rsync daemon's pre-/post-xfer exec
  cairn-door smb connect|disconnect SHARE USER ADDRESS PID
                                     Samba's root preexec and postexec
"""

import json
import os
import socket
import sys
from typing import Any

GATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "door.sock")
STOPPED = 255  # what ssh clients see when the far side vanished


def ask(request: dict[str, Any], fds: tuple[int, ...] = (), timeout: float | None = 30.0) -> Any:
    """Send one request (with `fds`), return the one reply, or None if the appliance went away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(GATE)
    data = (json.dumps(request) + "\n").encode()
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.sendall(data)
    if not fds:  # a session's socket stays open both ways: its end is how the appliance sees the relay go
        sock.shutdown(socket.SHUT_WR)
    reply = b""
    while not reply.endswith(b"\n"):
        chunk = sock.recv(65536)
        if not chunk:
            return None
        reply += chunk
    return json.loads(reply)


def keys(user: str, fingerprint: str) -> int:
    reply = ask({"op": "keys", "user": user, "fingerprint": fingerprint}, timeout=10.0)
    for line in (reply or {}).get("lines", []):
        print(line)
    return 0


def rsync(key: str) -> int:
    client = (os.environ.get("SSH_CONNECTION") or "?").split()[0]
    request = {"op": "rsync", "key": key, "command": os.environ.get("SSH_ORIGINAL_COMMAND"), "client": client}
    try:
        reply = ask(request, fds=(0, 1, 2), timeout=None)
    except OSError as e:
        reply = {"exit": STOPPED, "message": f"the appliance is not answering ({e.strerror}); try again later"}
    if reply is None:
        reply = {"exit": STOPPED, "message": "the appliance stopped during the session; run the backup again"}
    if reply.get("message"):
        sys.stderr.write(f"cairn: {reply['message']}\n")
    return int(reply.get("exit", 1))


def xfer(stage: str) -> int:
    env = {k: v for k, v in os.environ.items() if k.startswith("RSYNC_")}
    try:
        reply = ask({"op": stage, "env": env})
    except OSError as e:
        reply = {"ok": False, "message": f"the appliance is not answering ({e.strerror}); try again later"}
    if reply is None or not reply.get("ok"):
        print((reply or {}).get("message") or "the appliance stopped; try again later")
        return 1
    return 0


def smb(stage: str, share: str, user: str, client: str, pid: str) -> int:
    """Tell the appliance of a tree connect (exit 1 refuses it: the appliance must watch what it writes)."""
    try:
        reply = ask({"op": "smb", "stage": stage, "share": share, "user": user, "client": client, "pid": int(pid)})
    except (OSError, ValueError) as e:
        reply = {"ok": False, "message": f"the appliance is not answering ({e}); try again later"}
    if reply is None or not reply.get("ok"):
        sys.stderr.write(f"cairn: {(reply or {}).get('message') or 'the appliance stopped'}\n")
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "keys":
        return keys(argv[1], argv[2])
    if len(argv) == 2 and argv[0] == "rsync":
        return rsync(argv[1])
    if len(argv) == 1 and argv[0] in ("pre", "post"):
        return xfer(argv[0])
    if len(argv) == 6 and argv[0] == "smb" and argv[1] in ("connect", "disconnect"):
        return smb(*argv[1:])
    sys.stderr.write("usage: cairn-door keys USER FINGERPRINT | rsync KEY | pre | post"
                     " | smb connect|disconnect SHARE USER ADDRESS PID\n")  # fmt: skip
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
