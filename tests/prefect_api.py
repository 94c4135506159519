"""Reading a flow run's task runs back from the Prefect API.

Task runs reach the API as events, which the server records a moment after the flow run has ended: readers wait
until the task runs they expect are there in a final state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId


async def read_task_runs(flow_run_id: str, expect: Collection[str], *, timeout: float = 30.0) -> dict[str, Any]:
    """The flow run's task runs by name, once every name in ``expect`` is recorded in a final state."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            by_name = {r.name: r for r in runs}
            missing = [n for n in expect if n not in by_name or not (by_name[n].state and by_name[n].state.is_final())]
            if not missing:
                return by_name
            if time.monotonic() > deadline:
                raise AssertionError(f"task runs not recorded in a final state after {timeout:g} s: {missing}")
            await asyncio.sleep(0.2)


def task_runs(flow_run_id: str, expect: Collection[str], *, timeout: float = 30.0) -> dict[str, Any]:
    return asyncio.run(read_task_runs(flow_run_id, expect, timeout=timeout))
