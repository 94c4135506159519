"""The per-request flow: plan -> select -> one task run per plan node -> respond -> summary.

Each plan node is a task run named after it (``image-to-text#0``), submitted
with its upstream futures so the Prefect API records the planned edges;
independent nodes run at the same time. A failed node fails alone: its
dependents end as skipped, its siblings go on, and the response still runs.
"""

from __future__ import annotations

import contextlib
import functools
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from prefect import flow, get_run_logger
from prefect import tags as prefect_tags
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.utilities.annotations import allow_failure

from flows import progress
from flows.artifacts import publish
from flows.prefect_setup import prefect_run_settings, use_result_storage
from flows.tag_limits import node_tagging, read_limited_tags
from models_catalog.catalog import CatalogError
from tasks.execute import node_tags, run_node
from tasks.llm import LLMError
from tasks.parsing import clip
from tasks.plan import PlanningError, PlanValidationError, plan_task
from tasks.prefetch import prefetch_models, start_candidate_downloads
from tasks.respond import respond_task
from tasks.runs import (
    CheckedRequest,
    PriorRun,
    RequestError,
    RunRecord,
    already_checked,
    checked_before,
    load_prior,
    preflight,
)
from tasks.schemas import (
    NodeResult,
    PlanNode,
    RequestSpec,
    ResponseResult,
    RunSummary,
    SelectionResult,
)
from tasks.select import SelectionError, select_task
from tasks.services import Services, override, services_for
from tasks.settings import (
    LLMNotConfiguredError,
    RunOptions,
    RuntimeSettingError,
    Settings,
    check_runtime,
    load_settings,
)
from tasks.storage import ArtifactStore, StorageError

progress.tidy_run_logs()


class RequestFailed(RuntimeError):
    """The data of a failed request run: the message says what failed, ``summary`` is the whole run summary.

    A failed flow run's data must be an exception for Prefect (workers and callers without ``return_state``
    raise it); this one carries the summary, so nothing computed is lost.
    """

    def __init__(self, summary: RunSummary, message: str) -> None:
        super().__init__(message)
        self.summary = summary

    def __reduce__(self) -> tuple[Any, ...]:
        return (RequestFailed, (self.summary, str(self)))


class NoSummaryError(RuntimeError):
    """A request flow run ended without a summary (it crashed, or was cancelled before it could write one)."""


def summary_of(state: State) -> RunSummary | None:
    """The run summary of a finished request flow run, whether it completed or failed."""
    try:
        value = state.result(raise_on_failure=False)
    except Exception:
        return None
    if isinstance(value, RequestFailed):
        return value.summary
    return value if isinstance(value, RunSummary) else None


def request_run_name(request: str, suffix: str | None = None) -> str:
    """A flow-run name for ``request``: its start, and a short suffix that tells repeated requests apart
    (``Caption photo.jpg · 3fa2c1d0``). Give it to ``run_deployment(flow_run_name=...)`` so a deployed run has
    its name from the moment it is created."""
    text = " ".join(str(request).split())
    text = (text[:57] + "...") if len(text) > 60 else (text or "empty request")
    return f"{text} · {suffix or uuid.uuid4().hex[:8]}"


def _run_name() -> str:
    """The run's name: the one it was created with when that is already this request's (``run_deployment`` with
    :func:`request_run_name`), else the request and the start of the run's id."""
    spec = flow_run.parameters.get("spec")
    request = str(spec.get("request", "") if isinstance(spec, dict) else getattr(spec, "request", ""))
    current = str(flow_run.name or "")
    if current.startswith(request_run_name(request, "-")[:-1]):
        return current
    return request_run_name(request, str(flow_run.id or "")[:8] or None)


def _collect(node: PlanNode, future: PrefectFuture[Any]) -> NodeResult:
    future.wait()
    state = future.state
    try:
        value = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself could not be read
        value = exc
    if state.is_cancelled():  # a skipped node: Prefect calls no state hook for it
        progress.emit(progress.NodeEvent(str(flow_run.id), node.name, "skipped", detail=state.message or ""))
    if isinstance(value, NodeResult):
        return value
    return NodeResult(id=node.id, task=node.task, status="failed", error=f"task run ended {state.name}: {value}")


def failure_reason(summary: RunSummary) -> str | None:
    """Why a run failed (its error, or which nodes did not complete and why); ``None`` when it did not fail."""
    failed = [r for r in summary.results if r.status != "completed"]
    if summary.error:
        return summary.error
    if not failed:
        return None
    return f"{len(failed)} of {len(summary.results)} task(s) did not complete: " + "; ".join(
        f"{r.task}#{r.id} {r.status}: {r.error}" for r in failed
    )


def _finish(summary: RunSummary, store: ArtifactStore | None, t_start: float, settings: Settings) -> RunSummary | State:
    summary.timings["total"] = time.perf_counter() - t_start
    reason = failure_reason(summary)
    if reason is not None:
        summary.status = "failed"
    publish(summary, store, presign_seconds=settings.presign_seconds)
    if reason is not None:
        return Failed(message=reason, data=RequestFailed(summary, reason))
    return summary


@flow(name="hugginggpt-request", flow_run_name=_run_name, validate_parameters=True)
def hugginggpt_request(spec: RequestSpec, options: RunOptions | None = None) -> RunSummary:
    """Answer one request: plan, select models, run the plan's graph, respond.

    Args:
        spec: the request (:class:`~tasks.schemas.RequestSpec`): what is asked, its inputs, pinned models, history,
            an explicit plan and where it came from, or the run to resume.
        options: settings for this run on top of the environment of the process that runs it (storage, catalog,
            model, device, cache, how many nodes at once, task runner, where Prefect keeps results). The flow builds
            its task runner and result storage from them, so a CLI call, a batch line, a subflow and a deployed run
            alike honour them.

    The services the run uses (chat model, expert backends, availability, artifact store) come from
    :func:`tasks.services.services_for`: the settings', or those of a :func:`tasks.services.override` around the
    call. Returns the :class:`RunSummary`; when a node failed the flow run ends Failed with the summary as its data
    (``return_state=True`` gives it back; :func:`run_request` unwraps it). A retry of the flow run by Prefect
    resumes the same way as ``resume_from``.
    """
    t_start = time.perf_counter()
    log = get_run_logger()
    settings = load_settings(options)
    use_result_storage(settings)
    run_id = str(flow_run.id or uuid.uuid4())
    summary = RunSummary(request=spec.request, inputs=spec.inputs, flow_run_id=run_id)
    summary.plan_source = (
        "resumed" if spec.resume_from else spec.plan_source or ("explicit" if spec.plan is not None else "llm")
    )
    store: ArtifactStore | None = None
    services = services_for(settings)
    try:
        store = services.store(run_id)
        summary.storage_uri = store.run_uri
        check_runtime(settings)  # a device or Dask scheduler that is not there: before any LLM call
        prior = load_prior(
            store,
            spec.resume_from or run_id,
            explicit=spec.resume_from is not None,
            settings=settings,
            availability=services.availability,
            request=spec.request,
            inputs=spec.inputs,
        )
        if prior is None:
            record = RunRecord(request=spec.request, inputs=spec.inputs, models=spec.models, history=spec.history)
            store.put_text("request.json", record.model_dump_json(indent=2))
        checked = checked_before(spec, settings) or preflight(spec, services, resumed=prior is not None)
        response = _run_stages(services, checked, store, summary, prior=prior)
    except (
        RequestError,
        PlanningError,
        PlanValidationError,
        LLMError,
        LLMNotConfiguredError,
        RuntimeSettingError,
        SelectionError,
        StorageError,
        CatalogError,
    ) as exc:
        log.error("request failed: %s", exc)
        if isinstance(exc, PlanningError | LLMError):  # the calls a failed stage made count too
            summary.llm = summary.llm + exc.usage
        summary.error = str(exc)
        summary.answer = f"The request could not be completed: {exc}"
        summary.answer_source = "fallback"
        return _finish(summary, store, t_start, settings)
    summary.answer = response.answer
    summary.answer_source = response.source
    summary.answer_error = response.error
    summary.llm = summary.llm + response.usage
    log.info("answer (%s): %s", response.source, clip(response.answer, 2000))
    return _finish(summary, store, t_start, settings)


def _run_stages(
    services: Services,
    checked: CheckedRequest,
    store: ArtifactStore,
    summary: RunSummary,
    *,
    prior: PriorRun | None = None,
) -> ResponseResult:
    log = get_run_logger()
    settings = services.settings
    request, inputs, history, pins = checked.spec.request, checked.spec.inputs, checked.spec.history, checked.pins

    t0 = time.perf_counter()
    if prior is not None:
        nodes, repairs = prior.nodes, prior.repairs
        log.info(
            "resuming run %s: %d of %d task(s) already completed",
            prior.run_id,
            sum(r.ok for r in prior.results.values()),
            len(nodes),
        )
    elif checked.plan is not None:
        nodes, repairs = checked.plan, checked.repairs
        log.info("explicit plan: no planning call")
    else:
        planned = plan_task(settings, request, inputs, history)
        summary.llm = summary.llm + planned.usage
        nodes, repairs = planned.nodes, planned.repairs
    summary.timings["plan"] = time.perf_counter() - t0
    summary.plan, summary.plan_repairs = nodes, repairs
    if prior is None:
        store.put_json("plan.json", [n.model_dump() for n in nodes])
    log.info("plan (%d task(s)): %s", len(nodes), "; ".join(_describe(n) for n in nodes) or "answer directly")
    for repair in repairs:
        log.info("plan repaired: %s", repair)

    t0 = time.perf_counter()
    if prior is not None:
        selection: SelectionResult | None = SelectionResult(assignments=prior.assignments, unassigned=prior.unassigned)
    else:
        if settings.prefetch:  # the likely models download during the selection call
            start_candidate_downloads(settings, services.availability, nodes, pins)
        selection = select_task(settings, request, nodes, pins) if nodes else None
        if selection is not None:
            summary.llm = summary.llm + selection.usage
            store.put_text("assignments.json", selection.model_dump_json(indent=2))
        else:
            store.put_text("assignments.json", SelectionResult(assignments=[]).model_dump_json())
    summary.timings["select"] = time.perf_counter() - t0
    assignments = selection.assignments if selection else []
    summary.assignments = assignments
    summary.candidate_checks = selection.checks if selection else []
    for a in assignments:
        log.info("%s#%d -> %s (%s)", a.task, a.node_id, a.model, a.reason)
    progress.planned(str(flow_run.id), str(flow_run.name or ""), nodes, assignments)
    for node_id, why in (selection.unassigned if selection else {}).items():
        log.warning("task %d has no model: %s", node_id, why)
    if settings.prefetch:  # every node's model downloads and loads while upstream nodes run
        prefetch_models(settings, assignments, lambda: services.local_backend, store.run_id)

    t0 = time.perf_counter()
    summary.results = execute_graph(
        settings,
        nodes,
        assignments,
        selection.unassigned if selection else {},
        store.run_id,
        prior=prior.results if prior else None,
    )
    summary.timings["execute"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    response = respond_task(settings, request, nodes, assignments, summary.results, history)
    summary.timings["respond"] = time.perf_counter() - t0
    return response


def node_task_options(settings: Settings, tagging: Mapping[str, Any]) -> dict[str, Any]:
    """A node task run's tags and ``on_running`` hooks as :func:`flows.tag_limits.node_tagging` gives them, its
    retries of transient failures (``HUGGINGGPT_NODE_RETRIES``) and the state hooks that report it to the
    progress views."""
    hooks = {**progress.NODE_STATE_HOOKS}
    hooks["on_running"] = [*tagging["on_running"], *hooks.get("on_running", [])]
    return {
        "tags": tagging["tags"],
        "retries": settings.node_retries,
        "retry_delay_seconds": settings.node_retry_wait,
        **hooks,
    }


def _describe(node: PlanNode) -> str:
    dep = f" after {','.join(map(str, node.dep))}" if node.dep else ""
    return f"{node.name}{dep}"


def execute_graph(
    settings: Settings,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Any],
    unassigned: Mapping[int, str],
    run_id: str,
    prior: Mapping[int, NodeResult] | None = None,
) -> list[NodeResult]:
    """Submit one task run per node, each with its upstream futures (``allow_failure`` so a node whose
    upstream failed still starts under its own name and ends as skipped); wait for all. Nodes that
    completed in ``prior`` (an earlier attempt) end Cached with their earlier outputs.

    The nodes go to the task runner the settings describe (``HUGGINGGPT_TASK_RUNNER``, ``HUGGINGGPT_MAX_WORKERS``),
    built here rather than taken from the flow, so every way of running the flow honours them."""
    from flows.runners import task_runner_for

    prior = prior or {}
    by_node = {a.node_id: a for a in assignments}
    futures: dict[int, PrefectFuture[Any]] = {}
    limited = read_limited_tags() if nodes else frozenset()  # one API call, not a slot request per node
    with task_runner_for(settings) as runner:
        for node in nodes:  # nodes are in dependency order
            with node_tagging(node_tags(node, by_node.get(node.id)), limited) as tagging:
                node_task = run_node.with_options(
                    name=node.name,
                    task_run_name=node.name,
                    persist_result=settings.persist_results,
                    **node_task_options(settings, tagging),
                )
                futures[node.id] = runner.submit(
                    node_task,
                    {
                        "node": node,
                        "assignment": by_node.get(node.id),
                        "upstream": [allow_failure(futures[d]) for d in node.dep],
                        "settings": settings,
                        "run_id": run_id,
                        "unassigned_reason": unassigned.get(node.id),
                        "prior": prior.get(node.id),
                    },
                )
        return [_collect(node, futures[node.id]) for node in nodes]


def run_request(
    spec: RequestSpec | str,
    options: RunOptions | None = None,
    *,
    services: Services | None = None,
    checked: CheckedRequest | None = None,
    run_name: str | None = None,
    tags: Sequence[str] = (),
) -> RunSummary:
    """Run one request flow in this process and return its :class:`RunSummary` whatever the outcome (a failed run's
    summary says what failed; no Prefect state to unwrap): the one way the CLI, batch lines, chat and library users
    run a request.

    Args:
        spec: the request (or just its text).
        options: settings for this run on top of the environment (storage, catalog, model, device, ...).
        services: services for this run (those given to it, e.g. ``Services(settings, chat_model=...)``), as
            :func:`tasks.services.override` would swap them; the others come from the settings.
        checked: the :func:`tasks.runs.preflight` of ``spec`` the caller already made (the flow does not check again).
        run_name: the flow run's name (default: the request and the start of the run's id).
        tags: Prefect tags of the run (``hugginggpt`` is always one).

    Raises what prevents the flow from running at all (an unreachable Prefect API, parameters it refuses).
    """
    if isinstance(spec, str):
        spec = RequestSpec(request=spec)
    settings = load_settings(options)
    flow_fn = hugginggpt_request
    if run_name is not None:
        flow_fn = hugginggpt_request.with_options(flow_run_name=functools.partial(str, run_name))
    given = {name: getattr(services, name) for name in services.given} if services is not None else {}
    with contextlib.ExitStack() as stack:
        if FlowRunContext.get() is None and TaskRunContext.get() is None:  # a parent run has set Prefect up
            stack.enter_context(prefect_run_settings(heartbeats=settings.heartbeats))
        stack.enter_context(prefect_tags("hugginggpt", *tags))
        stack.enter_context(override(**given))
        if checked is not None:
            stack.enter_context(already_checked(checked, settings))
        state = flow_fn(spec, options=options, return_state=True)
    summary = summary_of(state)
    if summary is not None:
        return summary
    raise NoSummaryError(f"the run ended {state.name} without a summary: {state.message}")
