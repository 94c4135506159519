"""The batch flow: a JSONL file of requests, each run as a child flow run of the request flow.

    hugginggpt batch s3://bucket/requests.jsonl --max-in-flight 8

One request per line: ``{"request": "...", "inputs": [...], "models": {task: model id}, "id": "...",
"plan": [...]}`` (only ``request`` is required; ``plan`` is a HuggingGPT-format plan as a list, an object with
``tasks``, or JSON/YAML text; ``meta`` is copied to the line's result untouched). Blank lines are skipped;
line numbers are the file's.

Each valid line runs as a child flow run of ``hugginggpt-request`` (named ``line-{n}-{id}: {request}``), started
from a task run of the batch (``batch-line``), with at most ``max_in_flight`` of them running at once. A line
that cannot be read becomes an ``invalid`` record with the reason; a request that fails becomes a ``failed``
record with its error; neither stops the batch. Lines that share a request text once their inputs are
abstracted (``Caption photo1.jpg`` and ``Caption photo2.jpg``, both given one image) are planned once, by a
``plan`` task run of the batch, and the others reuse that plan with their own inputs.

Each line's record is kept as it finishes, one file per line under ``{storage}/batches/lines-{key}/``, where
``key`` is a hash of the requests file's content and the storage: a batch interrupted (Ctrl-C, a crash, a
restart) and run again on the same file and storage skips the lines that completed and runs the others. The
results JSONL (one record per line, in input order, earlier attempts' records included) is written to
``{storage}/batches/{batch run id}/`` (or ``results_url``) in one atomic write when the batch ends, with
``summary.json`` beside it; while it runs, a progress artifact follows it, and a table artifact lists every line
at the end. A child run that the Prefect API refuses with 503 (a busy database) is started again.
"""

from __future__ import annotations

import hashlib
import mimetypes
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, Literal

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows import progress as progress_events
from flows.artifacts import artifact_scope
from flows.prefect_setup import prefect_run_settings
from flows.request import NoSummaryError, failure_reason, run_request
from flows.runners import shared_cluster
from tasks.llm import LLMError
from tasks.parsing import ParseError, loads_json, parse_plan_value, split_lines
from tasks.plan import PlanningError, PlanValidationError, plan_task, validate_plan
from tasks.report import artifact_key
from tasks.runs import MAX_REQUEST_CHARS, RequestError, check_request
from tasks.schemas import PlanNode, PlanResult, RequestSpec, RunSummary
from tasks.services import prepare_controller
from tasks.settings import LLMNotConfiguredError, RunOptions, Settings, load_settings
from tasks.storage import ArtifactStore, StorageError, read_uri, resolve_storage, store_for
from tasks.task_types import TASK_TYPES

LineStatus = Literal["completed", "failed", "invalid"]
_INPUT_RE = re.compile(r"<INPUT-(\d+)>")
_ANSWER_CHARS = 4000
_PROGRESS_EVERY = 0.5  # seconds between two updates of the progress artifact


class BatchError(RuntimeError):
    """The batch as a whole cannot run (its requests file cannot be read)."""


# ---------------------------------------------------------------------------
# contracts
# ---------------------------------------------------------------------------
class BatchLine(BaseModel):
    """One line of a requests file."""

    model_config = ConfigDict(extra="forbid")

    request: str = Field(description="what is asked, in plain language")
    inputs: list[str] = Field(default_factory=list, description="files the request refers to (paths or URLs)")
    models: dict[str, str] = Field(default_factory=dict, description="pinned models, {task: model id}")
    id: str | None = Field(default=None, description="the caller's id for this request, copied to its result")
    plan: list[Any] | dict[str, Any] | str | None = Field(
        default=None, description="an explicit plan (HuggingGPT format; a list, {'tasks': [...]}, or JSON/YAML text)"
    )
    meta: dict[str, Any] = Field(default_factory=dict, description="anything else, copied to the result untouched")

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("request")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        try:
            return check_request(v)
        except RequestError as exc:
            raise ValueError(str(exc)) from None


class ParsedLine(BaseModel):
    """A line of the file after reading: the request and its explicit plan, or why the line is invalid."""

    line: int
    spec: BatchLine | None = None
    plan: list[PlanNode] | None = None
    error: str | None = None
    id: str | None = Field(default=None, description="the line's id, when it could be read")
    request: str | None = Field(default=None, description="the line's request, when it could be read")

    @property
    def valid(self) -> bool:
        return self.error is None and self.spec is not None

    def invalid_record(self) -> LineResult:
        meta = self.spec.meta if self.spec is not None else {}
        return LineResult(
            line=self.line, id=self.id, request=self.request, status="invalid", error=self.error, meta=meta
        )


class LineResult(BaseModel):
    """The result record of one line (one line of ``results.jsonl``)."""

    line: int = Field(description="line number in the requests file (from 1)")
    id: str | None = None
    status: LineStatus
    request: str | None = None
    error: str | None = None
    flow_run_id: str | None = Field(default=None, description="the child flow run of hugginggpt-request")
    storage_uri: str | None = Field(default=None, description="the run's folder: summary.json and its files")
    answer: str | None = None
    plan_source: str | None = Field(
        default=None, description="'llm', 'explicit' (given with the line) or 'batch plan cache of line N'"
    )
    plan_cached: bool = Field(default=False, description="the plan was made once for an earlier line and reused")
    tasks: list[str] = Field(default_factory=list, description="the plan's nodes, e.g. image-to-text#0")
    seconds: float = 0.0
    meta: dict[str, Any] = Field(default_factory=dict)


class BatchSummary(BaseModel):
    """What a batch did; ``records`` holds one result per line, in input order."""

    flow_run_id: str
    requests_url: str
    results_uri: str | None = None
    status: Literal["completed", "failed"] = "completed"
    lines: int = 0
    completed: int = 0
    failed: int = 0
    invalid: int = 0
    max_in_flight: int = 1
    plan_groups: int = Field(default=0, description="request texts shared by several lines, each planned once")
    planning_calls: int = Field(default=0, description="LLM calls made to plan those shared requests")
    plans_cached: int = Field(default=0, description="lines that reused a plan made for an earlier line")
    batch_key: str | None = Field(
        default=None, description="hash of the requests file's content and the storage: what a rerun resumes by"
    )
    resumed: int = Field(
        default=0, description="lines completed by an earlier attempt of the same batch, not run again"
    )
    seconds: float = 0.0
    records: list[LineResult] = Field(default_factory=list)


class BatchFailed(RuntimeError):
    """Some lines of a batch failed or were invalid (every other line ran); ``summary`` holds every result.

    The data of the batch's Failed state, so that ``state.result(raise_on_failure=False)`` gives it back and
    a plain call of the flow raises it with a readable message.
    """

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        super().__init__(
            f"{summary.failed} failed and {summary.invalid} invalid of {summary.lines} line(s); "
            f"results: {summary.results_uri}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.summary,))


# ---------------------------------------------------------------------------
# reading the file
# ---------------------------------------------------------------------------
def _pydantic_problems(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        where = ".".join(str(p) for p in e["loc"]) or "line"
        msg = "unknown field" if e["type"] == "extra_forbidden" else e["msg"]
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def _plan_nodes(raw: list[Any] | dict[str, Any] | str) -> list[Any]:
    """The list of raw nodes of an explicit plan given as a list, an object with ``tasks``, or JSON/YAML text
    (:func:`tasks.parsing.parse_plan_value`)."""
    try:
        return parse_plan_value(raw)
    except ParseError as exc:
        raise PlanValidationError([str(exc)]) from None


def parse_line(number: int, text: str) -> ParsedLine:
    """One line of the file: a valid request (with its explicit plan validated), or the reason it is invalid."""
    try:
        value = loads_json(text, f"line {number}")
    except ParseError as exc:
        return ParsedLine(line=number, error=str(exc))
    if not isinstance(value, dict):
        return ParsedLine(line=number, error=f"line {number}: expected a JSON object, got {type(value).__name__}")
    raw_id = value.get("id")
    known: dict[str, Any] = {
        "id": str(raw_id)[:200] if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None,
        "request": value["request"][:MAX_REQUEST_CHARS] if isinstance(value.get("request"), str) else None,
    }
    try:
        spec = BatchLine.model_validate(value)
    except ValidationError as exc:
        return ParsedLine(line=number, error=f"line {number}: {_pydantic_problems(exc)}", **known)
    plan = None
    if spec.plan is not None:
        try:
            plan, _ = validate_plan(
                _plan_nodes(spec.plan), inputs=spec.inputs, request=spec.request, allowed=TASK_TYPES
            )
        except PlanValidationError as exc:
            return ParsedLine(line=number, spec=spec, error=f"line {number}: plan: {exc}", **known)
    return ParsedLine(line=number, spec=spec, plan=plan, **known)


def parse_requests(text: str) -> list[ParsedLine]:
    """Every non-blank line of a requests file, in order."""
    return [parse_line(n, raw) for n, raw in enumerate(split_lines(text), start=1) if raw.strip()]


def _options_for(url: str, settings: Settings) -> dict[str, Any]:
    """The store's fsspec options apply to a URL on the store's own protocol."""
    root, options = resolve_storage(settings.storage, settings.storage_options)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    root_protocol = root.split("://", 1)[0] if "://" in root else "file"
    return options if protocol == root_protocol else {}


def read_requests(url: str, settings: Settings) -> str:
    try:
        data = read_uri(
            url, _options_for(url, settings), retries=settings.storage_retries, retry_wait=settings.storage_retry_wait
        )
    except StorageError as exc:
        raise BatchError(f"cannot read the requests file: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BatchError(f"{url} is not UTF-8 text: {exc}") from exc


# ---------------------------------------------------------------------------
# finished lines, recorded as they finish
# ---------------------------------------------------------------------------
_PART = re.compile(r"([0-9]{1,9})\.json", re.ASCII)


def batch_key(text: str, settings: Settings) -> str:
    """What identifies a batch for resuming: its requests file's content and the storage it runs against."""
    root, _ = resolve_storage(settings.storage, settings.storage_options)
    return hashlib.sha256(f"{root}\0{text}".encode()).hexdigest()[:16]


class LineParts:
    """One file per finished line, ``{storage}/batches/lines-{key}/{line}.json``, written (atomically) as the line
    finishes, so an interrupted batch keeps every finished line's record and a rerun of the same file against the
    same storage skips the lines that completed. Parts are read back as untrusted input."""

    def __init__(self, store: ArtifactStore, key: str) -> None:
        self.store = store
        self.folder = f"batches/lines-{key}"

    def record(self, result: LineResult) -> None:
        self.store.put_root_bytes(f"{self.folder}/{result.line:07d}.json", result.model_dump_json().encode("utf-8"))

    def completed(self, parsed: Sequence[ParsedLine]) -> dict[int, LineResult]:
        """Positions in ``parsed`` of the lines an earlier attempt completed, with their records. A part that is
        damaged, or does not match its line of the file (number, id, request), is ignored: that line runs again."""
        log = get_run_logger()
        position = {p.line: pos for pos, p in enumerate(parsed) if p.valid and p.spec is not None}
        done: dict[int, LineResult] = {}
        for name in self.store.list_root(self.folder):
            match = _PART.fullmatch(name)
            if match is None or int(match.group(1)) not in position:
                continue
            pos = position[int(match.group(1))]
            spec = parsed[pos].spec
            assert spec is not None
            try:
                record = LineResult.model_validate(self.store.read_root_json(f"{self.folder}/{name}"))
            except (StorageError, ValidationError) as exc:
                log.warning("line %d runs again: its earlier record is damaged (%s)", parsed[pos].line, str(exc)[:300])
                continue
            if (
                record.status != "completed"
                or record.line != parsed[pos].line
                or record.request != spec.request
                or record.id != spec.id
                or (record.storage_uri is not None and not self.store.holds(record.storage_uri))
            ):
                continue
            done[pos] = record.model_copy(update={"meta": spec.meta})
        return done


# ---------------------------------------------------------------------------
# the plan cache: lines sharing a request text, inputs abstracted
# ---------------------------------------------------------------------------
def _basename(path: str) -> str:
    return posixpath.basename(path.replace("\\", "/").rstrip("/"))


def _input_pattern(inputs: Sequence[str]) -> tuple[re.Pattern[str] | None, dict[str, tuple[int, bool]]]:
    """A regex matching each input as given or by its base name (longest first), and what each match means."""
    meaning: dict[str, tuple[int, bool]] = {}
    for i, given in enumerate(inputs):
        for text, whole in ((given, True), (_basename(given), False)):
            if text and text not in meaning:
                meaning[text] = (i, whole)
    if not meaning:
        return None, meaning
    alternatives = sorted(meaning, key=len, reverse=True)
    return re.compile("|".join(re.escape(a) for a in alternatives)), meaning


def abstract_inputs(text: str, inputs: Sequence[str]) -> str:
    """``text`` with each input (as given, or its base name) replaced by ``<INPUT-i>``."""
    pattern, meaning = _input_pattern(inputs)
    if pattern is None:
        return text
    return pattern.sub(lambda m: f"<INPUT-{meaning[m.group(0)][0]}>", text)


def _input_kind(path: str) -> str:
    kind, _ = mimetypes.guess_type(_basename(path))
    if kind:
        return kind.split("/", 1)[0]
    return posixpath.splitext(_basename(path))[1].lower() or "file"


def plan_key(spec: BatchLine) -> tuple[str, tuple[str, ...]]:
    """What a plan depends on: the request text with its inputs abstracted, and the kind of each input."""
    return abstract_inputs(spec.request.strip(), spec.inputs), tuple(_input_kind(p) for p in spec.inputs)


def adapt_plan(
    nodes: Sequence[PlanNode], from_inputs: Sequence[str], to_inputs: Sequence[str], request: str
) -> list[PlanNode]:
    """A plan made for one line's inputs, rewritten for another's: each argument naming input i (as given or
    by base name) names the other line's input i instead; then validated against that line."""
    pattern, meaning = _input_pattern(from_inputs)

    def swap(match: re.Match[str]) -> str:
        i, whole = meaning[match.group(0)]
        if i >= len(to_inputs):
            return match.group(0)
        return to_inputs[i] if whole else _basename(to_inputs[i])

    raw: list[dict[str, Any]] = []
    for node in nodes:
        args = {}
        for name, value in node.args.items():
            if value in from_inputs and from_inputs.index(value) < len(to_inputs):
                args[name] = to_inputs[from_inputs.index(value)]
            else:
                args[name] = pattern.sub(swap, value) if pattern is not None else value
        raw.append({"id": node.id, "task": node.task, "dep": list(node.dep), "args": args})
    adapted, _ = validate_plan(raw, inputs=to_inputs, request=request, allowed=TASK_TYPES)
    return adapted


def plan_groups(parsed: Sequence[ParsedLine]) -> dict[tuple[str, tuple[str, ...]], list[int]]:
    """Positions (in ``parsed``) of the lines to be planned by the LLM, grouped by :func:`plan_key`."""
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for pos, p in enumerate(parsed):
        if p.valid and p.spec is not None and p.plan is None:
            groups.setdefault(plan_key(p.spec), []).append(pos)
    return groups


# ---------------------------------------------------------------------------
# one line
# ---------------------------------------------------------------------------
def _child_name(line: int, spec: BatchLine) -> str:
    request = " ".join(spec.request.split())
    request = request if len(request) <= 50 else request[:47] + "..."
    return f"line-{line}" + (f"-{spec.id}" if spec.id else "") + f": {request}"


def _record(line: int, spec: BatchLine, **fields: Any) -> LineResult:
    return LineResult(line=line, id=spec.id, request=spec.request, meta=spec.meta, **fields)


@task(name="batch-line", cache_policy=NO_CACHE)
def run_line(
    line: int,
    spec: BatchLine,
    plan: list[PlanNode] | None,
    plan_source: str,
    shared_plan: PlanResult | BaseException | None = None,
    shared_inputs: list[str] | None = None,
    storage: str | None = None,
    catalog: str | None = None,
    options: RunOptions | None = None,
) -> State:
    """Prefect task: run one line as a child flow run of the request flow; never raises.

    Ends Completed with the line's :class:`LineResult`, or Failed with it as data when the request failed.
    ``shared_plan`` is the plan made once for this line's group (or the exception that planning raised).
    """
    t0 = time.perf_counter()
    cached = plan_source.startswith("batch plan cache")

    def failed(error: str, **fields: Any) -> State:
        record = _record(
            line, spec, status="failed", error=error, plan_source=plan_source, plan_cached=cached, **fields
        )
        record.seconds = time.perf_counter() - t0
        return Failed(message=f"line {line}: {error}", data=record)

    if isinstance(shared_plan, BaseException):
        return failed(f"planning failed: {shared_plan}")
    if shared_plan is not None:
        try:
            plan = adapt_plan(shared_plan.nodes, shared_inputs or [], spec.inputs, spec.request)
        except PlanValidationError as exc:
            return failed(f"the shared plan does not fit this line's inputs: {exc}")
    request = RequestSpec(
        request=spec.request, inputs=list(spec.inputs), models=dict(spec.models), plan=plan, plan_source=plan_source
    )
    run_options = (options or RunOptions()).model_copy(
        update={k: v for k, v in {"storage": storage, "catalog": catalog}.items() if v is not None}
    )
    try:
        value = _start_child(lambda: run_request(request, run_options, run_name=_child_name(line, spec)), line)
    except NoSummaryError as exc:
        return failed(f"the request's flow run ended without a summary: {exc}")
    except Exception as exc:  # the child could not even start (e.g. its parameters were rejected)
        return failed(f"{type(exc).__name__}: {exc}")
    answer = value.answer if len(value.answer) <= _ANSWER_CHARS else value.answer[: _ANSWER_CHARS - 3] + "..."
    record = _record(
        line,
        spec,
        status="completed" if value.status == "completed" else "failed",
        error=failure_reason(value) if value.status != "completed" else None,
        flow_run_id=value.flow_run_id,
        storage_uri=value.storage_uri,
        answer=answer,
        plan_source=plan_source,
        plan_cached=cached,
        tasks=[n.name for n in value.plan],
        seconds=time.perf_counter() - t0,
    )
    if record.status == "failed":
        return Failed(message=f"line {line}: {record.error}", data=record)
    return Completed(data=record, message=f"line {line} completed")


CHILD_START_ATTEMPTS = 4
CHILD_START_WAIT = 2.0  # seconds before the first new attempt (doubles)


def _unavailable(exc: BaseException) -> bool:
    """Whether the Prefect API answered 503 (its database busy: SQLite's "database is locked") after the client's own
    retries."""
    import httpx

    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code == 503


def _start_child(start: Callable[[], RunSummary], line: int) -> RunSummary:
    """``start()`` (a child flow run of the request flow), again after a wait when the Prefect API answers 503."""
    for attempt in range(CHILD_START_ATTEMPTS):
        try:
            return start()
        except Exception as exc:
            if not _unavailable(exc) or attempt == CHILD_START_ATTEMPTS - 1:
                raise
            delay = CHILD_START_WAIT * 2**attempt
            get_run_logger().warning("line %d: the Prefect API answered 503; starting again in %.0f s", line, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _collect_line(parsed: ParsedLine, future: PrefectFuture[Any]) -> LineResult:
    future.wait()
    state = future.state
    try:
        value = state.result(raise_on_failure=False)
    except Exception as exc:
        value = exc
    if isinstance(value, LineResult):
        return value
    assert parsed.spec is not None
    return _record(parsed.line, parsed.spec, status="failed", error=f"task run ended {state.name}: {value}")


# ---------------------------------------------------------------------------
# the flow
# ---------------------------------------------------------------------------
def _batch_run_name() -> str:
    url = str(flow_run.parameters.get("requests_url", "")) or "requests"
    return f"batch {_basename(url) or url}"


def table_rows(records: Iterable[LineResult]) -> list[dict[str, str]]:
    rows = []
    for r in records:
        outcome = r.answer if r.status == "completed" else r.error
        outcome = (outcome or "").replace("\n", " ")
        rows.append(
            {
                "line": str(r.line),
                "id": r.id or "",
                "status": r.status,
                "request": (r.request or "")[:120],
                "plan": r.plan_source or "",
                "tasks": ", ".join(r.tasks),
                "answer or error": outcome if len(outcome) <= 300 else outcome[:297] + "...",
                "flow run": r.flow_run_id or "",
                "seconds": f"{r.seconds:.1f}",
            }
        )
    return rows


def _summary_markdown(summary: BatchSummary) -> str:
    lines = [
        f"# Batch {summary.requests_url}",
        "",
        f"**{summary.completed}** completed, **{summary.failed}** failed, **{summary.invalid}** invalid "
        f"of {summary.lines} line(s) in {summary.seconds:.1f} s, at most {summary.max_in_flight} in flight.",
        "",
        f"Plan cache: {summary.plan_groups} shared request text(s) planned once with {summary.planning_calls} "
        f"LLM call(s); {summary.plans_cached} line(s) reused a plan.",
        "",
        f"Results: `{summary.results_uri}`",
    ]
    problems = [r for r in summary.records if r.status != "completed"]
    if problems:
        lines += ["", "| line | id | status | error |", "| --- | --- | --- | --- |"]
        for r in problems[:50]:
            error = (r.error or "").replace("|", "\\|").replace("\n", " ")[:200]
            lines.append(f"| {r.line} | {r.id or ''} | {r.status} | {error} |")
        if len(problems) > 50:
            lines.append(f"\n... and {len(problems) - 50} more (see the results file)")
    return "\n".join(lines)


def _results_target(settings: Settings, run_id: str, results_url: str | None) -> tuple[ArtifactStore, str]:
    """Where the results go: a store and the file's path under its root."""
    if not results_url:
        return store_for(settings, run_id), f"batches/{run_id}/results.jsonl"
    url = results_url.rstrip("/")
    folder, name = posixpath.split(url)
    if "://" in url and folder.endswith(":/"):  # s3://bucket-only: no folder part
        folder, name = url, "results.jsonl"
    store = ArtifactStore(
        folder or ".",
        run_id,
        _options_for(url, settings),
        retries=settings.storage_retries,
        retry_wait=settings.storage_retry_wait,
    )
    return store, name


@flow(name="hugginggpt-batch", flow_run_name=_batch_run_name, validate_parameters=True)
def hugginggpt_batch(
    requests_url: str,
    storage: str | None = None,
    catalog: str | None = None,
    max_in_flight: Annotated[int, Field(ge=1)] | None = None,
    results_url: str | None = None,
    options: RunOptions | None = None,
) -> BatchSummary:
    """Run every request of a JSONL file as a child flow run of ``hugginggpt-request``.

    Args:
        requests_url: the JSONL file, a path or any fsspec URL (``s3://bucket/requests.jsonl``).
        storage: fsspec URL of the artifact store (default ``HUGGINGGPT_STORAGE``).
        catalog: extra catalog JSONL (default ``HUGGINGGPT_CATALOG``).
        max_in_flight: requests running at the same time (default ``HUGGINGGPT_BATCH_MAX_IN_FLIGHT``).
        results_url: where to write the results JSONL (default ``{storage}/batches/{flow run id}/results.jsonl``).
        options: settings for every line's run on top of the environment (see ``hugginggpt_request``).

    Returns the :class:`BatchSummary`. When a line failed or was invalid, the flow run ends Failed (after every
    other line has run) with a :class:`BatchFailed` as its data, whose ``summary`` is the same; ``run_batch``
    returns the summary either way.
    """
    t_start = time.perf_counter()
    log = get_run_logger()
    settings = load_settings(options, storage=storage, catalog=catalog)
    run_id = str(flow_run.id or uuid.uuid4())
    in_flight = max_in_flight or settings.batch_max_in_flight
    text = read_requests(requests_url, settings)
    parsed = parse_requests(text)
    key = batch_key(text, settings)
    parts = LineParts(store_for(settings, run_id), key)
    summary = BatchSummary(
        flow_run_id=run_id, requests_url=requests_url, lines=len(parsed), max_in_flight=in_flight, batch_key=key
    )
    records: list[LineResult | None] = [None] * len(parsed)
    for pos, p in enumerate(parsed):
        if not p.valid:
            records[pos] = p.invalid_record()
            log.warning("invalid %s", p.error)
    earlier = parts.completed(parsed)
    for pos, record in earlier.items():
        records[pos] = record
    summary.resumed = len(earlier)
    invalid = sum(not p.valid for p in parsed)
    log.info(
        "%d line(s), %d invalid, %d completed by an earlier attempt (batch %s); at most %d in flight",
        len(parsed),
        invalid,
        len(earlier),
        key,
        in_flight,
    )

    progress_id = create_progress_artifact(
        progress=0.0,
        key=artifact_key(artifact_scope("batch"), "progress"),
        description=f"Lines of {requests_url} finished, batch run {run_id}",
    )
    done = sum(r is not None for r in records)
    last_update = 0.0

    def progress(force: bool = False) -> None:
        nonlocal last_update
        now = time.monotonic()
        if parsed and (force or now - last_update >= _PROGRESS_EVERY):
            update_progress_artifact(progress_id, progress=round(100.0 * done / len(parsed), 1))
            last_update = now

    groups = {
        shared: todo
        for shared, members in plan_groups(parsed).items()
        if len(todo := [m for m in members if m not in earlier]) > 1
    }
    no_controller: str | None = None  # why lines without a plan cannot be planned, if they cannot
    if any(p.valid and p.plan is None for p in parsed):
        try:
            prepare_controller(settings)
        except LLMNotConfiguredError as exc:
            no_controller = str(exc)
    summary.plan_groups = len(groups)
    with shared_cluster(settings) as cluster, ThreadPoolTaskRunner(max_workers=in_flight) as runner:
        line_options = (options or RunOptions()).model_copy(update={"dask_address": cluster} if cluster else {})
        plan_futures: dict[int, PrefectFuture[Any]] = {}  # first position of a group -> its planning task run
        group_of: dict[int, int] = {}  # position -> first position of its group
        if no_controller is None:
            for members in groups.values():
                first = parsed[members[0]]
                assert first.spec is not None
                plan_futures[members[0]] = runner.submit(
                    plan_task.with_options(task_run_name=f"plan-line-{first.line}"),
                    {"settings": settings, "request": first.spec.request, "inputs": first.spec.inputs, "history": []},
                )
                group_of.update({m: members[0] for m in members})
        futures: dict[int, PrefectFuture[Any]] = {}
        for pos, p in enumerate(parsed):
            if not p.valid or p.spec is None or pos in earlier:
                continue
            params: dict[str, Any] = {
                "line": p.line,
                "spec": p.spec,
                "plan": p.plan,
                "plan_source": "explicit" if p.plan is not None else "llm",
                "storage": storage,
                "catalog": catalog,
                "options": line_options,
            }
            if p.plan is None and no_controller is not None:
                records[pos] = _record(p.line, p.spec, status="failed", error=no_controller, plan_source="llm")
                done += 1
                continue
            if pos in group_of:
                first = group_of[pos]
                assert parsed[first].spec is not None
                if pos != first:
                    params["plan_source"] = f"batch plan cache of line {parsed[first].line}"
                params["shared_plan"] = allow_failure(plan_futures[first])
                params["shared_inputs"] = parsed[first].spec.inputs
            ident = f"-{p.spec.id}" if p.spec.id else ""
            with tags("hugginggpt", f"batch-{run_id}"):  # the line's task run and child flow run: filter by batch
                futures[pos] = runner.submit(run_line.with_options(task_run_name=f"line-{p.line}{ident}"), params)
        progress(force=True)
        position = {id(f): pos for pos, f in futures.items()}
        for future in as_completed(list(futures.values())):
            pos = position[id(future)]
            record = _collect_line(parsed[pos], future)
            records[pos] = record
            done += 1
            progress_events.emit(
                progress_events.LineEvent(record.line, record.status, done, len(parsed), record.id or "")
            )
            try:
                parts.record(record)
            except StorageError as exc:
                log.warning("line %d: its record could not be kept for a resume: %s", record.line, exc)
            log.info(
                "line %d%s %s in %.1f s",
                record.line,
                f" ({record.id})" if record.id else "",
                record.status,
                record.seconds,
            )
            progress()
        for future in plan_futures.values():
            state = future.state
            value = state.result(raise_on_failure=False) if state.is_final() else None
            # a plan refused twice, or a failed call, took its calls too
            if isinstance(value, PlanResult | PlanningError | LLMError):
                summary.planning_calls += value.usage.calls
    progress(force=True)

    summary.records = [r for r in records if r is not None]
    summary.completed = sum(r.status == "completed" for r in summary.records)
    summary.failed = sum(r.status == "failed" for r in summary.records)
    summary.invalid = sum(r.status == "invalid" for r in summary.records)
    summary.plans_cached = sum(r.plan_cached for r in summary.records)
    summary.status = "completed" if summary.completed == summary.lines else "failed"
    summary.seconds = time.perf_counter() - t_start

    store, results_rel = _results_target(settings, run_id, results_url)
    body = "".join(r.model_dump_json() + "\n" for r in summary.records).encode("utf-8")
    summary.results_uri = store.put_root_bytes(results_rel, body)
    batch_store = store_for(settings, run_id)
    batch_store.put_root_bytes(f"batches/{run_id}/summary.json", summary.model_dump_json(indent=2).encode("utf-8"))
    log.info(
        "batch done: %d completed, %d failed, %d invalid of %d; %d line(s) reused a plan; results: %s",
        summary.completed,
        summary.failed,
        summary.invalid,
        summary.lines,
        summary.plans_cached,
        summary.results_uri,
    )

    if summary.records:
        create_table_artifact(
            key=artifact_key(artifact_scope("batch"), "lines"),
            table=table_rows(summary.records),
            description=f"One row per line of {requests_url}, batch run {run_id}",
        )
    create_markdown_artifact(
        key=artifact_key(artifact_scope("batch"), "summary"),
        markdown=_summary_markdown(summary),
        description=f"Batch summary of run {run_id}: {requests_url}",
    )
    if summary.status == "failed":
        failure = BatchFailed(summary)
        return Failed(message=str(failure), data=failure)
    return summary


# ---------------------------------------------------------------------------
# from Python, without Prefect concepts
# ---------------------------------------------------------------------------
def sqlite_concurrency_warning(max_in_flight: int) -> str | None:
    """A warning when requests would run concurrently against a Prefect server on SQLite: the embedded one, or a
    ``prefect server start`` on this machine (``PREFECT_API_URL`` on a loopback address) with this profile's
    database, SQLite unless ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` says otherwise.

    SQLite answers concurrent flow runs' writes with "database is locked", which the API turns into 503 and the
    client retries after 2, 4, 8... seconds: on this machine a 50-request batch at 4 in flight took twice as long
    as the same requests one by one (``bench/README.md``). A server elsewhere is not inspected: its database is not
    visible from here.
    """
    from urllib.parse import urlsplit

    from prefect.settings import get_current_settings

    current = get_current_settings()
    if max_in_flight <= 1:
        return None
    url = current.server.database.connection_url
    if url is None or not url.get_secret_value().startswith("sqlite"):
        return None
    if not current.api.url:
        where = "Prefect's embedded server, whose database is SQLite"
    elif urlsplit(current.api.url).hostname in ("127.0.0.1", "localhost", "::1"):
        where = f"the Prefect server at {current.api.url}, whose database is SQLite (this profile's)"
    else:
        return None
    return (
        f"{max_in_flight} requests in flight on {where}: concurrent "
        "runs get 'database is locked' answers that are retried after 2, 4, 8... s, which can make the batch slower "
        "than one request at a time. Start a Prefect server on PostgreSQL and set PREFECT_API_URL (see "
        "deployments/README.md), or pass --max-in-flight 1."
    )


def run_batch(
    requests_url: str,
    storage: str | None = None,
    catalog: str | None = None,
    max_in_flight: int | None = None,
    results_url: str | None = None,
    options: RunOptions | None = None,
) -> BatchSummary:
    """Run the batch flow and return its summary whatever the outcome (no Prefect state to unwrap)."""
    settings = load_settings(options, storage=storage, catalog=catalog)
    with prefect_run_settings(heartbeats=settings.heartbeats):
        state = hugginggpt_batch(
            requests_url,
            storage=storage,
            catalog=catalog,
            max_in_flight=max_in_flight,
            results_url=results_url,
            options=options,
            return_state=True,
        )
    value = state.result(raise_on_failure=False)
    if isinstance(value, BatchFailed):
        return value.summary
    if isinstance(value, BatchSummary):
        return value
    if isinstance(value, BaseException):
        raise value
    raise RuntimeError(f"the batch flow run ended {state.name} without a summary: {value}")


def read_summary(flow_run_id: str, storage: str | None = None) -> RunSummary | None:
    """The summary of a request's flow run, read back from storage (``{storage}/{flow_run_id}/summary.json``):
    what a caller of ``run_deployment`` uses, since the run happened in a worker's process."""
    settings = load_settings(storage=storage)
    raw = store_for(settings, str(flow_run_id)).read_json("summary.json")
    return None if raw is None else RunSummary.model_validate(raw)


def read_batch_summary(flow_run_id: str, storage: str | None = None) -> BatchSummary | None:
    """The summary of a batch flow run, read back from ``{storage}/batches/{flow_run_id}/summary.json``."""
    settings = load_settings(storage=storage)
    raw = store_for(settings, str(flow_run_id)).read_root_json(f"batches/{flow_run_id}/summary.json")
    return None if raw is None else BatchSummary.model_validate(raw)
