"""What an SSH key may run: `rsync --server`, its options checked and its paths rooted in one source.

The client's command arrives as one string (SSH_ORIGINAL_COMMAND), split
the way its shell would. Only rsync's server runs, with options the stock
client sends; `-s` (protect-args) is refused because its paths would come
over the wire where they cannot be rooted (rsync 3.2.4 and newer protect
arguments without it). A receiving server's paths are taken relative to the
source's `current/`, a sending one's (a restore) relative to the source's
folder (`current/…`, `snapshots/<name>/…`); `..` is refused. The sandbox
(sandbox.py) is the wall; these checks give a clear message before it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from engine.errors import InvalidArgument

ROOT = "/backup"  # where the sandbox shows the source (sending) or its current/ (receiving)
RSYNC = "/usr/bin/rsync"

# Short options rsync's server accepts from a stock client; `s` (protect-args) is left out on purpose.
_SHORT = set("ACDEHIJKLNORSUWXbcdgklmnopqrtuvxyz")
_SHORT_WITH_NUMBER = set("@B")
# Long options without a value, and those with one (a path among them is checked like the paths).
_LONG_FLAGS = {
    "append", "copy-unsafe-links", "delay-updates", "delete", "delete-after", "delete-before",
    "delete-delay", "delete-during", "delete-excluded", "delete-missing-args", "dirs", "existing", "force",
    "from0", "fsync", "fuzzy", "group", "hard-links", "ignore-errors", "ignore-existing", "ignore-missing-args",
    "ignore-times", "inplace", "links", "list-only", "mkpath", "msgs2stderr", "new-compress", "no-W",
    "no-implied-dirs", "no-msgs2stderr", "no-r", "no-relative", "no-specials", "numeric-ids", "old-compress",
    "one-file-system", "open-noatime", "owner", "partial", "perms", "preallocate", "recursive", "safe-links",
    "sender", "server", "size-only", "specials", "stats", "super", "times", "use-qsort", "append-verify",
    "omit-dir-times", "omit-link-times", "atimes", "crtimes", "acls", "xattrs", "sparse", "checksum",
}  # fmt: skip
_LONG_VALUES = {
    "block-size", "bwlimit", "checksum-choice", "checksum-seed", "compress-choice", "compress-level",
    "compress-threads", "groupmap", "iconv", "info", "log-format", "max-alloc", "max-delete", "max-size",
    "min-size", "modify-window", "skip-compress", "stderr", "suffix", "timeout", "usermap", "chmod", "chown",
    "out-format",
}  # fmt: skip
_LONG_PATHS = {"partial-dir", "temp-dir", "backup-dir", "link-dest", "compare-dest", "copy-dest"}
# rsync's own reasons for refusing the rest: they read or write outside the transfer.
_REFUSED = {
    "protect-args": "-s/--protect-args is not supported: leave it out (rsync 3.2.4 and newer need no -s)",
    "secluded-args": "-s/--secluded-args is not supported: leave it out (rsync 3.2.4 and newer need no -s)",
    "files-from": "--files-from is not supported over SSH: give the paths on the command line",
    "log-file": "--log-file is set by the appliance",
    "write-devices": "--write-devices is not allowed",
    "copy-devices": "--copy-devices is not allowed",
    "daemon": "the rsync daemon has its own port (rsync://)",
    "fake-super": "--fake-super is not allowed: owners and modes are stored as they are",
    "remove-source-files": "--remove-source-files is not allowed: a backup is never removed by a restore",
    "remove-sent-files": "--remove-sent-files is not allowed: a backup is never removed by a restore",
    "only-write-batch": "--only-write-batch is not allowed",
}


@dataclass(frozen=True)
class RsyncCommand:
    sending: bool  # the client reads (a restore); else it writes into current/
    options: list[str]
    paths: list[str]  # rooted under ROOT

    def argv(self, log_file: str | None = None, timeout: int | None = None) -> list[str]:
        extra = [f"--log-file={log_file}"] if log_file else []
        if timeout is not None and not any(o.startswith("--timeout=") for o in self.options):
            extra.append(f"--timeout={timeout}")
        return [RSYNC, "--server", *extra, *self.options, ".", *self.paths]


def parse(command: str | None, hint: str) -> RsyncCommand:
    """The client's command, checked; InvalidArgument says why not (`hint`: how a backup is sent)."""
    if not command:
        raise InvalidArgument(f"this account only runs rsync: {hint}")
    try:
        argv = shlex.split(command)
    except ValueError as e:
        raise InvalidArgument(f"cannot read the command ({e}): {hint}") from None
    if len(argv) < 3 or argv[0] not in ("rsync", RSYNC) or argv[1] != "--server":
        raise InvalidArgument(f"only rsync runs here, not {argv[0] if argv else 'nothing'!r}: {hint}")
    dot = argv.index(".", 2) if "." in argv[2:] else len(argv)
    options = [_option(o) for o in argv[2:dot]]  # checked first: a refused option says so, not "no '.'"
    if dot == len(argv):
        raise InvalidArgument("an rsync server command has a '.' before its paths")
    sending = "--sender" in options
    if "--daemon" in options:
        raise InvalidArgument(_REFUSED["daemon"])
    paths = [_rooted(p, sending) for p in argv[dot + 1 :]] or [_rooted("", sending)]
    return RsyncCommand(sending, options, paths)


def _option(option: str) -> str:
    if option.startswith("--"):
        name, eq, value = option[2:].partition("=")
        if name in _REFUSED:
            raise InvalidArgument(_REFUSED[name])
        if name in _LONG_FLAGS and not eq:
            return option
        if name in _LONG_VALUES and eq:
            return option
        if name in _LONG_PATHS and eq:
            return f"--{name}={_relative(value)}"
        raise InvalidArgument(f"rsync option {option!r} is not allowed here")
    if not option.startswith("-") or option == "-":
        raise InvalidArgument(f"unexpected argument {option!r} before the paths")
    letters = option[1:]
    i = 0
    while i < len(letters):
        c = letters[i]
        if c == "e":  # the server's capability string: the rest of the word
            break
        if c == "s":
            raise InvalidArgument(_REFUSED["protect-args"])
        if c in _SHORT_WITH_NUMBER:
            i += 1
            while i < len(letters) and (letters[i].isdigit() or letters[i] == "-"):
                i += 1
            continue
        if c not in _SHORT:
            raise InvalidArgument(f"rsync option -{c} is not allowed here")
        i += 1
    return option


def _relative(path: str) -> str:
    """A path inside the transfer's root, as rsync's server resolves it from there; no '..'."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InvalidArgument(f"path {path!r} leaves the source: '..' is not allowed")
    return "/".join(parts) or "."


def _rooted(path: str, sending: bool) -> str:
    rel = _relative(path)
    if sending and rel != "." and rel.split("/")[0] not in ("current", "snapshots"):
        raise InvalidArgument(f"restore from current/… or snapshots/<name>/…, not {path!r}")
    trailing = "/" if path.endswith("/") or rel == "." else ""
    return ROOT + ("" if rel == "." else "/" + rel) + trailing
