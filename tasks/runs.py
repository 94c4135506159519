"""What a run is asked, and what earlier runs left in storage.

The request's own rule (:func:`check_request`: not blank, bounded), the run record (``request.json``), and what
an earlier attempt left for a resume (:func:`load_prior`) or for a caller that lost the Prefect API
(:func:`stored_summary`). Everything read back from storage is validated like user input: run ids are confined to
the store, plans are validated again, model specs come from the catalog and settings, never from storage.
"""

from __future__ import annotations

import contextlib
import contextvars
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from prefect import get_run_logger
from pydantic import BaseModel, Field, ValidationError

from tasks.availability import Availability
from tasks.execute import node_folder
from tasks.inputs import InputPolicy, refused_inputs
from tasks.parsing import clip
from tasks.plan import PlanValidationError, validate_plan
from tasks.schemas import Assignment, ChatTurn, NodeResult, PlanNode, RequestSpec, RunSummary, SelectionResult
from tasks.select import SelectionError, check_pins, looks_like_folder, parse_pins, pinned_entry
from tasks.services import Services
from tasks.settings import Settings
from tasks.storage import ArtifactStore, StorageError, store_for
from tasks.task_types import TASK_TYPES

MAX_REQUEST_CHARS = 20_000


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


def input_problems(settings: Settings, inputs: Sequence[str]) -> str | None:
    """What is wrong with the catalog file or with inputs that must be on this machine, or refused by the input
    policy; ``None`` when nothing is."""
    if settings.catalog is not None and not Path(settings.catalog).is_file():
        return f"catalog file {settings.catalog} does not exist (HUGGINGGPT_CATALOG / --catalog)"
    missing = [p for p in inputs if "://" not in p and not Path(p).expanduser().is_file()]
    if missing:
        return f"input file(s) not found: {', '.join(missing)}"
    refused = refused_inputs(list(inputs), InputPolicy.from_settings(settings))
    return "; ".join(refused) if refused else None


class CheckedRequest(BaseModel):
    """A request that passed :func:`preflight`: its pins checked to run here, its explicit plan validated."""

    spec: RequestSpec
    pins: dict[str, str] = Field(default_factory=dict)
    plan: list[PlanNode] | None = None
    repairs: list[str] = Field(default_factory=list)


#: a request :func:`preflight` passed here, with the settings it was checked under (see :func:`checked_before`)
_checked: contextvars.ContextVar[tuple[CheckedRequest, dict[str, object]] | None] = contextvars.ContextVar(
    "hugginggpt_checked_request", default=None
)


@contextlib.contextmanager
def checked_before(checked: CheckedRequest, settings: Settings) -> Iterator[None]:
    """Within the block, :func:`preflight` of the same request under the same settings gives ``checked`` back
    instead of checking it again: the CLI checks a request before Prefect starts, and the flow it then runs in this
    process does not repeat the checks. Only in this process: a request that comes from anywhere else is checked."""
    token = _checked.set((checked, settings.model_dump()))
    try:
        yield
    finally:
        _checked.reset(token)


def preflight(
    spec: RequestSpec, services: Services, *, inputs_here: bool = False, resumed: bool = False
) -> CheckedRequest:
    """Everything checked before any LLM call: the request rule (:func:`check_request`), the inputs (refused by the
    input policy; with ``inputs_here``, also files that must be on this machine, as the CLI checks them), the pinned
    models (each one that can run here, :func:`tasks.select.check_pins`), an explicit plan (validated against the
    request's inputs, file arguments through the input policy). ``resumed``: the run reuses an earlier attempt's
    choices, checked as they are read. Inside :func:`checked_before` for this request and settings, the request
    checked there.

    Raises :class:`RequestError`, :class:`~tasks.select.SelectionError`,
    :class:`~tasks.plan_rules.PlanValidationError` or :class:`~models_catalog.catalog.CatalogError`, each naming
    what is wrong.
    """
    settings = services.settings
    handed = _checked.get()
    if handed is not None and handed[0].spec == spec and handed[1] == settings.model_dump():
        return handed[0]
    check_request(spec.request)
    if inputs_here:
        problem = input_problems(settings, spec.inputs)
    else:
        problem = "; ".join(refused_inputs(list(spec.inputs), InputPolicy.from_settings(settings))) or None
    if problem:  # said of the inputs themselves, before a plan could name them
        raise RequestError(problem)
    pins = parse_pins(spec.models)
    if resumed:
        return CheckedRequest(spec=spec, pins=pins)
    pins = check_pins(pins, services.availability)
    if spec.plan is None:
        return CheckedRequest(spec=spec, pins=pins)
    nodes, repairs = validate_plan(
        [n.model_dump() for n in spec.plan],
        inputs=spec.inputs,
        request=spec.request,
        allowed=TASK_TYPES,
        policy=InputPolicy.from_settings(settings),
    )
    return CheckedRequest(spec=spec, pins=pins, plan=nodes, repairs=repairs)


class RunRecord(BaseModel):
    """What a run was asked (``request.json``), so it can be resumed."""

    request: str
    inputs: list[str] = Field(default_factory=list)
    models: dict[str, str] = Field(default_factory=dict)
    history: list[ChatTurn] = Field(default_factory=list)


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


def load_prior(
    store: ArtifactStore,
    run_id: str,
    *,
    explicit: bool,
    settings: Settings,
    availability: Availability,
    request: str,
    inputs: Sequence[str],
    pins: Mapping[str, str] | None = None,
) -> PriorRun | None:
    """The earlier attempt ``run_id`` (this run's own folder on a Prefect retry), or ``None`` when there is none.

    What it left is read as untrusted input: the run id must name a folder of this store; the plan is validated
    again like a user's (file arguments through the input policy); model choices keep only the model ids, whose
    specs (local folder, endpoint, provider) are looked up again in the catalog and settings, never taken from
    storage; a finished node is reused only when it is this plan's node and every file it names lies inside the
    earlier run's own folder. A model that is a folder of weights is taken only when the run pins that very folder
    for that task (``pins``: the run's ``--model`` pins, checked again like a new run's). Anything else is a
    :class:`RequestError` naming the file.
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
    assignments, unassigned = _rederive_assignments(settings, availability, nodes, selection, pins or {})
    results: dict[int, NodeResult] = {}
    by_id = {n.id: n for n in nodes}
    for node in nodes:
        rel = f"{node_folder(node)}/node.json"
        try:
            raw = other.read_json(rel)
            result = None if raw is None else NodeResult.model_validate(raw)
        except (StorageError, ValidationError) as exc:
            get_run_logger().warning("not reusing %s: %s", other.uri(rel), clip(str(exc)))
            continue
        if result is None:
            continue
        files = [uri for modality, uri in result.outputs.items() if modality != "text"]
        outside = [uri for uri in files if not other.holds(uri, run_id)]
        if result.id != node.id or result.task != by_id[node.id].task or outside:
            why = f"it names {clip(outside[0])}, outside the run's folder" if outside else "it is another node's"
            get_run_logger().warning("not reusing %s: %s", other.uri(rel), why)
            continue
        results[node.id] = result.model_copy(update={"reused_from": result.reused_from or run_id})
    return PriorRun(
        run_id=run_id,
        nodes=nodes,
        repairs=[clip(r) for r in repairs],
        assignments=assignments,
        unassigned=unassigned,
        results=results,
    )


def _rederive_assignments(
    settings: Settings,
    available: Availability,
    nodes: Sequence[PlanNode],
    stored: SelectionResult,
    pins: Mapping[str, str],
) -> tuple[list[Assignment], dict[int, str]]:
    """The model choices of an earlier attempt with nothing but the model ids taken from storage: each spec and
    its fallbacks come from the catalog and the settings, as at selection (a model pinned for the task, a folder of
    weights included, as the pin names it). A node whose recorded model is no longer in the catalog, or cannot run
    here, is left unassigned with the reason."""
    chosen = {a.node_id: a for a in stored.assignments}
    assignments: list[Assignment] = []
    unassigned: dict[int, str] = {}
    for node in nodes:
        recorded = chosen.get(node.id)
        if recorded is None:
            unassigned[node.id] = clip(stored.unassigned.get(node.id) or "no model was assigned")
            continue
        entry = available.catalog.get(node.task, recorded.model)
        pin = pins.get(node.task)
        if entry is None and pin and looks_like_folder(pin) and str(Path(pin).expanduser().resolve()) == recorded.model:
            try:
                entry = pinned_entry(node.task, recorded.model, available.catalog)
            except SelectionError as exc:
                unassigned[node.id] = f"the model pinned earlier cannot be used: {exc}"
                continue
        if entry is None:
            unassigned[node.id] = (
                f"the model {clip(recorded.model)} chosen earlier is not in the catalog for {node.task}"
            )
            continue
        backend, why = available.choose(entry.spec())
        if backend is None:
            unassigned[node.id] = f"the model {entry.id} chosen earlier cannot run here: {why}"
            continue
        kept, _ = available.runnable(node.task, limit=settings.max_fallbacks + 1)
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
