"""Nodes that start while the plan streams: planning, selection and execution overlapped in one flow run.

The planning call streams (``HUGGINGGPT_STREAM_PLAN``, on by default; a controller that cannot stream answers
whole, and this is then the ordinary path). Each task of the plan is validated as soon as its JSON object and
the tasks it depends on have arrived (:class:`tasks.plan.StreamedPlan`), and gets its model at once when it needs
no choice (a pinned task, or one with a single runnable candidate). The tasks that need the LLM's choice go to
the selection stage in batches: one selection call is in flight at a time, and the tasks that arrive meanwhile
form the next batch. A plan whose tasks all have a choice of models thus costs between one selection call (the
plan streams faster than one call) and one per such task (each arrives after the previous call ended), against
one call without streaming; the calls overlap the stream and the running nodes.

While the plan is still streaming, a node is submitted once its model is known and every node it depends on
has finished (it is given their finished task runs as upstreams, so the Prefect graph has its edges): nothing
submitted ever waits, so a plan found invalid late stops cleanly by submitting nothing more, while the nodes
already running finish and are reported. Once the whole plan has arrived and is valid, every remaining node is
submitted at once with its upstream futures, as without streaming.

:func:`run_streamed` is the dispatcher; it takes the function that submits one node, so it knows nothing of
task runners.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prefect.futures import PrefectFuture

from flows import events as progress_events
from flows.tag_limits import untagged
from tasks.execute import answered_ahead
from tasks.plan import PlanningError, plan_streamed_task
from tasks.prefetch import prefetch_models
from tasks.schemas import Assignment, ChatTurn, LLMUsage, PlanNode, PlanResult, SelectionResult
from tasks.select import SelectionError, needs_llm_choice, select_models, select_task
from tasks.services import Services

#: ``submit(node, assignment, unassigned_reason, futures)``: submit one node, with ``futures`` (by node id) holding
#: the task runs of the nodes it depends on; returns its future.
Submit = Callable[[PlanNode, Assignment | None, str | None, Mapping[int, PrefectFuture[Any]]], PrefectFuture[Any]]


@dataclass
class StreamedRun:
    """What :func:`run_streamed` did: the whole plan (or why there is none), the models, the submitted nodes."""

    plan: PlanResult | None = None
    error: Exception | None = None
    nodes: list[PlanNode] = field(default_factory=list)
    selection: SelectionResult = field(default_factory=lambda: SelectionResult(assignments=[]))
    futures: dict[int, PrefectFuture[Any]] = field(default_factory=dict)
    plan_seconds: float = 0.0
    select_seconds: float = 0.0
    first_submit_seconds: float | None = None
    submitted_while_streaming: int = 0

    @property
    def usage(self) -> LLMUsage:
        planned = self.plan.usage if self.plan is not None else getattr(self.error, "usage", None) or LLMUsage()
        return planned + self.selection.usage


def _in_thread(target: Callable[[], None], name: str) -> None:
    """``target`` in a daemon thread that sees this thread's context (the flow run its tasks belong to)."""
    context = contextvars.copy_context()
    threading.Thread(target=lambda: context.run(target), name=name, daemon=True).start()


def run_streamed(
    services: Services,
    request: str,
    inputs: Sequence[str],
    history: Sequence[ChatTurn],
    pins: Mapping[str, str],
    submit: Submit,
    *,
    run_id: str,
    run_name: str = "",
) -> StreamedRun:
    """Plan with a streamed reply, choose models and submit nodes as the plan arrives (see the module doc).

    Returns once every node of a valid plan is submitted, or, when planning or selection failed, once nothing more
    will be submitted (``error`` says why; the nodes already submitted are in ``futures``)."""
    settings = services.settings
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    availability = services.availability
    llm = services.chat_model
    out = StreamedRun()
    known: dict[int, PlanNode] = {}
    order: list[int] = []
    assigned: dict[int, Assignment] = {}
    unassigned: dict[int, str] = {}
    checks: list[Any] = []
    select_usage = LLMUsage()
    choosing: list[PlanNode] = []
    waiting_prefetch: dict[int, Assignment] = {}  # chosen, not yet prefetched: an upstream has no model yet
    finished: set[int] = set()
    state = {"planning": True, "selecting": False}
    started = time.perf_counter()

    def planner() -> None:
        try:
            with untagged(plan_streamed_task) as plan_streamed:
                result = plan_streamed(
                    settings,
                    request,
                    list(inputs),
                    list(history),
                    lambda node: events.put(("node", node)),
                )
        except Exception as exc:
            events.put(("plan-error", exc))
        else:
            events.put(("plan", result))

    def pins_for(nodes: Sequence[PlanNode]) -> dict[str, str]:
        tasks = {n.task for n in nodes}
        return {t: m for t, m in pins.items() if t in tasks}

    def record(selection: SelectionResult) -> None:
        nonlocal select_usage
        fresh = [a for a in selection.assignments if a.node_id not in assigned]
        assigned.update({a.node_id: a for a in selection.assignments})
        unassigned.update(selection.unassigned)
        checks.extend(selection.checks)
        select_usage = select_usage + selection.usage
        ids = {a.node_id for a in fresh} | set(selection.unassigned)
        progress_events.planned(run_id, run_name, [known[i] for i in order if i in ids], fresh)
        if settings.prefetch:  # not for nodes the result cache answers: they load no model
            waiting_prefetch.update({a.node_id: a for a in fresh})
            # a node is judged once every node it depends on has its model (the cache key needs their outputs)
            ready = [a for i, a in waiting_prefetch.items() if all(d in assigned for d in known[i].dep)]
            if ready:
                store = services.store(run_id)
                answered = answered_ahead(
                    settings, [known[i] for i in order], list(assigned.values()), store, clock=services.clock
                )
                for a in ready:
                    del waiting_prefetch[a.node_id]
                wanted = [a for a in ready if a.node_id not in answered]
                if wanted:
                    prefetch_models(settings, wanted, lambda: services.local_backend, run_id)

    def take(node: PlanNode) -> None:
        if node.id in known:
            return
        known[node.id] = node
        order.append(node.id)
        node_pins = pins_for([node])
        if needs_llm_choice(
            node.task, availability, node_pins, top_k=settings.top_k, max_fallbacks=settings.max_fallbacks
        ):
            choosing.append(node)
            return
        record(
            select_models(
                [node],
                availability,
                llm=llm,
                request=request,
                pins=node_pins,
                top_k=settings.top_k,
                max_fallbacks=settings.max_fallbacks,
            )
        )

    def start_selection() -> None:
        if state["selecting"] or not choosing or out.error is not None:
            return
        batch = list(choosing)
        choosing.clear()
        state["selecting"] = True

        def select() -> None:
            t0 = time.perf_counter()
            try:
                with untagged(select_task) as select:
                    selection = select(settings, request, batch, pins_for(batch))
                events.put(("selected", (selection, t0)))
            except Exception as exc:
                events.put(("select-error", (exc, t0)))

        _in_thread(select, "selection while the plan streams")

    def dispatch() -> None:
        if out.error is not None:
            return
        for node_id in order:  # in the order the tasks were accepted: every task after the tasks it uses
            node = known[node_id]
            if node_id in out.futures or (node_id not in assigned and node_id not in unassigned):
                continue
            if out.plan is None:  # still streaming: only nodes that can start now
                if not all(d in finished for d in node.dep):
                    continue
                out.submitted_while_streaming += 1
            elif not all(d in out.futures for d in node.dep):
                continue
            future = submit(node, assigned.get(node_id), unassigned.get(node_id), out.futures)
            out.futures[node_id] = future
            if out.first_submit_seconds is None:
                out.first_submit_seconds = time.perf_counter() - started
            future.add_done_callback(lambda _f, i=node_id: events.put(("done", i)))

    def stop(exc: Exception) -> None:
        if out.error is None:
            out.error = exc

    _in_thread(planner, "planning call, streamed")
    while state["planning"] or state["selecting"] or (out.error is None and len(out.futures) < len(known)):
        kind, payload = events.get()
        try:
            if kind == "node":
                take(payload)
            elif kind == "done":
                finished.add(payload)
            elif kind == "plan":
                state["planning"] = False
                out.plan_seconds = time.perf_counter() - started
                whole: PlanResult = payload
                out.plan = whole
                stray = sorted(set(pins) - {n.task for n in whole.nodes})
                if stray and settings.unused_pins != "ignore":  # a chat session's pins need not all be used
                    raise SelectionError(
                        f"--model pins task(s) {', '.join(stray)} that the plan does not use "
                        f"(plan tasks: {', '.join(sorted({n.task for n in whole.nodes})) or 'none'})"
                    )
                for node in whole.nodes:
                    take(node)
                if not whole.nodes:
                    progress_events.planned(run_id, run_name, [], [])  # the LLM answers directly
            elif kind == "plan-error":
                state["planning"] = False
                out.plan_seconds = time.perf_counter() - started
                stop(payload)
            elif kind == "selected":
                selection, t0 = payload
                state["selecting"] = False
                out.select_seconds += time.perf_counter() - t0
                record(selection)
            elif kind == "select-error":
                exc, t0 = payload
                state["selecting"] = False
                out.select_seconds += time.perf_counter() - t0
                stop(exc)
        except (SelectionError, PlanningError) as exc:
            stop(exc)
        start_selection()
        dispatch()
    by_id = known if out.plan is None else {n.id: n for n in out.plan.nodes}
    out.nodes = list(out.plan.nodes) if out.plan is not None and out.error is None else [by_id[i] for i in out.futures]
    out.selection = SelectionResult(
        assignments=[assigned[n.id] for n in out.nodes if n.id in assigned],
        unassigned={i: why for i, why in unassigned.items() if i in {n.id for n in out.nodes}},
        usage=select_usage,
        checks=checks,
    )
    return out
