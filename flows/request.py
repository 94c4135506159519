"""The per-request flow: plan -> select -> one task run per plan node -> respond -> summary.

Each plan node is a task run named after it (``image-to-text#0``), submitted
with its upstream futures so the Prefect API records the planned edges;
independent nodes run at the same time. A failed node fails alone: its
dependents end as skipped, its siblings go on, and the response still runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import posixpath
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.settings import temporary_settings
from prefect.states import Failed, State
from prefect.utilities.annotations import allow_failure
from pydantic import BaseModel, Field, ValidationError

from flows import progress
from models_catalog.catalog import CatalogError
from tasks.availability import Availability
from tasks.execute import node_folder, node_tags, run_node
from tasks.inputs import InputPolicy
from tasks.llm import LLMError
from tasks.plan import PlanningError, PlanValidationError, plan_task, validate_plan
from tasks.prefetch import prefetch_models, start_candidate_downloads
from tasks.report import artifact_key, browser_link, node_rows, summary_markdown
from tasks.respond import respond_task
from tasks.schemas import Assignment, ChatTurn, NodeResult, PlanNode, ResponseResult, RunSummary, SelectionResult
from tasks.select import SelectionError, check_pins, parse_pins, select_task
from tasks.settings import LLMNotConfiguredError, RunOptions, Settings, load_settings
from tasks.shared import shared
from tasks.storage import ArtifactStore, StorageError, resolve_storage, store_for, without_credentials
from tasks.task_types import TASK_TYPES

progress.tidy_run_logs()

MAX_REQUEST_CHARS = 20_000
EPHEMERAL_STARTUP_SECONDS = 90
PREFECT_DRAIN_SECONDS = 10.0


class RequestError(ValueError):
    """The request itself is unusable (empty, too long)."""


def check_request(request: str) -> str:
    """``request`` when it is one the pipeline takes: not blank, at most :data:`MAX_REQUEST_CHARS` characters (the
    one rule for the CLI, the batch and the flow, checked before anything is sent to the LLM or to Prefect)."""
    if not request.strip():
        raise RequestError("the request is empty: say what you want done")
    if len(request) > MAX_REQUEST_CHARS:
        raise RequestError(f"the request is {len(request)} characters long; the limit is {MAX_REQUEST_CHARS}")
    return request


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
    request = str(flow_run.parameters.get("request", ""))
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


def artifact_scope(flow_kind: str = "request") -> str:
    """The stem of this run's artifact keys: one per flow (``hugginggpt-request``, ``hugginggpt-batch``), or per
    deployment when deployed, never per run, so the UI keeps each key's history (every run's artifact under the
    same key, the run named in its description)."""
    from prefect.runtime import deployment

    name = deployment.name
    return artifact_key("hugginggpt", str(name) if name else flow_kind)


def _publish(summary: RunSummary, store: ArtifactStore | None, *, presign_seconds: int = 0) -> None:
    """summary.json beside the run's files, and the markdown, table and link artifacts. With ``presign_seconds``,
    files on object storage that can sign (S3) are linked by presigned URLs valid that long, which the browser
    can open and show; a presigned URL holds the storage's access key id and grants read access to that file."""
    log = get_run_logger()
    if store is not None:
        try:
            store.put_text("summary.json", summary.model_dump_json(indent=2))
        except StorageError as exc:
            log.error("could not store summary.json: %s", exc)
            summary.error = (summary.error + "; " if summary.error else "") + str(exc)
    try:
        _create_artifacts(summary, store, presign_seconds)
    except Exception as exc:  # the Prefect API went away: summary.json holds everything, the run goes on
        log.warning("could not create the run's artifacts (%s: %s)", type(exc).__name__, _clip(str(exc)))


def _create_artifacts(summary: RunSummary, store: ArtifactStore | None, presign_seconds: int) -> None:
    run = summary.flow_run_id or "local"
    scope = artifact_scope()
    about = f"run {run}: {summary.request[:80]}"
    files = [uri for r in summary.results for modality, uri in r.outputs.items() if modality != "text"]
    links: dict[str, str] = {}
    fetchable: set[str] = set()
    for uri in files:
        signer = store.fs if store is not None and presign_seconds > 0 else None
        links[uri], can_fetch = browser_link(uri, signer, expires=presign_seconds)
        if can_fetch:
            fetchable.add(uri)
    create_markdown_artifact(
        key=artifact_key(scope, "summary"),
        markdown=summary_markdown(summary, links, frozenset(fetchable)),
        description=f"HuggingGPT summary of {about}",
    )
    rows = [{k: v for k, v in row.items() if k != "task"} for row in node_rows(summary, links=links)]  # in the name
    if rows:
        create_table_artifact(
            key=artifact_key(scope, "nodes"),
            table=rows,
            description=f"One row per plan node of {about}",
        )
    for result in summary.results:
        for modality, uri in result.outputs.items():
            if modality != "text" and uri in links:
                create_link_artifact(
                    key=artifact_key(scope, result.task, modality),
                    link=links[uri],
                    link_text=f"{result.task}#{result.id} {modality}",
                    description=f"{modality} output of {result.task}#{result.id}, {about}",
                )


def stored_summary(settings: Settings, request: str, since: float) -> RunSummary | None:
    """The newest summary stored for ``request`` by a run that finished after ``since`` (a ``time.time()``): what a
    caller prints when the Prefect API went away before the run's final state could be read back. Read as untrusted
    input: a damaged summary is skipped."""
    try:
        store = store_for(settings, "lookup")
        found: list[tuple[float, str]] = []
        for path in store.fs.glob(posixpath.join(store.root_uri(""), "*", "summary.json")):
            info = store.fs.info(path)
            modified = info.get("mtime") or info.get("LastModified") or info.get("created") or 0
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified)
            if stamp >= since:
                found.append((stamp, posixpath.basename(posixpath.dirname(path))))
        for _, run_id in sorted(found, reverse=True):
            try:
                summary = RunSummary.model_validate(store.for_run(run_id).read_json("summary.json"))
            except (StorageError, ValidationError):
                continue
            if summary.request == request and summary.flow_run_id == run_id:
                return summary
    except (OSError, StorageError, ValueError):
        return None
    return None


def _finish(summary: RunSummary, store: ArtifactStore | None, t_start: float, settings: Settings) -> RunSummary | State:
    summary.timings["total"] = time.perf_counter() - t_start
    failed = [r for r in summary.results if r.status != "completed"]
    if summary.error or failed:
        summary.status = "failed"
    _publish(summary, store, presign_seconds=settings.presign_seconds)
    if summary.status == "failed":
        reason = summary.error or f"{len(failed)} of {len(summary.results)} task(s) did not complete: " + "; ".join(
            f"{r.task}#{r.id} {r.status}: {r.error}" for r in failed
        )
        return Failed(message=reason, data=RequestFailed(summary, reason))
    return summary


class RunRecord(BaseModel):
    """What a run was asked (``request.json``), so it can be resumed."""

    request: str
    inputs: list[str] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict)
    history: list[ChatTurn] = Field(default_factory=list)


@flow(name="hugginggpt-request", flow_run_name=_run_name, validate_parameters=True)
def hugginggpt_request(
    request: str,
    inputs: list[str] | None = None,
    models: dict[str, str] | None = None,
    history: list[ChatTurn] | None = None,
    storage: str | None = None,
    catalog: str | None = None,
    plan: list[PlanNode] | None = None,
    resume_from: str | None = None,
    plan_source: str | None = None,
    options: RunOptions | None = None,
) -> RunSummary:
    """Answer one request: plan, select models, run the plan's graph, respond.

    Args:
        request: what the user asks, in plain language.
        inputs: files the request refers to (paths, http(s) or fsspec URLs).
        models: pinned models, ``{task: model id}``.
        history: earlier turns of the conversation.
        storage: fsspec URL of the artifact store (default ``HUGGINGGPT_STORAGE``).
        catalog: extra catalog JSONL (default ``HUGGINGGPT_CATALOG``).
        plan: an explicit plan (HuggingGPT format): no planning call is made.
        resume_from: the flow run id of an earlier run of this request: its plan and model choices are
            reused, and its completed nodes are not run again.
        plan_source: where an explicit plan came from, recorded in the summary (e.g. a batch's plan cache).
        options: settings for this run on top of the environment of the process that runs it (model, device,
            cache, how many nodes at once, task runner, where Prefect keeps results). The flow builds its task
            runner and result storage from them, so a CLI call, a batch line, a subflow and a deployed run alike
            honour them.

    Returns the :class:`RunSummary`; when a node failed the flow run ends Failed
    with the summary as its data (``return_state=True`` gives it back). A retry of
    the flow run by Prefect resumes the same way as ``resume_from``.
    """
    t_start = time.perf_counter()
    log = get_run_logger()
    inputs = list(inputs or [])
    history = list(history or [])
    settings = load_settings(options, storage=storage, catalog=catalog)
    use_result_storage(settings)
    run_id = str(flow_run.id or uuid.uuid4())
    summary = RunSummary(request=request, inputs=inputs, flow_run_id=run_id)
    summary.plan_source = "resumed" if resume_from else plan_source or ("explicit" if plan is not None else "llm")
    store: ArtifactStore | None = None
    try:
        store = store_for(settings, run_id)
        summary.storage_uri = store.run_uri
        prior = _load_prior(
            store,
            resume_from or run_id,
            explicit=resume_from is not None,
            settings=settings,
            request=request,
            inputs=inputs,
        )
        if prior is None:
            store.put_text(
                "request.json",
                RunRecord(request=request, inputs=inputs, models=dict(models or {}), history=history).model_dump_json(
                    indent=2
                ),
            )
        response = _run_stages(
            settings, request, inputs, _pins(settings, models, prior), history, store, summary, plan=plan, prior=prior
        )
    except (
        RequestError,
        PlanningError,
        PlanValidationError,
        LLMError,
        LLMNotConfiguredError,
        SelectionError,
        StorageError,
        CatalogError,
    ) as exc:
        log.error("request failed: %s", exc)
        summary.error = str(exc)
        summary.answer = f"The request could not be completed: {exc}"
        summary.answer_source = "fallback"
        return _finish(summary, store, t_start, settings)
    summary.answer = response.answer
    summary.answer_source = response.source
    summary.answer_error = response.error
    summary.llm = summary.llm + response.usage
    log.info("answer (%s): %s", response.source, response.answer)
    return _finish(summary, store, t_start, settings)


def _pins(settings: Settings, models: Mapping[str, str] | None, prior: PriorRun | None) -> dict[str, str]:
    """The pinned models, each checked to run here before any LLM call (a resumed run reuses its assignments)."""
    pins = parse_pins(models)
    return pins if prior is not None else check_pins(pins, Availability(settings))


class PriorRun(BaseModel):
    """What an earlier attempt of a run left: its plan, its model choices, and its finished nodes."""

    run_id: str
    nodes: list[PlanNode]
    repairs: list[str] = Field(default_factory=list)
    assignments: list[Assignment] = Field(default_factory=list)
    unassigned: dict[int, str] = Field(default_factory=dict)
    results: dict[int, NodeResult] = Field(default_factory=dict)


def load_run_record(store: ArtifactStore) -> RunRecord | None:
    """The ``request.json`` of ``store``'s run, validated like user input (``None`` when there is none); a damaged
    or foreign record is a :class:`RequestError` naming the file."""
    raw = store.read_json("request.json")  # StorageError when unreadable or not JSON
    if raw is None:
        return None
    try:
        record = RunRecord.model_validate(raw)
    except ValidationError as exc:
        raise RequestError(f"{store.uri('request.json')} is not a run record: {_problems(exc)}") from None
    if len(record.request) > MAX_REQUEST_CHARS:
        raise RequestError(f"{store.uri('request.json')} holds a request longer than {MAX_REQUEST_CHARS} characters")
    return record


def _problems(exc: ValidationError, limit: int = 5) -> str:
    found = [f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors()[:limit]]
    more = exc.error_count() - limit
    return "; ".join(found) + (f"; and {more} more" if more > 0 else "")


def _load_prior(
    store: ArtifactStore,
    run_id: str,
    *,
    explicit: bool,
    settings: Settings,
    request: str,
    inputs: Sequence[str],
) -> PriorRun | None:
    """The earlier attempt ``run_id`` (this run's own folder on a Prefect retry), or ``None`` when there is none.

    What it left is read as untrusted input: the run id must name a folder of this store; the plan is validated
    again like a user's (file arguments through the input policy); model choices keep only the model ids, whose
    specs (local folder, endpoint, provider) are looked up again in the catalog and settings, never taken from
    storage; a finished node is reused only when it is this plan's node and every file it names lies inside the
    earlier run's own folder. Anything else is a :class:`RequestError` naming the file.
    """
    other = store.for_run(run_id)
    plan_raw = other.read_json("plan.json")
    selection_raw = other.read_json("assignments.json")
    if plan_raw is None or selection_raw is None:
        if explicit:
            raise RequestError(
                f"cannot resume run {run_id}: {other.run_uri} holds no plan.json and assignments.json "
                "(the run did not get past planning and model selection; run the request again instead)"
            )
        return None
    try:
        nodes, _ = validate_plan(
            plan_raw,
            inputs=inputs,
            request=request,
            allowed=TASK_TYPES,
            policy=InputPolicy.from_settings(settings),
        )
    except PlanValidationError as exc:
        raise RequestError(f"cannot resume run {run_id}: {other.uri('plan.json')} is not a valid plan: {exc}") from None
    try:
        selection = SelectionResult.model_validate(selection_raw)
    except ValidationError as exc:
        raise RequestError(f"cannot resume run {run_id}: assignments.json is damaged: {_problems(exc)}") from None
    try:  # only the plan's repairs are read from it
        repairs = RunSummary.model_validate(other.read_json("summary.json") or {"request": request}).plan_repairs
    except (StorageError, ValidationError):
        repairs = []
    assignments, unassigned = _rederive_assignments(settings, nodes, selection)
    results: dict[int, NodeResult] = {}
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        rel = f"{node_folder(node)}/node.json"
        try:
            raw = other.read_json(rel)
            result = None if raw is None else NodeResult.model_validate(raw)
        except (StorageError, ValidationError) as exc:
            get_run_logger().warning("not reusing %s: %s", other.uri(rel), _clip(str(exc)))
            continue
        if result is None:
            continue
        files = [uri for modality, uri in result.outputs.items() if modality != "text"]
        outside = [uri for uri in files if not other.holds(uri, run_id)]
        if result.id != node.id or result.task != by_id[node.id].task or outside:
            why = f"it names {_clip(outside[0])}, outside the run's folder" if outside else "it is another node's"
            get_run_logger().warning("not reusing %s: %s", other.uri(rel), why)
            continue
        results[node.id] = result.model_copy(update={"reused_from": result.reused_from or run_id})
    return PriorRun(
        run_id=run_id,
        nodes=nodes,
        repairs=[_clip(r) for r in repairs],
        assignments=assignments,
        unassigned=unassigned,
        results=results,
    )


def _rederive_assignments(
    settings: Settings, nodes: Sequence[PlanNode], stored: SelectionResult
) -> tuple[list[Assignment], dict[int, str]]:
    """The model choices of an earlier attempt with nothing but the model ids taken from storage: each spec and
    its fallbacks come from the catalog and the settings, as at selection. A node whose recorded model is no longer
    in the catalog, or cannot run here, is left unassigned with the reason."""
    from models_catalog.catalog import load_catalog
    from tasks.availability import chooser_for
    from tasks.select import runnable_candidates

    catalog = load_catalog(settings.catalog)
    choose = chooser_for(settings)
    chosen = {a.node_id: a for a in stored.assignments}
    assignments: list[Assignment] = []
    unassigned: dict[int, str] = {}
    for node in nodes:
        recorded = chosen.get(node.id)
        if recorded is None:
            unassigned[node.id] = _clip(stored.unassigned.get(node.id) or "no model was assigned")
            continue
        entry = catalog.get(node.task, recorded.model)
        if entry is None:
            unassigned[node.id] = (
                f"the model {_clip(recorded.model)} chosen earlier is not in the catalog for {node.task}"
            )
            continue
        backend, why = choose(entry.spec())
        if backend is None:
            unassigned[node.id] = f"the model {entry.id} chosen earlier cannot run here: {why}"
            continue
        kept, _ = runnable_candidates(catalog, node.task, choose)
        assignments.append(
            Assignment(
                node_id=node.id,
                task=node.task,
                model=entry.id,
                backend=backend,  # type: ignore[arg-type]
                candidates=[entry.id],
                reason="chosen by the earlier attempt (resumed)",
                spec=entry.spec(),
                fallbacks=[e.spec() for e, _ in kept if e.id != entry.id][: settings.max_fallbacks],
            )
        )
    return assignments, unassigned


def _clip(text: str, limit: int = 300) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run_stages(
    settings: Settings,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    history: list[ChatTurn],
    store: ArtifactStore,
    summary: RunSummary,
    *,
    plan: list[PlanNode] | None = None,
    prior: PriorRun | None = None,
) -> ResponseResult:
    log = get_run_logger()
    check_request(request)

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
        nodes, repairs = validate_plan(
            [n.model_dump() for n in plan],
            inputs=inputs,
            request=request,
            allowed=TASK_TYPES,
            policy=InputPolicy.from_settings(settings),
        )
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
        start_candidate_downloads(settings, nodes, pins)  # the likely models download during the selection call
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
    prefetch_models(
        settings, assignments, store.run_id
    )  # every node's model downloads and loads while upstream nodes run

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


def node_task_options(settings: Settings, node: PlanNode, assignment: Assignment | None) -> dict[str, Any]:
    """A node task run's tags (task type, model, backend), its retries of transient failures
    (``HUGGINGGPT_NODE_RETRIES``) and the state hooks that report it to the progress views."""
    return {
        "tags": node_tags(node, assignment),
        "retries": settings.node_retries,
        "retry_delay_seconds": settings.node_retry_wait,
        **progress.NODE_STATE_HOOKS,
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
    with task_runner_for(settings) as runner:
        for node in nodes:  # nodes are in dependency order
            node_task = run_node.with_options(
                name=node.name,
                task_run_name=node.name,
                persist_result=settings.persist_results,
                **node_task_options(settings, node, by_node.get(node.id)),
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


def run_request(
    request: str,
    inputs: Sequence[str] = (),
    models: Mapping[str, str] | None = None,
    history: Sequence[ChatTurn] = (),
    storage: str | None = None,
    catalog: str | None = None,
    plan: Sequence[PlanNode] | None = None,
    resume_from: str | None = None,
    options: RunOptions | None = None,
) -> RunSummary:
    """Run the flow and return its summary whatever the outcome (no Prefect state to unwrap)."""
    settings = load_settings(options, storage=storage, catalog=catalog)
    with prefect_run_settings(heartbeats=settings.heartbeats):
        state = hugginggpt_request(
            request,
            inputs=list(inputs),
            models=dict(models or {}),
            history=list(history),
            storage=storage,
            catalog=catalog,
            plan=list(plan) if plan is not None else None,
            resume_from=resume_from,
            options=options,
            return_state=True,
        )
    summary = summary_of(state)
    if summary is not None:
        return summary
    raise RuntimeError(f"the flow run ended {state.name} without a summary: {state.message}")
