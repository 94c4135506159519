"""Live progress of requests and batches, as the runs themselves report it.

The run reports to an in-process channel (:func:`emit`, :func:`subscribe`):

- the request flow announces its plan and model choices (:func:`planned`): every node starts ``waiting``;
- Prefect's own state hooks of the node task runs (:data:`NODE_STATE_HOOKS`) report ``running``, ``done``,
  ``cached``, ``skipped`` and ``failed``, with a retry's attempt number;
- the libraries' progress bars (huggingface_hub downloads, transformers' weight loading) are folded in while
  :func:`library_progress` is active: a download reports ``downloading`` with its bytes, a weight load
  ``loading``, and neither prints anything;
- a batch reports each finished line (:class:`LineEvent`).

The terminal views (:class:`LiveView` for a terminal, :class:`PlainView` for a pipe or ``--json``) only read
these events. Everything shown that came from a model or the LLM goes through :func:`safe_text` first: rich
markup is never interpreted and control characters (escape sequences) never reach the terminal.

Events are process-local: under a Dask task runner the nodes run in other processes, and only the plan and the
final summary are shown.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tasks.parsing import clip
from tasks.prefetch import FETCHING_FOR
from tasks.schemas import CACHED_SUFFIX

logger = logging.getLogger(__name__)

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
# events and the channel
# ---------------------------------------------------------------------------
NODE_STATES = ("waiting", "downloading", "loading", "running", "done", "cached", "skipped", "failed")
FINAL_STATES = frozenset({"done", "cached", "skipped", "failed"})


@dataclass(frozen=True)
class PlanEvent:
    """A request's plan and model choices are known: its nodes are waiting."""

    flow_run_id: str
    run_name: str
    nodes: tuple[tuple[str, str, str], ...]  # (node name, model or "", why)
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class NodeEvent:
    """A node of a request changed state."""

    flow_run_id: str
    node: str
    state: str
    detail: str = ""
    done_bytes: int | None = None
    total_bytes: int | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class LineEvent:
    """A batch line finished (``done`` of ``total`` lines have)."""

    line: int
    status: str
    done: int
    total: int
    ident: str = ""
    at: float = field(default_factory=time.monotonic)


Event = PlanEvent | NodeEvent | LineEvent
_listeners: list[Callable[[Event], None]] = []
_listeners_lock = threading.Lock()


def emit(event: Event) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber never fails the run."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a view must not break a run
            logger.debug("progress listener failed", exc_info=True)


@contextlib.contextmanager
def subscribe(listener: Callable[[Event], None]) -> Iterator[None]:
    """Receive every event emitted in this process while the block runs."""
    with _listeners_lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _listeners_lock:
            _listeners.remove(listener)


def planned(flow_run_id: str, run_name: str, nodes: Sequence[Any], assignments: Sequence[Any]) -> None:
    """Announce a request's nodes (``PlanNode``) and their models (``Assignment``)."""
    by_node = {a.node_id: a for a in assignments}
    emit(
        PlanEvent(
            flow_run_id,
            run_name,
            tuple(
                (
                    n.name,
                    by_node[n.id].model if n.id in by_node else "",
                    by_node[n.id].reason if n.id in by_node else "",
                )
                for n in nodes
            ),
        )
    )


_PREFECT_STATES = {"Completed": "done", "Cached": "cached", "Skipped": "skipped"}


#: task runs that ended failed, or that will end skipped because an upstream one did (their hooks run before their
#: dependents start): a node whose upstream is among them is not reported ``running``, it is about to be skipped
_ENDED_BADLY: dict[str, None] = {}
_ENDED_BADLY_KEPT = 10_000
_ended_lock = threading.Lock()


def _ended_badly(task_run: Any, *, mark: bool = False) -> bool:
    """Whether an upstream task run of ``task_run`` ended badly; with ``mark``, ``task_run`` is remembered as one."""
    upstream = {str(getattr(r, "id", "")) for r in (getattr(task_run, "task_inputs", None) or {}).get("upstream", [])}
    with _ended_lock:
        blocked = any(u in _ENDED_BADLY for u in upstream)
        if mark or blocked:
            _ENDED_BADLY[str(task_run.id)] = None
            while len(_ENDED_BADLY) > _ENDED_BADLY_KEPT:
                _ENDED_BADLY.pop(next(iter(_ENDED_BADLY)))
    return blocked


def node_state_hook(task: Any, task_run: Any, state: Any) -> None:
    """A Prefect state hook of the node task runs: reports the state they entered (a node about to be skipped, as
    an upstream node ended badly, is not reported running)."""
    name = "running" if state.is_running() else _PREFECT_STATES.get(state.name, "failed" if state.is_failed() else None)
    if name is None or (name == "running" and _ended_badly(task_run)):
        return
    if name == "failed":
        _ended_badly(task_run, mark=True)
    detail = (
        (state.message or "").removeprefix(f"{str(task_run.name).removesuffix(CACHED_SUFFIX)} ")
        if name in ("failed", "cached", "skipped")
        else ""
    )
    if name == "running" and task_run.run_count > 1:
        detail = f"attempt {task_run.run_count}"
    node = str(task_run.name).removesuffix(CACHED_SUFFIX)
    emit(NodeEvent(str(task_run.flow_run_id), node, name, detail=detail))


#: the ``on_running``, ``on_completion`` and ``on_failure`` hooks of the node task
NODE_STATE_HOOKS: dict[str, list[Callable[..., None]]] = {
    "on_running": [node_state_hook],
    "on_completion": [node_state_hook],
    "on_failure": [node_state_hook],
}


# ---------------------------------------------------------------------------
# the libraries' progress bars, folded into node events
# ---------------------------------------------------------------------------
def _current_nodes() -> list[tuple[str, str]]:
    """The nodes this thread works for: the node of its task run, or those a prefetch fetches a model for."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run is not None:
        return [(str(ctx.task_run.flow_run_id), ctx.task_run.name)]
    fetching = FETCHING_FOR.get()
    return [(fetching[0], name) for name in fetching[1]] if fetching else []


class _Silent(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _download_bar_class(base: type) -> type:
    """huggingface_hub's tqdm, counting bytes for the node running in this thread and printing nothing."""

    class DownloadBar(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(disable=False, file=_Silent())
            self._nodes = _current_nodes()
            self._last = 0.0
            super(base, self).__init__(*args, **kwargs)  # tqdm's own: the hub's would disable it again

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            if self._nodes and (now - self._last >= 0.2 or (self.total and self.n >= self.total)):
                self._last = now
                for node in self._nodes:
                    emit(
                        NodeEvent(
                            *node,
                            "downloading",
                            detail=str(self.desc or ""),
                            done_bytes=int(self.n),
                            total_bytes=int(self.total) if self.total else None,
                        )
                    )
            return shown

    return DownloadBar


class _LoadingBar:
    """transformers' bar of a weight load: reports ``loading`` then ``running`` for the node, prints nothing."""

    def __init__(self, iterable: Any = None, *args: Any, desc: str | None = None, **kwargs: Any) -> None:
        self._iterable = iterable
        self._desc = desc or "loading"
        self._nodes = _current_nodes()
        self._ahead = bool(self._nodes) and FETCHING_FOR.get() is not None  # loaded ahead by a prefetch
        self._open = False

    def _start(self) -> None:
        if self._nodes and not self._open:
            self._open = True
            for node in self._nodes:
                emit(NodeEvent(*node, "loading", detail=self._desc + (" (ahead of the node)" if self._ahead else "")))

    def close(self) -> None:
        if self._nodes and self._open:
            self._open = False
            for node in self._nodes:  # a node that loaded its own model goes on; one loaded ahead waits its turn
                emit(
                    NodeEvent(
                        *node, "waiting" if self._ahead else "running", detail="model loaded" if self._ahead else ""
                    )
                )

    def __iter__(self) -> Iterator[Any]:
        self._start()
        try:
            yield from self._iterable or ()
        finally:
            self.close()

    def __enter__(self) -> _LoadingBar:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float | None = 1) -> None:
        self._start()

    def __getattr__(self, name: str) -> Callable[..., None]:  # set_description, set_postfix, refresh, ...
        return lambda *args, **kwargs: None


_library_lock = threading.Lock()
_library_users = 0
_library_saved: dict[str, Any] = {}


@contextlib.contextmanager
def library_progress() -> Iterator[None]:
    """While the block runs, huggingface_hub's download bars and transformers' loading bars report to the channel
    instead of printing; transformers' warnings are kept to errors. Restored after the block."""
    global _library_users
    with _library_lock:
        _library_users += 1
        if _library_users == 1:
            _install()
    try:
        yield
    finally:
        with _library_lock:
            _library_users -= 1
            if _library_users == 0:
                _uninstall()


def _install() -> None:
    hub_tqdm = sys.modules.get("huggingface_hub.utils.tqdm")
    if hub_tqdm is None:
        import huggingface_hub.utils.tqdm  # noqa: F401

        hub_tqdm = sys.modules["huggingface_hub.utils.tqdm"]
    _library_saved["hub"] = hub_tqdm.tqdm
    hub_tqdm.tqdm = _download_bar_class(hub_tqdm.tqdm)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    _library_saved["hook"] = hf_logging.set_tqdm_hook(lambda factory, args, kwargs: _LoadingBar(*args, **kwargs))
    _library_saved["verbosity"] = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()


def _uninstall() -> None:
    sys.modules["huggingface_hub.utils.tqdm"].tqdm = _library_saved.pop("hub")
    if "hook" in _library_saved:
        from transformers.utils import logging as hf_logging

        hf_logging.set_tqdm_hook(_library_saved.pop("hook"))
        hf_logging.set_verbosity(_library_saved.pop("verbosity"))


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


class _RunLogsOffConsole(logging.Filter):
    """Keeps flow- and task-run log records (they still reach Prefect's API) off the console."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(("prefect.flow_runs", "prefect.task_runs"))


class _Shown(str):
    """A string whose ``repr`` is itself (for a ``%r`` in a log record's format)."""

    def __repr__(self) -> str:
        return str(self)


#: the hooks of node task runs whose every call Prefect logs twice at INFO: one line per node is enough
_QUIET_HOOKS = ("node_state_hook", "apply-tags")


class _TidyRunLogs(logging.Filter):
    """Prefect's task-run log records, tidied: the ``exc_info`` of a record logged with ``exc_info=True`` outside
    any exception is dropped (Prefect logs a task run that returned a Failed state that way, which prints a stray
    "NoneType: None"); the end of a skipped node (Prefect logs every final state but Completed as an error) is
    logged as information; Prefect's two lines around every call of a node's own hooks (:func:`node_state_hook`, the
    tags of :class:`flows.tag_limits.ApplyTags`) are dropped, and so is
    its "Task run failed with state" line, which dumps the node's whole result."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        message = str(record.msg)
        if record.levelno == logging.ERROR and message.startswith("Finished in state Skipped("):
            record.levelno, record.levelname = logging.INFO, "INFO"
        if message.startswith("Task run failed with state") or (
            message.startswith("Task run failed with %s")
            and isinstance(record.args, tuple)
            and record.args[:1] == ("state",)
        ):
            if isinstance(record.args, tuple) and len(record.args) == 5:  # a retry: kept, the state named briefly
                state = record.args[1]
                brief = f"{getattr(state, 'name', 'Failed')}({clip(str(getattr(state, 'message', '') or ''))!r})"
                record.args = (record.args[0], _Shown(brief), *record.args[2:])
                return True
            return False  # the whole result object; the node logged why, and "Finished in state Failed" follows
        return not (record.levelno <= logging.INFO and any(f"'{hook}'" in message for hook in _QUIET_HOOKS))


def tidy_run_logs() -> None:
    """Install :class:`_TidyRunLogs` on Prefect's task-run logger (once per process)."""
    run_logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _TidyRunLogs) for f in run_logger.filters):
        run_logger.addFilter(_TidyRunLogs())


@contextlib.contextmanager
def run_logs_off_console() -> Iterator[None]:
    """While the block runs, Prefect's console handler shows no flow- or task-run logs: the views show the runs,
    the logs (tracebacks of failed task runs included) stay in Prefect's API and UI."""
    from prefect.logging.handlers import PrefectConsoleHandler

    seen: set[int] = set()
    handlers = []
    for name in ("", "prefect", "prefect.flow_runs", "prefect.task_runs"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, PrefectConsoleHandler) and id(handler) not in seen:
                seen.add(id(handler))
                handlers.append(handler)
    log_filter = _RunLogsOffConsole()
    for handler in handlers:
        handler.addFilter(log_filter)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(log_filter)


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
