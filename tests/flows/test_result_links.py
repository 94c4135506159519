"""A value whose id once belonged to a freed task result is not drawn as that task run's output."""

from __future__ import annotations

import sys
from typing import Any

import pytest
from prefect import flow, task
from prefect.client.schemas.objects import State
from prefect.context import FlowRunContext
from prefect.utilities.engine import collect_task_run_inputs_sync, link_state_to_task_run_result
from pydantic import BaseModel

from flows.prefect_setup import prefect_run_settings
from flows.result_links import verified_result_links

pytestmark = pytest.mark.usefixtures("prefect_server")


class Box(BaseModel):
    value: int


@task
def make_box() -> Box:
    return Box(value=1)


def _recycled_list(freed: list[Any]) -> list[Any] | None:
    """A new list that takes over the id of ``freed`` once it is freed (CPython hands a freed list to the next one
    made), or ``None`` when another thread made a list in between and took it (the switch interval is raised for
    the two steps, which makes that rare)."""
    freed_id = id(freed)
    # CPython keeps up to 80 freed lists for reuse, and frees a list for good when it already keeps 80: take them
    # all first, so the one freed next is the one reused next
    drained = [[] for _ in range(100)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(60.0)
    try:
        freed.clear()
        del freed  # the caller passed its last reference on
        recycled: list[Any] = []
    finally:
        sys.setswitchinterval(interval)
    del drained
    return recycled if id(recycled) == freed_id else None


def _recycled_result(state: State) -> list[Any]:
    """A list holding the id of a freed list-valued result of the task run behind ``state``; tried again (a bounded
    number of times) when another thread took the freed list first."""
    for _ in range(100):
        recycled = _recycled_list(_linked_list(state))
        if recycled is not None:
            return recycled
    raise AssertionError("no new list took over a freed result's id in 100 tries")


def _linked_list(state: State) -> list[Any]:
    """A list-valued result of the task run behind ``state``, linked to it the way Prefect links results."""
    result = ["a", "b"]
    link_state_to_task_run_result(state, result)
    return result


def _stale_lookup(verify: bool) -> tuple[int, int]:
    """Inside a flow run: how many upstream links a recycled id gets, and how many a live pydantic result gets."""

    @flow
    def probe() -> tuple[int, int]:
        if verify:
            verified_result_links()
        state = make_box(return_state=True)
        box = state.result()
        recycled = _recycled_result(state)
        assert FlowRunContext.get() is not None
        return len(collect_task_run_inputs_sync(recycled)), len(collect_task_run_inputs_sync(box))

    with prefect_run_settings():
        return probe()


def test_prefect_alone_takes_a_recycled_id_for_a_result() -> None:
    """What the module guards against, shown on Prefect as it is: the test below is meaningful only while this
    holds."""
    recycled_links, box_links = _stale_lookup(verify=False)
    assert recycled_links == 1
    assert box_links == 1


def test_verified_links_ignore_a_recycled_id_and_keep_a_pydantic_result() -> None:
    recycled_links, box_links = _stale_lookup(verify=True)
    assert recycled_links == 0
    assert box_links == 1
