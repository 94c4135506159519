"""Live progress of requests and batches: the views of the events the runs report (:mod:`flows.events`).

The terminal views (:class:`LiveView` for a terminal, :class:`PlainView` for a pipe or ``--json``) only read
these events; :func:`progress_view` shows the runs of a block in one of them, with the libraries' bars folded in
(:mod:`flows.library_bars`) and Prefect's run logs off the console (:mod:`flows.run_logs`). Everything shown that
came from a model or the LLM goes through :func:`safe_text` first: rich markup is never interpreted and control
characters (escape sequences) never reach the terminal.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flows.events import FINAL_STATES, Event, LineEvent, PlanEvent, subscribe
from flows.library_bars import library_progress
from flows.run_logs import run_logs_off_console

# C0 controls but tab and newline, DEL, C1 controls, and the bidirectional overrides that reorder what is shown
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: object, *, one_line: bool = False) -> str:
    """``text`` as it may be shown on a terminal: control characters written as visible ``\\xNN`` escapes.

    Rich markup is not escaped here: show the result through :class:`rich.text.Text` (never as markup), as every
    view of this module does.
    """
    shown = _UNSAFE.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", str(text)
    )
    return shown.replace("\n", " ") if one_line else shown


def escape_json_text(document: str) -> str:
    """A JSON document with C1 controls and DEL written as ``\\u`` escapes (JSON escapes only C0 itself)."""
    return re.sub("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]", lambda m: f"\\u{ord(m.group()):04x}", document)


# ---------------------------------------------------------------------------
# what the views show
# ---------------------------------------------------------------------------
@dataclass
class NodeRow:
    run: str
    node: str
    model: str = ""
    state: str = "waiting"
    detail: str = ""
    done_bytes: int | None = None
    total_bytes: int | None = None
    started: float | None = None
    finished: float | None = None


@dataclass
class Board:
    """Every node seen, in the order the runs announced them, and the batch's line count."""

    rows: dict[tuple[str, str], NodeRow] = field(default_factory=dict)
    run_names: dict[str, str] = field(default_factory=dict)
    lines_done: int = 0
    lines_total: int = 0
    started: float = field(default_factory=time.monotonic)
    last_line_at: float | None = None

    def apply(self, event: Event) -> NodeRow | None:
        """Record ``event``; the node row it changed, if any."""
        if isinstance(event, LineEvent):
            self.lines_done, self.lines_total, self.last_line_at = event.done, event.total, event.at
            return None
        if isinstance(event, PlanEvent):
            self.run_names[event.flow_run_id] = event.run_name
            for name, model, _ in event.nodes:
                self.rows.setdefault((event.flow_run_id, name), NodeRow(event.flow_run_id, name, model))
            return None
        row = self.rows.setdefault((event.flow_run_id, event.node), NodeRow(event.flow_run_id, event.node))
        if event.state in FINAL_STATES and row.finished is not None and event.state == row.state:
            return None
        if row.finished is not None and event.state not in FINAL_STATES and not event.detail.startswith("attempt"):
            return None  # a node that ended stays so (a model loaded ahead for it, late, changes nothing); a retry runs
        if row.started is None and event.state != "waiting":
            row.started = event.at
        row.state, row.detail = event.state, event.detail
        row.done_bytes, row.total_bytes = event.done_bytes, event.total_bytes
        row.finished = event.at if event.state in FINAL_STATES else None
        return row

    def seconds(self, row: NodeRow, now: float) -> float | None:
        if row.started is None:
            return None
        return (row.finished or now) - row.started

    def line_rate(self) -> tuple[float, float | None] | None:
        """Lines per second since the view started, and the seconds left at that rate (``None`` before the first
        line)."""
        if not self.lines_done or self.last_line_at is None:
            return None
        elapsed = max(self.last_line_at - self.started, 1e-6)
        rate = self.lines_done / elapsed
        left = (self.lines_total - self.lines_done) / rate if rate > 0 else None
        return rate, left


_STYLES = {
    "waiting": "dim",
    "downloading": "cyan",
    "loading": "cyan",
    "running": "bold blue",
    "done": "green",
    "cached": "magenta",
    "skipped": "yellow",
    "failed": "red",
}


def _bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def describe(row: NodeRow) -> str:
    """The state of a node in words: ``downloading model.safetensors 12.0 MB of 90.0 MB``."""
    text = row.state
    if row.state == "downloading" and row.done_bytes is not None:
        of = f" of {_bytes(row.total_bytes)}" if row.total_bytes else ""
        text += f" {row.detail} {_bytes(row.done_bytes)}{of}".rstrip()
    elif row.detail:
        text = row.detail if row.detail.startswith(row.state) else f"{text}: {row.detail}"
    return safe_text(text, one_line=True)


class LiveView:
    """A table of the nodes, redrawn in place on a terminal (stderr), and a line count for a batch."""

    def __init__(self, console: Console, *, batch: bool = False) -> None:
        self.board = Board()
        self.console = console
        self.batch = batch
        self._lock = threading.Lock()
        self._live = Live(console=console, refresh_per_second=4, transient=False, get_renderable=self._render)

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.board.apply(event)

    def __enter__(self) -> LiveView:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def _render(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self.batch:
                return Text(batch_line(self.board))
            table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
            for col in ("node", "model", "state", "seconds"):
                table.add_column(col, overflow="fold")
            for row in self.board.rows.values():
                secs = self.board.seconds(row, now)
                table.add_row(
                    Text(safe_text(row.node, one_line=True)),
                    Text(safe_text(row.model, one_line=True)),
                    Text(describe(row)[:160], style=_STYLES.get(row.state, "")),
                    Text("" if secs is None else f"{secs:.1f}"),
                )
            return Group(table) if self.board.rows else Text("planning...", style="dim")


def batch_line(board: Board) -> str:
    """``lines 3/10 done · 0.8/s · about 9 s left``."""
    text = f"lines {board.lines_done}/{board.lines_total or '?'} done"
    rate = board.line_rate()
    if rate is not None:
        per_second, left = rate
        text += f" · {per_second:.2f}/s"
        if left is not None:
            text += f" · about {left:.0f} s left"
    return text


class PlainView:
    """One line per change, for a pipe, a log file or ``--json`` (on stderr)."""

    def __init__(self, stream: TextIO, *, batch: bool = False) -> None:
        self.board = Board()
        self.stream = stream
        self.batch = batch
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            row = self.board.apply(event)
            lines: list[str] = []
            prefix = ""
            if isinstance(event, PlanEvent):
                prefix = self._prefix(event.flow_run_id)
                if not event.nodes:
                    lines.append(f"{prefix}plan: no task, the LLM answers directly")
                for name, model, why in event.nodes:
                    chosen = f" -> {model}" + (f" ({why})" if why else "") if model else " (no model)"
                    lines.append(f"{prefix}{name} waiting{chosen}")
            elif isinstance(event, LineEvent):
                ident = f" ({event.ident})" if event.ident else ""
                lines.append(f"line {event.line}{ident} {event.status}; {batch_line(self.board)}")
            elif row is not None and not (
                row.state == "downloading" and row.total_bytes and row.done_bytes != row.total_bytes
            ):
                secs = self.board.seconds(row, event.at)
                took = f" in {secs:.1f} s" if row.state in FINAL_STATES and secs is not None else ""
                lines.append(f"{self._prefix(row.run)}{row.node} {describe(row)}{took}")
            for line in lines:
                self.stream.write(safe_text(line, one_line=True) + "\n")
            self.stream.flush()

    def _prefix(self, flow_run_id: str) -> str:
        return f"[{self.board.run_names.get(flow_run_id, flow_run_id[:8])}] " if self.batch else ""


@contextlib.contextmanager
def progress_view(*, mode: str, batch: bool = False, stream: TextIO | None = None) -> Iterator[None]:
    """Show the runs of the block: ``mode`` is ``live`` (a terminal), ``plain`` (lines) or ``quiet`` (nothing).

    Prefect's run logs stay off the console and the libraries' bars are folded in, in every mode.
    """
    stream = stream or sys.stderr
    with run_logs_off_console(), library_progress():
        if mode == "quiet":
            yield
            return
        if mode == "live":
            view = LiveView(Console(file=stream, highlight=False), batch=batch)
            with view, subscribe(view):
                yield
            return
        with subscribe(PlainView(stream, batch=batch)):
            yield
