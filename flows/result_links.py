"""Which values passed to a task run Prefect links, in the run graph, to the task run that returned them.

Prefect remembers every task result of a flow run by ``id()`` (``FlowRunContext.run_results``) and, when a later
task run is created, looks each value among its parameters up there: a hit draws an edge from the task run that
returned it. For a value that takes a weak reference (a pydantic model, a dataclass) Prefect checks that the hit
is the very object it registered. For one that does not (``list``, ``dict``, ``str``, ``tuple``), the id is all it
has, and CPython hands the id of a freed object to the next one made: a fresh ``[]`` of an independent plan node
can then be taken for a freed result and drawn with an upstream edge it does not have, now and then, under load.

A request's and a batch's flow runs keep only the links Prefect can verify (:func:`verified_result_links`). Plan
nodes get their edges from their upstream futures, and the stages pass futures or pydantic models, so no edge the
graph should show depends on an unverifiable link.
"""

from __future__ import annotations

from typing import Any

from prefect.context import FlowRunContext


class VerifiedResultLinks(dict[int, tuple[Any, Any, Any]]):
    """``FlowRunContext.run_results`` that keeps an entry only with a weak reference to the object it stands for,
    so that a lookup can tell that object from a later one with the same id."""

    def __setitem__(self, key: int, entry: tuple[Any, Any, Any]) -> None:
        if entry[2] is None:  # no weak reference: an id alone, which a later object may take over
            return
        super().__setitem__(key, entry)


def verified_result_links(context: FlowRunContext | None = None) -> None:
    """Make the current (or given) flow run keep only the result links Prefect can verify."""
    context = context or FlowRunContext.get()
    if context is None or isinstance(context.run_results, VerifiedResultLinks):
        return
    links = VerifiedResultLinks()
    for key, entry in context.run_results.items():
        links[key] = entry
    context.run_results = links
