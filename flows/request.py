"""The per-request flow: plan -> select -> one task run per plan node -> respond -> summary.

Each plan node is a task run named after it (``image-to-text#0``), submitted
with its upstream futures so the Prefect API records the planned edges;
independent nodes run at the same time. A failed node fails alone: its
dependents end as skipped, its siblings go on, and the response still runs.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect import tags as prefect_tags
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Failed, State
from prefect.utilities.annotations import allow_failure, quote

from flows import events, run_logs
from flows.artifacts import publish
from flows.prefect_setup import prefect_run_settings, use_result_storage
from flows.result_links import verified_result_links
from flows.streaming import run_streamed
from flows.tag_limits import node_tagging, read_limited_tags, reading_limited_tags, untagged
from models_catalog.catalog import CatalogError
from tasks.execute import answered_ahead, node_tags, run_node
from tasks.llm import LLMError, LLMUnreachableError
from tasks.parsing import clip
from tasks.plan import (
    PlanningError,
    PlanValidationError,
    StreamedPlanError,
    plan_again_task,
    plan_task,
)
from tasks.prefetch import prefetch_models, start_candidate_downloads
from tasks.replan import needs_replan, replan_task
from tasks.respond import respond_task
from tasks.runs import CheckedRequest, PriorRun, RequestError, RunRecord, load_prior, preflight
from tasks.schemas import (
    Assignment,
    ChatTurn,
    LLMUsage,
    NodeResult,
    PlanNode,
    PlanResult,
    RequestSpec,
    ResponseResult,
    RunSummary,
    SelectionResult,
    bounded_history,
)
from tasks.select import SelectionError, parse_pins, select_task
from tasks.services import Services, in_use, override, services_for
from tasks.serving.signing import PublicLinks
from tasks.settings import (
    LLMNotConfiguredError,
    RunOptions,
    RuntimeSettingError,
    Settings,
    check_runtime,
    load_settings,
)
from tasks.storage import ArtifactStore, StorageError

run_logs.tidy_run_logs()


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


_GENERATED_NAME = re.compile(r"[a-z]+-[a-z]+")  # the two-word name Prefect makes up for an unnamed run


def _run_name() -> str:
    """The run's name: the one it was created with when one was given (``--flow-run-name``, ``run_deployment(...,
    flow_run_name=...)``), else the request and the start of the run's id, after ``resume of {run}:`` for a resume."""
    spec = flow_run.parameters.get("spec")
    fields = spec if isinstance(spec, dict) else (spec.model_dump() if isinstance(spec, RequestSpec) else {})
    request = str(fields.get("request", ""))
    current = str(flow_run.name or "")
    if current and not _GENERATED_NAME.fullmatch(current):
        return current
    name = request_run_name(request, str(flow_run.id or "")[:8] or None)
    resumed = fields.get("resume_from")
    return f"resume of {str(resumed)[:8]}: {name}" if resumed else name


def _collect(node: PlanNode, future: PrefectFuture[Any]) -> NodeResult:
    future.wait()
    state = future.state
    try:
        value = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself could not be read
        value = exc
    if state.is_cancelled():  # a skipped node: Prefect calls no state hook for it
        events.emit(events.NodeEvent(str(flow_run.id), node.name, "skipped", detail=state.message or ""))
    if isinstance(value, NodeResult):
        return value
    return NodeResult(id=node.id, task=node.task, status="failed", error=f"task run ended {state.name}: {value}")


def failure_reason(summary: RunSummary) -> str | None:
    """Why a run failed (its error, or which nodes did not complete and why); ``None`` when it did not fail."""
    failed = summary.unfinished()  # earlier rounds' failures were answered by a replan
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
    publish(summary, store, presign_seconds=settings.presign_seconds, public=PublicLinks.from_settings(settings))
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
    request, models, plan, resume_from, plan_source = (
        spec.request,
        spec.models,
        spec.plan,
        spec.resume_from,
        spec.plan_source,
    )
    t_start = time.perf_counter()
    log = get_run_logger()
    verified_result_links()  # a node's task run gets its edges from its upstream futures, never from a recycled id
    inputs = list(spec.inputs)
    history = bounded_history(spec.history)  # what a caller passes is bounded like a chat's
    settings = load_settings(options)
    use_result_storage(settings)
    run_id = str(flow_run.id or uuid.uuid4())
    summary = RunSummary(request=request, inputs=inputs, flow_run_id=run_id)
    summary.resumed_from = resume_from
    summary.plan_source = "resumed" if resume_from else plan_source or ("explicit" if plan is not None else "llm")
    store: ArtifactStore | None = None
    services = services_for(settings)
    try:
        store = services.store(run_id)
        summary.storage_uri = store.run_uri
        check_runtime(settings)  # a device or Dask scheduler that is not there: before any LLM call
        prior = load_prior(
            store,
            resume_from or run_id,
            explicit=resume_from is not None,
            settings=settings,
            availability=services.availability,
            request=request,
            inputs=inputs,
            pins=parse_pins(models),
        )
        if prior is None:
            store.put_text(
                "request.json",
                RunRecord(request=request, inputs=inputs, models=dict(models or {}), history=history).model_dump_json(
                    indent=2
                ),
            )
        with in_use(services), reading_limited_tags():  # nodes share the run's services; the tag read overlaps
            checked = preflight(spec, services, resumed=prior is not None)
            response = _run_stages(services, request, inputs, checked, history, store, summary, prior=prior)
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
        if isinstance(exc, LLMUnreachableError | LLMNotConfiguredError):  # a setting to change
            summary.error_kind = "configuration"
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
    request: str,
    inputs: list[str],
    checked: CheckedRequest,
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
    *,
    prior: PriorRun | None = None,
) -> ResponseResult:
    """The stages of a request that passed :func:`tasks.runs.preflight` (``checked``: its pins, its explicit plan
    validated)."""
    settings = services.settings
    pins = checked.pins
    plan = (checked.plan, checked.repairs) if checked.plan is not None else None
    planning_started = datetime.now(UTC)
    futures: dict[int, PrefectFuture[Any]] = {}  # every node's task run, by id: later rounds' edges go to them
    if prior is None and plan is None and settings.stream_plan:
        _streamed_stages(services, request, inputs, pins, history, store, summary, futures)
    else:
        _stages(services, request, inputs, pins, history, store, summary, futures, plan=plan, prior=prior)
    _node_span(summary, planning_started)
    _replan_rounds(services, request, inputs, pins, history, store, summary, futures)

    t0 = time.perf_counter()
    with untagged(respond_task) as respond:
        response = respond(settings, request, summary.plan, summary.assignments, summary.results, history)
    summary.timings["respond"] = time.perf_counter() - t0
    return response


def _node_span(summary: RunSummary, planning_started: datetime) -> None:
    """Seconds from the start of planning to the first node's start and to the last node's end (the nodes this run
    ran, not those reused from an earlier attempt)."""
    ran = [r for r in summary.results if r.started_at is not None and r.started_at >= planning_started]
    if ran:
        summary.timings["first_node_start"] = (min(r.started_at for r in ran) - planning_started).total_seconds()
        ends = [r.finished_at for r in ran if r.finished_at is not None]
        if ends:
            summary.timings["last_node_end"] = (max(ends) - planning_started).total_seconds()


def _stages(
    services: Services,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
    futures: dict[int, PrefectFuture[Any]],
    *,
    plan: tuple[list[PlanNode], list[str]] | None = None,
    prior: PriorRun | None = None,
    planned: PlanResult | None = None,
) -> None:
    """Plan (or take the plan ``planned`` by an earlier call, or the explicit ``plan``, validated, with its
    repairs), select, then run the graph: one stage after the other."""
    log = get_run_logger()
    settings = services.settings
    t0 = time.perf_counter()
    if prior is not None:
        nodes, repairs = prior.nodes, prior.repairs
        log.info(
            "resuming run %s: %d of %d task(s) already completed",
            prior.run_id,
            sum(r.ok for r in prior.results.values()),
            len(nodes),
        )
    elif plan is not None:
        nodes, repairs = plan
        log.info("explicit plan: no planning call")
    else:
        if planned is None:
            with untagged(plan_task) as plan_call:
                planned = plan_call(settings, request, inputs, history)
        summary.llm = summary.llm + planned.usage
        nodes, repairs = planned.nodes, planned.repairs
    summary.timings["plan"] = summary.timings.get("plan", 0.0) + time.perf_counter() - t0
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
        selection = None
        if nodes:
            with untagged(select_task) as select:
                selection = select(settings, request, nodes, pins)
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
    events.planned(str(flow_run.id), str(flow_run.name or ""), nodes, assignments)
    for node_id, why in (selection.unassigned if selection else {}).items():
        log.warning("task %d has no model: %s", node_id, why)
    if settings.prefetch:  # every node's model downloads and loads while upstream nodes run (not those answered)
        answered = answered_ahead(
            settings, nodes, assignments, store, prior.results if prior else None, clock=services.clock
        )
        unanswered = [a for a in assignments if a.node_id not in answered]
        prefetch_models(settings, unanswered, lambda: services.local_backend, store.run_id)

    t0 = time.perf_counter()
    summary.results = execute_graph(
        settings,
        nodes,
        assignments,
        selection.unassigned if selection else {},
        store.run_id,
        prior=prior.results if prior else None,
        futures=futures,
    )
    summary.timings["execute"] = time.perf_counter() - t0


def _streamed_stages(
    services: Services,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
    futures: dict[int, PrefectFuture[Any]],
) -> None:
    """Plan with a streamed reply, nodes starting as it arrives (:mod:`flows.streaming`). When the plan turns out
    invalid or selection fails, the nodes already started are collected into the summary before the error is
    raised."""
    from flows.runners import task_runner_for

    log = get_run_logger()
    settings = services.settings
    t0 = time.perf_counter()
    limited = read_limited_tags()
    variants: dict[tuple[Any, ...], Any] = {}
    with task_runner_for(settings) as runner:
        outcome = run_streamed(
            services,
            request,
            inputs,
            history,
            pins,
            lambda node, assignment, why, upstream: submit_node(
                runner, settings, node, assignment, why, upstream, store.run_id, limited=limited, variants=variants
            ),
            run_id=str(flow_run.id),
            run_name=str(flow_run.name or ""),
        )
        summary.plan = outcome.nodes
        summary.plan_repairs = outcome.plan.repairs if outcome.plan is not None else []
        summary.plan_streamed = outcome.submitted_while_streaming > 0
        summary.assignments = outcome.selection.assignments
        summary.candidate_checks = outcome.selection.checks
        summary.llm = summary.llm + outcome.selection.usage + (outcome.plan.usage if outcome.plan else LLMUsage())
        summary.timings["plan"] = outcome.plan_seconds
        summary.timings["select"] = outcome.select_seconds
        if outcome.plan is not None:
            store.put_json("plan.json", [n.model_dump() for n in outcome.plan.nodes])
        if outcome.error is None:
            store.put_text("assignments.json", outcome.selection.model_dump_json(indent=2))
            log.info(
                "plan (%d task(s), %d started while it streamed): %s",
                len(outcome.nodes),
                outcome.submitted_while_streaming,
                "; ".join(_describe(n) for n in outcome.nodes) or "answer directly",
            )
        futures.update(outcome.futures)
        summary.results = [_collect(n, outcome.futures[n.id]) for n in outcome.nodes if n.id in outcome.futures]
    summary.timings["execute"] = time.perf_counter() - t0
    if isinstance(outcome.error, StreamedPlanError):
        # the tasks that had started have finished; the plan goes back to the LLM once, as without streaming, and the
        # corrected plan runs whole (a task it repeats reuses the outputs of the one that ran, through the cache)
        error = outcome.error
        log.warning("%s; %d task(s) had started; asking for a corrected plan", error, len(summary.results))
        summary.llm = summary.llm + error.usage
        t0 = time.perf_counter()
        with untagged(plan_again_task) as plan_again:
            corrected = plan_again(settings, request, inputs, error.retry)
        summary.timings["plan"] += time.perf_counter() - t0
        futures.clear()
        _stages(services, request, inputs, pins, history, store, summary, futures, planned=corrected)
        return
    if outcome.error is not None:
        raise outcome.error


def _replan_rounds(
    services: Services,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
    futures: dict[int, PrefectFuture[Any]],
) -> None:
    """While the last round left nodes not completed and ``HUGGINGGPT_MAX_REPLANS`` allows, ask the LLM for new tasks
    (:mod:`tasks.replan`), choose their models, and run them as the next round of this flow run, with edges to the
    earlier nodes whose outputs they use."""
    log = get_run_logger()
    settings = services.settings
    for number in range(1, settings.max_replans + 1):
        unfinished = needs_replan(summary.results)
        if not unfinished:
            return
        t0 = time.perf_counter()
        with untagged(replan_task) as replan:
            record, new = replan(
                settings, request, summary.plan, summary.assignments, summary.results, number, inputs, history
            )
        summary.replans.append(record)
        summary.llm = summary.llm + record.usage
        if record.error:
            log.warning("replan %d: %s", number, record.error)
        if not new:
            log.info("replan %d: no new task, answering with what there is", number)
            summary.timings["replan"] = summary.timings.get("replan", 0.0) + time.perf_counter() - t0
            return
        log.info("replan %d (%d task(s)): %s", number, len(new), "; ".join(_describe(n) for n in new))
        tasks = {n.task for n in new}
        with untagged(select_task) as select:
            selection = select(settings, request, new, {t: m for t, m in pins.items() if t in tasks})
        summary.llm = summary.llm + selection.usage
        summary.plan = [*summary.plan, *new]
        summary.assignments = [*summary.assignments, *selection.assignments]
        summary.candidate_checks = [*summary.candidate_checks, *selection.checks]
        events.planned(str(flow_run.id), str(flow_run.name or ""), new, selection.assignments)
        if settings.prefetch:
            prefetch_models(settings, selection.assignments, lambda: services.local_backend, store.run_id)
        results = execute_graph(
            settings, new, selection.assignments, selection.unassigned, store.run_id, futures=futures, round=number
        )
        summary.results = [*summary.results, *results]
        summary.timings["replan"] = summary.timings.get("replan", 0.0) + time.perf_counter() - t0


def node_task_options(settings: Settings, tagging: Mapping[str, Any]) -> dict[str, Any]:
    """A node task run's tags and ``on_running`` hooks as :func:`flows.tag_limits.node_tagging` gives them, its
    retries of transient failures (``HUGGINGGPT_NODE_RETRIES``) and the state hooks that report it to the
    progress views. Its result record is written without a lookup first (``refresh_cache``): the key is the
    attempt's own (:func:`tasks.execute._task_run_key`), so no record can be there to reuse."""
    hooks = {**events.NODE_STATE_HOOKS}
    hooks["on_running"] = [*tagging["on_running"], *hooks.get("on_running", [])]
    return {
        "tags": tagging["tags"],
        "refresh_cache": True,  # its result record's key is its own attempt's: written, never looked up first
        "retries": settings.node_retries,
        "retry_delay_seconds": settings.node_retry_wait,
        **hooks,
    }


def _describe(node: PlanNode) -> str:
    dep = f" after {','.join(map(str, node.dep))}" if node.dep else ""
    return f"{node.name}{dep}"


def submit_node(
    runner: Any,
    settings: Settings,
    node: PlanNode,
    assignment: Assignment | None,
    unassigned_reason: str | None,
    futures: Mapping[int, PrefectFuture[Any]],
    run_id: str,
    prior: NodeResult | None = None,
    *,
    limited: frozenset[str] | None = None,
    variants: dict[tuple[Any, ...], Any] | None = None,
) -> PrefectFuture[Any]:
    """Submit one node's task run to ``runner``, named after it, with the futures of the nodes it depends on
    (``allow_failure``, so a node whose upstream failed still starts under its own name and ends as skipped), tagged
    as :func:`flows.tag_limits.node_tagging` says for the tags that have a limit (``limited``). Nodes with the same
    tags and hooks share one task's options (``variants``, kept by the caller across its nodes)."""
    variants = variants if variants is not None else {}
    with node_tagging(node_tags(node, assignment), limited) as tagging:
        key = (frozenset(tagging["tags"]), tuple(tagging["on_running"]))
        if key not in variants:
            variants[key] = run_node.with_options(
                persist_result=settings.persist_results, **node_task_options(settings, tagging)
            )
        # everything but the upstream futures is quoted: Prefect neither walks it (the settings are large) nor
        # looks its parts up among earlier results; the node's edges are its upstream futures
        return runner.submit(
            _named(variants[key], node.name),
            {
                "node": quote(node),
                "assignment": quote(assignment),
                "upstream": [allow_failure(futures[d]) for d in node.dep],
                "settings": quote(settings),
                "run_id": quote(run_id),
                "unassigned_reason": quote(unassigned_reason),
                "prior": quote(prior),
            },
        )


def execute_graph(
    settings: Settings,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Any],
    unassigned: Mapping[int, str],
    run_id: str,
    prior: Mapping[int, NodeResult] | None = None,
    *,
    futures: dict[int, PrefectFuture[Any]] | None = None,
    round: int = 0,
) -> list[NodeResult]:
    """Submit one task run per node (:func:`submit_node`), each with its upstream futures; wait for all. Nodes that
    completed in ``prior`` (an earlier attempt) end Cached with their earlier outputs.

    ``futures`` holds the task runs of earlier rounds by node id (a node of a replan uses their outputs, and the
    Prefect graph shows the edges); the new nodes' futures are added to it. Results are marked with ``round``.

    The nodes go to the task runner the settings describe (``HUGGINGGPT_TASK_RUNNER``, ``HUGGINGGPT_MAX_WORKERS``),
    built here rather than taken from the flow, so every way of running the flow honours them."""
    from flows.runners import task_runner_for

    prior = prior or {}
    by_node = {a.node_id: a for a in assignments}
    futures = futures if futures is not None else {}
    limited = read_limited_tags() if nodes else frozenset()  # one API call, not a slot request per node
    variants: dict[tuple[Any, ...], Any] = {}  # nodes with the same tags and hooks share one task's options
    with task_runner_for(settings) as runner:
        for node in nodes:  # nodes are in dependency order
            futures[node.id] = submit_node(
                runner,
                settings,
                node,
                by_node.get(node.id),
                unassigned.get(node.id),
                futures,
                run_id,
                prior.get(node.id),
                limited=limited,
                variants=variants,
            )
        results = [_collect(node, futures[node.id]) for node in nodes]
    return [r.model_copy(update={"round": round}) for r in results] if round else results


def _named(task: Any, name: str) -> Any:
    """``task.with_options(name=name, task_run_name=name)`` without building the task again: Prefect's
    ``Task.__init__`` reads its function's source (``inspect.getsource``) every time, 10 to 40 ms per node on the
    thread that submits them all, so wide levels started late. A copy with its name set is the same task."""
    named = copy.copy(task)
    named.name = name
    named.task_run_name = name
    return named


def run_request(
    spec: RequestSpec | str,
    options: RunOptions | None = None,
    *,
    services: Services | None = None,
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
        run_name: the flow run's name (default: the request and the start of the run's id).
        tags: Prefect tags of the run (``hugginggpt`` is always one).

    Raises what prevents the flow from running at all (an unreachable Prefect API, parameters it refuses);
    :class:`NoSummaryError` when the run ended without a summary.
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
        state = flow_fn(spec, options=options, return_state=True)
    summary = summary_of(state)
    if summary is not None:
        return summary
    raise NoSummaryError(f"the run ended {state.name} without a summary: {state.message}")
