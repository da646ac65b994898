"""Live progress of a run on a terminal, and the final status in table, JSON or YAML form.

Presentation only: it reads status objects and never changes them. It also shows what the
tasks print: local workers write their output to a file (see
:mod:`daskflow.engine.workerprocess`), and the lines are shown from there on stderr, above
the live table on a terminal rather than through it.
"""

from __future__ import annotations

import asyncio
import io
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import yaml
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

STATE_STYLE = {
    "Pending": "dim",
    "Running": "cyan",
    "Retrying": "yellow",
    "Succeeded": "green",
    "Failed": "bold red",
    "Skipped": "magenta",
    "UpstreamFailed": "red",
    "Cancelled": "yellow",
}


def _items(rec: dict[str, Any]) -> str:
    items = rec.get("items")
    if not items:
        return ""
    out = f"{items['succeeded']}/{items['total']}"
    if items["failed"]:
        out += f" ({items['failed']} failed)"
    if items["running"]:
        out += f" [{items['running']} running]"
    return out


def status_table(status: dict[str, Any], title: str, elapsed: float | None = None) -> Table:
    when = f" · {elapsed:.1f}s" if elapsed is not None else ""
    table = Table(title=f"{title}: {status.get('phase', 'Pending')}{when}", title_justify="left")
    for col in ("task", "state", "attempts", "items", "result / message"):
        table.add_column(col, overflow="fold")
    for name, rec in status.get("tasks", {}).items():
        state = rec["state"]
        message = (rec.get("message") or "").splitlines()
        detail = message[0] if message else ""
        if "result" in rec and not detail:
            detail = _short(rec["result"])
        table.add_row(
            name,
            f"[{STATE_STYLE.get(state, '')}]{state}[/]",
            str(rec.get("attempts", 0)),
            _items(rec),
            escape(detail[:100]),
        )
    return table


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Progress:
    """Shows each status update: a live table on a terminal, one line per change otherwise."""

    def __init__(
        self,
        title: str,
        stream: TextIO = sys.stderr,
        task_output: Path | None = None,
        transient: bool = False,
    ) -> None:
        self.title = title
        self.transient = transient  # the live table goes away at the end
        self.console = Console(file=stream, stderr=stream is sys.stderr)
        self.started = time.monotonic()
        self.live: Live | None = None
        self.closed = False
        self.seen: dict[str, str] = {}
        self.last: dict[str, Any] = {}
        self.task_output = task_output
        self._read = 0  # bytes of task_output shown so far
        self._partial = b""

    def __enter__(self) -> Progress:
        if self.console.is_terminal:
            self.live = Live(console=self.console, refresh_per_second=4, transient=self.transient)
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Show the task output so far and end the live table (once): its last state stays
        on screen unless transient."""
        self.show_task_output(final=True)
        if self.live is not None and not self.closed:
            self.live.update(self._table())
            self.live.__exit__(None, None, None)
        self.closed = True

    def show_task_output(self, final: bool = False) -> None:
        """Show the complete lines the workers wrote since the last call (all, if final)."""
        if self.task_output is None:
            return
        try:
            with self.task_output.open("rb") as f:
                f.seek(self._read)
                data = f.read()
        except FileNotFoundError:
            return
        self._read += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        if final and self._partial:
            lines, self._partial = [*lines, self._partial], b""
        if not lines:
            return
        text = "\n".join(line.decode(errors="replace") for line in lines)
        if self.live is None:  # verbatim, and in one write: rich takes ~0.1 ms a line
            self.console.file.write(text + "\n")
            self.console.file.flush()
        else:  # above the live table, in one piece
            self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    async def relay_task_output(self, interval: float = 0.2) -> None:
        """Show task output as it comes, until cancelled."""
        while True:
            self.show_task_output()
            await asyncio.sleep(interval)

    def _table(self) -> Table:
        return status_table(self.last, self.title, time.monotonic() - self.started)

    def update(self, status: dict[str, Any]) -> None:
        if self.closed:
            return
        self.show_task_output()  # what the tasks printed comes before their new states
        self.last = status
        if self.live is not None:
            self.live.update(self._table())
            return
        elapsed = time.monotonic() - self.started
        for name, rec in status.get("tasks", {}).items():
            line = f"{rec['state']} {_items(rec)}".strip()
            if self.seen.get(name) != line:
                self.seen[name] = line
                self.console.print(f"[{elapsed:6.1f}s] {name}: {line}", highlight=False)
        phase = status.get("phase", "")
        if self.seen.get("\0phase") != phase:
            self.seen["\0phase"] = phase
            self.console.print(f"[{elapsed:6.1f}s] run: {phase}", highlight=False)


def render_status(status: dict[str, Any], output: str, title: str) -> str:
    if output == "json":
        return json.dumps(status, indent=2)
    if output == "yaml":
        return yaml.safe_dump(status, sort_keys=False)
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(status_table(status, title))
    if status.get("message"):
        console.print(status["message"])
    return console.export_text()
