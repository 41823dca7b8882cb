"""How the CLI speaks: tables and progress for people, JSON for scripts.

rich is imported only when a table or a progress bar is drawn: a command
that prints a line or JSON should not pay for it at start-up.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from ..words import human_bytes as human_bytes  # the CLI's commands reach it as output.human_bytes


def emit_json(doc: Any) -> None:
    sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")


def say(text: str) -> None:
    sys.stdout.write(text + "\n")


def warn(text: str, label: str = "warning") -> None:
    sys.stderr.write(f"{label}: {text}\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c.replace("_", " "))
    for r in rows:
        t.add_row(*(_cell(r.get(c)) for c in columns))
    Console(soft_wrap=True).print(t)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value > 1e9:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))
    return str(value)


class Update(Protocol):
    """Shows `text`; with `done` of `total` (bytes, files), also a percentage and the time left."""

    def __call__(self, text: str, done: float | None = None, total: float | None = None) -> None: ...


def _silent(text: str, done: float | None = None, total: float | None = None) -> None:
    pass


@contextmanager
def progress_bar(enabled: bool, what: str) -> Iterator[Update]:
    """A progress line on stderr; silent when stderr is not a terminal or for --json."""
    if not enabled or not sys.stderr.isatty():
        yield _silent
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
               TextColumn("left"), TimeRemainingColumn())  # fmt: skip
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(what, total=None)

        def update(text: str, done: float | None = None, total: float | None = None) -> None:
            progress.update(task, description=text, completed=done or 0, total=total)

        yield update
