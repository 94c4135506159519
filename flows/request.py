"""The per-request flow: plan -> select -> one task run per plan node -> respond -> summary.

Each plan node is a task run named after it (``image-to-text#0``), submitted
with its upstream futures so the Prefect API records the planned edges;
independent nodes run at the same time. A failed node fails alone: its
dependents end as skipped, its siblings go on, and the response still runs.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.settings import temporary_settings
from prefect.states import Failed, State
from prefect.utilities.annotations import allow_failure

from tasks.execute import run_node
from tasks.llm import LLMError
from tasks.plan import PlanningError, plan_task
from tasks.report import artifact_key, node_rows, summary_markdown
from tasks.respond import respond_task
from tasks.schemas import ChatTurn, NodeResult, PlanNode, RunSummary
from tasks.select import SelectionError, parse_pins, select_task
from tasks.settings import LLMNotConfiguredError, Settings, load_settings
from tasks.storage import ArtifactStore, StorageError

MAX_REQUEST_CHARS = 20_000


class RequestError(ValueError):
    """The request itself is unusable (empty, too long)."""


def _run_name() -> str:
    request = str(flow_run.parameters.get("request", "")).strip().replace("\n", " ")
    return (request[:60] + "...") if len(request) > 60 else (request or "empty request")


def _collect(node: PlanNode, future: PrefectFuture[Any]) -> NodeResult:
    future.wait()
    state = future.state
    try:
        value = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself could not be read
        value = exc
    if isinstance(value, NodeResult):
        return value
    return NodeResult(id=node.id, task=node.task, status="failed", error=f"task run ended {state.name}: {value}")


def _publish(summary: RunSummary, store: ArtifactStore | None) -> None:
    """summary.json beside the run's files, and the markdown and table artifacts."""
    log = get_run_logger()
    if store is not None:
        try:
            store.put_text("summary.json", summary.model_dump_json(indent=2))
        except StorageError as exc:
            log.error("could not store summary.json: %s", exc)
            summary.error = (summary.error + "; " if summary.error else "") + str(exc)
    run = summary.flow_run_id or "local"
    create_markdown_artifact(
        key=artifact_key("hugginggpt", run, "summary"),
        markdown=summary_markdown(summary),
        description=f"HuggingGPT summary: {summary.request[:80]}",
    )
    rows = node_rows(summary)
    if rows:
        create_table_artifact(
            key=artifact_key("hugginggpt", run, "nodes"),
            table=rows,
            description="One row per plan node",
        )


def _finish(summary: RunSummary, store: ArtifactStore | None, t_start: float) -> RunSummary | State:
    summary.timings["total"] = time.perf_counter() - t_start
    failed = [r for r in summary.results if r.status != "completed"]
    if summary.error or failed:
        summary.status = "failed"
    _publish(summary, store)
    if summary.status == "failed":
        reason = summary.error or f"{len(failed)} of {len(summary.results)} task(s) did not complete: " + "; ".join(
            f"{r.task}#{r.id} {r.status}: {r.error}" for r in failed
        )
        return Failed(message=reason, data=summary)
    return summary


@flow(name="hugginggpt-request", flow_run_name=_run_name, validate_parameters=True)
def hugginggpt_request(
    request: str,
    inputs: list[str] | None = None,
    models: dict[str, str] | None = None,
    history: list[ChatTurn] | None = None,
    storage: str | None = None,
    catalog: str | None = None,
) -> RunSummary:
    """Answer one request: plan, select models, run the plan's graph, respond.

    Args:
        request: what the user asks, in plain language.
        inputs: files the request refers to (paths, http(s) or fsspec URLs).
        models: pinned models, ``{task: model id}``.
        history: earlier turns of the conversation.
        storage: fsspec URL of the artifact store (default ``HUGGINGGPT_STORAGE``).
        catalog: extra catalog JSONL (default ``HUGGINGGPT_CATALOG``).

    Returns the :class:`RunSummary`; when a node failed the flow run ends Failed
    with the summary as its data (``return_state=True`` gives it back).
    """
    t_start = time.perf_counter()
    log = get_run_logger()
    inputs = list(inputs or [])
    history = list(history or [])
    settings = load_settings(storage=storage, catalog=catalog)
    run_id = str(flow_run.id or uuid.uuid4())
    summary = RunSummary(request=request, inputs=inputs, flow_run_id=run_id)
    store: ArtifactStore | None = None
    try:
        store = ArtifactStore(settings.storage, run_id, settings.storage_options)
        summary.storage_uri = store.run_uri
        summary.plan, summary.plan_repairs, summary.assignments, summary.results, response = _run_stages(
            settings, request, inputs, parse_pins(models), history, store, summary
        )
    except (RequestError, PlanningError, LLMError, LLMNotConfiguredError, SelectionError, StorageError) as exc:
        log.error("request failed: %s", exc)
        summary.error = str(exc)
        summary.answer = f"The request could not be completed: {exc}"
        summary.answer_source = "fallback"
        return _finish(summary, store, t_start)
    summary.answer = response.answer
    summary.answer_source = response.source
    summary.answer_error = response.error
    summary.llm = summary.llm + response.usage
    log.info("answer (%s): %s", response.source, response.answer)
    return _finish(summary, store, t_start)


def _run_stages(
    settings: Settings,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
):
    log = get_run_logger()
    if not request.strip():
        raise RequestError("the request is empty: say what you want done")
    if len(request) > MAX_REQUEST_CHARS:
        raise RequestError(f"the request is {len(request)} characters long; the limit is {MAX_REQUEST_CHARS}")

    t0 = time.perf_counter()
    plan = plan_task(settings, request, inputs, history)
    summary.timings["plan"] = time.perf_counter() - t0
    summary.llm = summary.llm + plan.usage
    summary.plan, summary.plan_repairs = plan.nodes, plan.repairs
    store.put_json("plan.json", [n.model_dump() for n in plan.nodes])
    log.info("plan (%d task(s)): %s", len(plan.nodes), "; ".join(_describe(n) for n in plan.nodes) or "answer directly")
    for repair in plan.repairs:
        log.info("plan repaired: %s", repair)

    t0 = time.perf_counter()
    selection = select_task(settings, request, plan.nodes, pins) if plan.nodes else None
    summary.timings["select"] = time.perf_counter() - t0
    assignments = selection.assignments if selection else []
    if selection is not None:
        summary.llm = summary.llm + selection.usage
        for a in assignments:
            log.info("%s#%d -> %s (%s)", a.task, a.node_id, a.model, a.reason)
        for node_id, why in selection.unassigned.items():
            log.warning("task %d has no model: %s", node_id, why)

    t0 = time.perf_counter()
    results = execute_graph(settings, plan.nodes, assignments, selection.unassigned if selection else {}, store.run_id)
    summary.timings["execute"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    response = respond_task(settings, request, plan.nodes, assignments, results, history)
    summary.timings["respond"] = time.perf_counter() - t0
    return plan.nodes, plan.repairs, assignments, results, response


def _describe(node: PlanNode) -> str:
    dep = f" after {','.join(map(str, node.dep))}" if node.dep else ""
    return f"{node.name}{dep}"


def execute_graph(
    settings: Settings,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Any],
    unassigned: Mapping[int, str],
    run_id: str,
) -> list[NodeResult]:
    """Submit one task run per node, each with its upstream futures (``allow_failure`` so a node whose
    upstream failed still starts under its own name and ends as skipped); wait for all."""
    by_node = {a.node_id: a for a in assignments}
    futures: dict[int, PrefectFuture[Any]] = {}
    for node in nodes:  # nodes are in dependency order
        futures[node.id] = run_node.with_options(name=node.name, task_run_name=node.name).submit(
            node,
            by_node.get(node.id),
            [allow_failure(futures[d]) for d in node.dep],
            settings,
            run_id,
            unassigned.get(node.id),
        )
    return [_collect(node, futures[node.id]) for node in nodes]


@contextlib.contextmanager
def prefect_run_settings(*, heartbeats: bool = False, quiet: bool = False) -> Iterator[None]:
    """Prefect settings for running requests from this process.

    Flow-run heartbeats (crash detection for long runs) cost about a second at the
    end of every run; they are off unless ``HUGGINGGPT_HEARTBEATS`` is set.
    """
    updates: dict[str, Any] = {}
    if not heartbeats:
        updates["flows.heartbeat_frequency"] = None
    if quiet:
        updates["logging.level"] = "WARNING"
    with temporary_settings(updates=updates):
        yield


def run_request(
    request: str,
    inputs: Sequence[str] = (),
    models: Mapping[str, str] | None = None,
    history: Sequence[ChatTurn] = (),
    storage: str | None = None,
    catalog: str | None = None,
) -> RunSummary:
    """Run the flow and return its summary whatever the outcome (no Prefect state to unwrap)."""
    with prefect_run_settings(heartbeats=load_settings().heartbeats):
        state = hugginggpt_request(
            request,
            inputs=list(inputs),
            models=dict(models or {}),
            history=list(history),
            storage=storage,
            catalog=catalog,
            return_state=True,
        )
    value = state.result(raise_on_failure=False)
    if isinstance(value, RunSummary):
        return value
    raise RuntimeError(f"the flow run ended {state.name} without a summary: {value}")
