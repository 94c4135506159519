"""Prefect's settings for this project, in one place: how a process runs request flows (heartbeats, the embedded
server, console logs), where Prefect keeps results, and how a command ends when Prefect's queues cannot drain."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect.settings import temporary_settings

from tasks.settings import Settings
from tasks.shared import shared
from tasks.storage import StorageError, resolve_storage, without_credentials

EPHEMERAL_STARTUP_SECONDS = 90


PREFECT_DRAIN_SECONDS = 10.0


@contextlib.contextmanager
def prefect_run_settings(*, heartbeats: bool = False, quiet: bool = False) -> Iterator[None]:
    """Prefect settings for running requests from this process.

    Flow-run heartbeats (crash detection for long runs) cost about a second at the
    end of every run; they are off unless ``HUGGINGGPT_HEARTBEATS`` is set.
    """
    from prefect.settings import get_current_settings

    updates: dict[str, Any] = {}
    if not heartbeats:
        updates["flows.heartbeat_frequency"] = None
    if get_current_settings().server.ephemeral.startup_timeout_seconds < EPHEMERAL_STARTUP_SECONDS:
        # Prefect's embedded server can take longer than its default 20 s to start on a small, busy machine
        updates["server.ephemeral.startup_timeout_seconds"] = EPHEMERAL_STARTUP_SECONDS
    if quiet:
        updates["logging.level"] = "WARNING"
    if not get_current_settings().api.url:
        # the embedded server's telemetry task prints a traceback to the terminal when it cannot send (offline)
        updates["server.analytics_enabled"] = False
    with temporary_settings(updates=updates), _console_quiet(quiet):
        yield


def drain_prefect_queues(code: int, timeout: float = PREFECT_DRAIN_SECONDS) -> int:
    """Send the events and logs Prefect still queues, for at most ``timeout`` seconds, then return ``code``. When the
    Prefect API is gone they cannot be sent, and Prefect's own drain at interpreter exit waits for them without a
    bound (an hour and more): then this process exits at once with ``code``, its output flushed."""
    import os
    import sys

    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    deadline = time.monotonic() + timeout
    pending = False
    for service in (EventsWorker, APILogWorker):
        outcome = service.drain_all(timeout=max(deadline - time.monotonic(), 0.1))
        if isinstance(outcome, tuple) and outcome[1]:
            pending = True
    if pending:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


@contextlib.contextmanager
def _console_quiet(quiet: bool) -> Iterator[None]:
    """With ``quiet``, Prefect's console handlers show warnings and errors only (``logging.level`` is read once, when
    Prefect configures logging; the handlers that send logs to the Prefect API keep every level)."""
    import logging

    from prefect.logging.handlers import PrefectConsoleHandler

    if not quiet:
        yield
        return
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    handlers = {h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, PrefectConsoleHandler)}
    levels = {h: h.level for h in handlers}
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.WARNING))
    try:
        yield
    finally:
        for handler, level in levels.items():
            handler.setLevel(level)


def results_storage_url(settings: Settings) -> str:
    """Where Prefect persists task results: ``HUGGINGGPT_RESULTS_STORAGE``, else beside the runs."""
    if settings.results_storage:
        return settings.results_storage
    root, _ = resolve_storage(settings.storage, settings.storage_options)
    return f"{root.rstrip('/')}/prefect-results"


def results_block(settings: Settings) -> Any:
    """The saved block Prefect persists task results to, saved once per process, Prefect API and location.

    Prefect only persists results to a saved block. Passing the saved instance itself (rather than its slug)
    spares every flow run a block read from the API, and saving it once spares every call a write.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    url = results_storage_url(settings)
    if "://" not in url or url.startswith("file://"):
        block = LocalFileSystem(basepath=str(Path(url.removeprefix("file://")).expanduser().resolve()))
    else:
        # credentials come from the environment (AWS_* variables, instance roles), not from the block
        block = RemoteFileSystem(basepath=url, settings=without_credentials(settings.storage_options))
    content = block.model_dump_json()
    key = (str(PREFECT_API_URL.value() or ""), str(PREFECT_HOME.value()), content)

    def save() -> Any:
        block.save("hugginggpt-results-" + hashlib.sha256(content.encode()).hexdigest()[:12], overwrite=True)
        return block

    return shared("results-block", key, save)


def use_result_storage(settings: Settings) -> None:
    """Have Prefect persist this flow run's results, and its task runs', as readable JSON where the settings say
    (``HUGGINGGPT_PERSIST_RESULTS``, ``HUGGINGGPT_RESULTS_STORAGE``).

    Called first thing in the flow: the run's result store lives in its run context, which every task run it starts
    inherits, and from which Prefect persists the flow's own return value. Deciding it here rather than through
    options attached by a caller is what lets deployed runs and subflow calls honour the settings.
    """
    from prefect.context import FlowRunContext
    from prefect.serializers import JSONSerializer

    context = FlowRunContext.get()
    if context is None or not settings.persist_results:
        return
    try:
        block = results_block(settings)
    except StorageError:
        return  # the run itself reports the storage error, with its summary
    context.result_store = context.result_store.model_copy(
        update={"result_storage": block, "serializer": JSONSerializer()}
    )
    context.persist_result = True
