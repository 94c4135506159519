"""Prefect's run logs on the console, tidied while a view shows the runs: off the console within
:func:`run_logs_off_console` (they still reach Prefect's API), and without Prefect's noise about a node's hooks,
a stray ``NoneType: None`` or a whole failed result (:func:`tidy_run_logs`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from tasks.parsing import clip


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
    logged as information; Prefect's two lines around every call of a node's own hooks
    (:func:`flows.events.node_state_hook`, the tags of :class:`flows.tag_limits.ApplyTags`) are dropped, and so is
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
