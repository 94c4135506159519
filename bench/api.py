"""The Prefect API a bench run talks to: switching it within a block, draining Prefect's per-process log and event
workers on each switch, counting the API's 503 answers, and keeping Prefect's run logs off the bench's console."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def prefect_api(url: str | None) -> Iterator[None]:
    """Within the block, this process talks to the Prefect API at ``url`` (``None``: the bench's default API)."""
    if url is None:
        yield
        return
    import prefect.settings

    # Prefect's log and event workers are per process and bind to the API they first talk to: drain them on
    # every switch, so that the next run's logs and events (task runs are recorded from events) reach its API
    flush_prefect_workers()
    try:
        with prefect.settings.temporary_settings(updates={prefect.settings.PREFECT_API_URL: url}):
            yield
    finally:
        flush_prefect_workers()


def flush_prefect_workers() -> None:
    """Send the logs and events still queued and stop Prefect's log and event workers (the next log or event
    starts new ones, bound to the API then in use)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=15)


@contextlib.contextmanager
def api_retries() -> Iterator[Counter[str]]:
    """Within the block, count the Prefect API's 503 answers by endpoint: the requests its client retries after
    waiting 2, 4, 8... seconds (Prefect's server answers 503 when its database reports a lock)."""
    import re

    import httpx

    counts: Counter[str] = Counter()
    lock = threading.Lock()
    ids = re.compile(r"[0-9a-f]{8}-[0-9a-f-]{27}")

    def note(request: Any, response: Any) -> None:
        if response.status_code == 503:
            with lock:
                counts[f"{request.method} {ids.sub('{id}', request.url.path)}"] += 1

    real_async, real_sync = httpx.AsyncClient.send, httpx.Client.send

    async def send_async(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = await real_async(self, request, *args, **kwargs)
        note(request, response)
        return response

    def send_sync(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
        response = real_sync(self, request, *args, **kwargs)
        note(request, response)
        return response

    httpx.AsyncClient.send = send_async  # type: ignore[method-assign]
    httpx.Client.send = send_sync  # type: ignore[method-assign]
    try:
        yield counts
    finally:
        httpx.AsyncClient.send = real_async  # type: ignore[method-assign]
        httpx.Client.send = real_sync  # type: ignore[method-assign]


def quiet_prefect_console() -> None:
    """Keep Prefect's run logs going to its API (as in any run) but off the console, where the bench reports."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(lg for lg in logging.root.manager.loggerDict.values() if hasattr(lg, "handlers"))]
    for lg in loggers:
        for handler in getattr(lg, "handlers", []):
            if isinstance(handler, PrefectConsoleHandler):
                handler.setLevel(logging.ERROR)
