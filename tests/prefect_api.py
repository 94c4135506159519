"""Reading runs and artifacts back from the Prefect API, with a bounded wait for what is expected.

Task runs reach the API as events, which the server records a moment after the flow run has ended; logs are sent
in batches; a filter without a flow run reads a page of every run's records. So readers say what they expect and
read again until it is there (:func:`read_until`), never once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

T = TypeVar("T")


async def read_until(
    read: Callable[[Any], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 30.0, what: str = ""
) -> T:
    """``await read(client)`` again until ``done`` holds for what it returned, which is returned;
    ``AssertionError`` naming ``what`` (and showing the last value) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            value = await read(client)
            if done(value):
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"not read back after {timeout:g} s: {what}; last read: {value!r}"[:2000])
            await asyncio.sleep(0.1)


def api_until(
    read: Callable[[Any], Awaitable[T]], done: Callable[[T], bool], *, timeout: float = 30.0, what: str = ""
) -> T:
    """:func:`read_until` from synchronous code."""
    return asyncio.run(read_until(read, done, timeout=timeout, what=what))


async def read_task_runs(flow_run_id: str, expect: Collection[str], *, timeout: float = 30.0) -> dict[str, Any]:
    """The flow run's task runs by name, once every name in ``expect`` is recorded in a final state."""

    async def read(client: Any) -> dict[str, Any]:
        runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return {r.name: r for r in runs}

    def final(by_name: dict[str, Any]) -> bool:
        return all(n in by_name and by_name[n].state and by_name[n].state.is_final() for n in expect)

    return await read_until(read, final, timeout=timeout, what=f"task runs {sorted(expect)} in a final state")


def task_runs(flow_run_id: str, expect: Collection[str], *, timeout: float = 30.0) -> dict[str, Any]:
    return asyncio.run(read_task_runs(flow_run_id, expect, timeout=timeout))


def record_slot_requests(monkeypatch: Any) -> list[list[str]]:
    """Record, for the rest of the test, the names of every concurrency slot request Prefect's task engine makes
    (``tag:<tag>`` for each tag of a task run it acquires for), in order; the requests still reach the API."""
    from prefect.concurrency import _sync

    requests: list[list[str]] = []
    real_acquire = _sync.acquire_concurrency_slots_with_lease

    def acquire(names: list[str], *args: Any, **kwargs: Any) -> Any:
        requests.append(sorted(names))
        return real_acquire(names, *args, **kwargs)

    monkeypatch.setattr(_sync, "acquire_concurrency_slots_with_lease", acquire)
    return requests
