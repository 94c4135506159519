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

import concurrent.futures
import contextlib
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
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure, quote
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows import events as progress_events
from flows.artifacts import artifact_scope
from flows.batch_budget import BudgetMeter, Budgets
from flows.batch_ledger import BatchBusyError, BatchLock, completed_summary, line_tags, tagged_runs
from flows.prefect_setup import prefect_run_settings
from flows.request import NoSummaryError, failure_reason, run_request
from flows.result_links import verified_result_links
from flows.runners import shared_cluster
from tasks.llm import LLMError
from tasks.parsing import ParseError, loads_json, parse_plan_value, split_lines
from tasks.plan import PlanningError, PlanValidationError, plan_task, validate_plan
from tasks.report import artifact_key
from tasks.runs import MAX_REQUEST_CHARS, RequestError, check_request
from tasks.schemas import PlanNode, PlanResult, RequestSpec, RunSummary
from tasks.services import prepare_controller
from tasks.settings import LLMNotConfiguredError, RunOptions, Settings, load_settings
from tasks.storage import BLOCK_PREFIX, ArtifactStore, StorageError, resolve_storage, store_for
from tasks.tables import (
    OUTCOME_COLUMNS,
    ColumnMap,
    ResultsWriter,
    TableError,
    TableRow,
    content_key,
    input_types,
    read_rows,
    table_format,
)
from tasks.task_types import TASK_TYPES

LineStatus = Literal["completed", "failed", "invalid", "not started"]
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
    columns: dict[str, Any] = Field(default_factory=dict, description="the mapped columns of a table's row")
    meta_given: dict[str, Any] = Field(default_factory=dict, description="the carried columns, even when invalid")

    @property
    def valid(self) -> bool:
        return self.error is None and self.spec is not None

    def invalid_record(self) -> LineResult:
        meta = self.spec.meta if self.spec is not None else self.meta_given
        return LineResult(
            line=self.line,
            id=self.id,
            request=self.request,
            status="invalid",
            error=self.error,
            meta=meta,
            columns=self.columns,
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
    llm_tokens: int = Field(default=0, description="LLM tokens the line's run used (prompt and completion)")
    files: dict[str, str] = Field(
        default_factory=dict, description="every output file of the run: 'file:{node}.{modality}' -> its URI"
    )
    columns: dict[str, Any] = Field(
        default_factory=dict, description="the line's request, id and input columns, when it came from a table"
    )
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
    not_started: int = Field(default=0, description="lines a budget kept from starting: a rerun runs them")
    max_in_flight: int = 1
    deployment: str | None = Field(default=None, description="the deployment each line ran as, if not a subflow")
    llm_tokens: int = Field(default=0, description="LLM tokens used by this attempt's lines and shared plans")
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


def _counts(summary: BatchSummary) -> str:
    parts = [f"{summary.failed} failed", f"{summary.invalid} invalid"]
    if summary.not_started:
        parts.append(f"{summary.not_started} not started")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


class BatchFailed(RuntimeError):
    """Some lines of a batch failed or were invalid (every other line ran); ``summary`` holds every result.

    The data of the batch's Failed state, so that ``state.result(raise_on_failure=False)`` gives it back and
    a plain call of the flow raises it with a readable message.
    """

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        super().__init__(f"{_counts(summary)} of {summary.lines} line(s); results: {summary.results_uri}")

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
    return parse_value(number, value)


def parse_row(row: TableRow) -> ParsedLine:
    """One row read by :func:`tasks.tables.read_rows`: a JSONL line's text, or a table row already mapped."""
    if row.text is not None:
        return parse_line(row.number, row.text)
    if row.value is None or row.error is not None:
        value = row.value or {}
        parsed = ParsedLine(line=row.number, error=row.error or f"row {row.number} cannot be read")
        return parsed.model_copy(update=_known(value) | {"columns": row.columns, "meta_given": value.get("meta", {})})
    parsed = parse_value(row.number, {k: v for k, v in row.value.items() if v is not None or k != "id"})
    return parsed.model_copy(update={"columns": row.columns, "meta_given": row.value.get("meta", {})})


def _known(value: dict[str, Any]) -> dict[str, Any]:
    raw_id = value.get("id")
    return {
        "id": str(raw_id)[:200] if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None,
        "request": value["request"][:MAX_REQUEST_CHARS] if isinstance(value.get("request"), str) else None,
    }


def parse_value(number: int, value: dict[str, Any]) -> ParsedLine:
    """One request given as an object (a JSONL line, a table's row): valid, or the reason it is invalid."""
    known = _known(value)
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


# ---------------------------------------------------------------------------
# finished lines, recorded as they finish
# ---------------------------------------------------------------------------
_PART = re.compile(r"([0-9]{1,9})\.json", re.ASCII)


class LineParts:
    """One file per finished line, ``{storage}/batches/lines-{key}/{line}.json``, written (atomically) as the line
    finishes, so an interrupted batch keeps every finished line's record and a rerun of the same file against the
    same storage skips the lines that completed.

    Parts are read back as untrusted input: a part counts only when the run it names holds, in its own folder, a
    summary of that run, for that line's request, that says completed (:func:`flows.batch_ledger.completed_summary`),
    and the line's record is rebuilt from that summary. A line whose run completed but whose part was never written
    (the batch was killed in between) is found through the Prefect API by the run's tags."""

    def __init__(self, store: ArtifactStore, key: str) -> None:
        self.store = store
        self.key = key
        self.folder = f"batches/lines-{key}"

    def record(self, result: LineResult) -> None:
        self.store.put_root_bytes(f"{self.folder}/{result.line:07d}.json", result.model_dump_json().encode("utf-8"))

    def completed(self, parsed: Sequence[ParsedLine]) -> dict[int, LineResult]:
        """Positions in ``parsed`` of the lines an earlier attempt completed, with their records rebuilt from their
        runs' summaries. A part that is damaged, does not match its line (number, id, request), or names a run that
        did not complete that request is ignored, and so is a run the Prefect API lists whose summary is not there:
        that line runs again."""
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
            if record.status != "completed" or record.line != parsed[pos].line or record.request != spec.request:
                continue
            if record.id != spec.id:
                continue
            summary = completed_summary(self.store, record.flow_run_id, spec.request)
            if summary is None:
                log.warning(
                    "line %d runs again: its record names run %s, whose own summary does not show that request "
                    "completed",
                    parsed[pos].line,
                    str(record.flow_run_id)[:60],
                )
                continue
            done[pos] = _record_from_summary(parsed[pos], summary, record.plan_source or summary.plan_source)
        missing = [pos for pos in position.values() if pos not in done]
        if missing:
            done.update(self._adopt(parsed, missing))
        return done

    def _adopt(self, parsed: Sequence[ParsedLine], missing: list[int]) -> dict[int, LineResult]:
        """Lines whose run completed while no record was kept (the batch stopped first): found by their runs' tags
        in the Prefect API, checked against the runs' summaries, and recorded now."""
        log = get_run_logger()
        try:
            runs = tagged_runs(self.key)
        except Exception as exc:  # the API cannot say: those lines run again
            log.warning("could not ask the Prefect API for this batch's earlier runs: %s", str(exc)[:300])
            return {}
        adopted: dict[int, LineResult] = {}
        for pos in missing:
            p = parsed[pos]
            assert p.spec is not None
            for flow_run_id in reversed(runs.get(p.line, [])):
                summary = completed_summary(self.store, flow_run_id, p.spec.request)
                if summary is None:
                    continue
                record = _record_from_summary(p, summary, summary.plan_source)
                adopted[pos] = record
                with contextlib.suppress(StorageError):
                    self.record(record)
                log.info(
                    "line %d completed in an earlier attempt, run %s: recorded, not run again", p.line, flow_run_id
                )
                break
        return adopted


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


def output_files(summary: RunSummary) -> dict[str, str]:
    """Every file a run produced, ``file:{node}.{modality}`` -> URI (text outputs are inline, not files)."""
    names = {n.id: n.name for n in summary.plan}
    files: dict[str, str] = {}
    for result in summary.results:
        for modality, value in result.outputs.items():
            if modality != "text":
                files[f"file:{names.get(result.id, f'{result.task}#{result.id}')}.{modality}"] = value
    return files


def summary_record(
    line: int,
    spec: BatchLine,
    value: RunSummary,
    *,
    plan_source: str | None,
    cached: bool,
    seconds: float,
    error: str | None = None,
) -> LineResult:
    """A line's record from its run's summary."""
    answer = value.answer if len(value.answer) <= _ANSWER_CHARS else value.answer[: _ANSWER_CHARS - 3] + "..."
    completed = value.status == "completed"
    return _record(
        line,
        spec,
        status="completed" if completed else "failed",
        error=None if completed else (value.error or error),
        flow_run_id=value.flow_run_id,
        storage_uri=value.storage_uri,
        answer=answer,
        plan_source=plan_source,
        plan_cached=cached,
        tasks=[n.name for n in value.plan],
        seconds=seconds,
        llm_tokens=value.llm.prompt_tokens + value.llm.completion_tokens,
        files=output_files(value),
    )


def _record_from_summary(parsed: ParsedLine, summary: RunSummary, plan_source: str | None) -> LineResult:
    """The record of a line completed by an earlier attempt, rebuilt from its run's own summary."""
    assert parsed.spec is not None
    record = summary_record(
        parsed.line,
        parsed.spec,
        summary,
        plan_source=plan_source,
        cached=bool(plan_source and plan_source.startswith("batch plan cache")),
        seconds=float(summary.timings.get("total", 0.0)),
    )
    return record.model_copy(update={"columns": parsed.columns})


def line_request(
    spec: BatchLine,
    plan: list[PlanNode] | None,
    plan_source: str,
    storage: str | None,
    catalog: str | None,
    options: RunOptions | None,
) -> tuple[RequestSpec, RunOptions]:
    """A line as the request flow's parameters: its request, and the batch's options with its storage and catalog."""
    request = RequestSpec(
        request=spec.request, inputs=list(spec.inputs), models=dict(spec.models), plan=plan, plan_source=plan_source
    )
    given = {k: v for k, v in {"storage": storage, "catalog": catalog}.items() if v is not None}
    return request, (options or RunOptions()).model_copy(update=given)


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
    deployment: str | None = None,
    run_tags: list[str] | None = None,
) -> State:
    """Prefect task: run one line as a child flow run of the request flow, or as a run of ``deployment`` (a
    deployment of the request flow, picked up by a worker of its pool); never raises.

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
    if deployment:
        return _run_deployed_line(
            deployment, line, spec, plan, plan_source, cached, storage, catalog, options, run_tags or [], t0
        )
    request, run_options = line_request(spec, plan, plan_source, storage, catalog, options)
    try:
        value = _start_child(
            lambda: run_request(request, run_options, run_name=_child_name(line, spec), tags=run_tags or []), line
        )
    except NoSummaryError as exc:
        return failed(f"the request's flow run ended without a summary: {exc}")
    except Exception as exc:  # the child could not even start (e.g. its parameters were rejected)
        return failed(f"{type(exc).__name__}: {exc}")
    record = summary_record(
        line,
        spec,
        value,
        plan_source=plan_source,
        cached=cached,
        seconds=time.perf_counter() - t0,
        error=failure_reason(value),
    )
    return _line_state(record)


def _line_state(record: LineResult) -> State:
    if record.status == "failed":
        return Failed(message=f"line {record.line}: {record.error}", data=record)
    return Completed(data=record, message=f"line {record.line} completed")


#: seconds between two looks at a deployment run's state
DEPLOYED_POLL_SECONDS = 1.0


def _run_deployed_line(
    deployment: str,
    line: int,
    spec: BatchLine,
    plan: list[PlanNode] | None,
    plan_source: str,
    cached: bool,
    storage: str | None,
    catalog: str | None,
    options: RunOptions | None,
    run_tags: list[str],
    t0: float,
) -> State:
    """One line as a run of ``deployment`` on its work pool (a child of this task run in the UI), waited for; its
    record is built from the summary the run wrote to storage."""
    from prefect.deployments import run_deployment

    request, run_options = line_request(spec, plan, plan_source, storage, catalog, options)
    parameters: dict[str, Any] = {
        "spec": request.model_dump(mode="json", exclude_none=True),
        "options": run_options.model_dump(mode="json", exclude_none=True) or None,
    }

    def failed(error: str) -> State:
        record = _record(line, spec, status="failed", error=error, plan_source=plan_source, plan_cached=cached)
        record.seconds = time.perf_counter() - t0
        return Failed(message=f"line {line}: {error}", data=record)

    try:
        run = run_deployment(
            deployment,
            parameters={k: v for k, v in parameters.items() if v is not None},
            flow_run_name=_child_name(line, spec),
            tags=["hugginggpt", *run_tags],
            timeout=None,
            poll_interval=DEPLOYED_POLL_SECONDS,
        )
    except Exception as exc:
        return failed(f"could not run deployment {deployment}: {type(exc).__name__}: {exc}")
    settings = load_settings(options, storage=storage, catalog=catalog)
    try:
        raw = store_for(settings, str(run.id)).read_json("summary.json")
        value = None if raw is None else RunSummary.model_validate(raw)
    except (StorageError, ValidationError) as exc:
        return failed(f"the deployment run {run.id} left no readable summary: {exc}")
    state_name = run.state.name if run.state is not None else "unknown"
    if value is None:
        return failed(
            f"the deployment run {run.id} ended {state_name} without a summary in {settings.storage} (do its workers "
            "use the same storage?)"
        )
    if value.flow_run_id != str(run.id):
        return failed(f"the summary of deployment run {run.id} names another run ({value.flow_run_id})")
    message = run.state.message if run.state is not None else None
    record = summary_record(
        line, spec, value, plan_source=plan_source, cached=cached, seconds=time.perf_counter() - t0, error=message
    )
    return _line_state(record)


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
        return value.model_copy(update={"columns": parsed.columns})
    assert parsed.spec is not None
    record = _record(parsed.line, parsed.spec, status="failed", error=f"task run ended {state.name}: {value}")
    return record.model_copy(update={"columns": parsed.columns})


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
    request_column: str = "request",
    input_columns: list[str] | None = None,
    id_column: str | None = None,
    deployment: str | None = None,
    max_llm_tokens: Annotated[int, Field(ge=1)] | None = None,
    max_lines_per_minute: Annotated[int, Field(ge=1)] | None = None,
) -> BatchSummary:
    """Run every request of a table (JSONL, CSV or Parquet) as a child flow run of ``hugginggpt-request``.

    Args:
        requests_url: the requests table, a path or any fsspec URL (``s3://bucket/requests.parquet``): JSONL, or
            CSV / Parquet by its suffix.
        storage: fsspec URL of the artifact store (default ``HUGGINGGPT_STORAGE``).
        catalog: extra catalog JSONL (default ``HUGGINGGPT_CATALOG``).
        max_in_flight: requests running at the same time (default ``HUGGINGGPT_BATCH_MAX_IN_FLIGHT``).
        results_url: where to write the results: a ``.parquet`` or ``.csv`` URL for a table, anything else JSONL
            (default ``{storage}/batches/{flow run id}/results.jsonl``).
        options: settings for every line's run on top of the environment (see ``hugginggpt_request``).
        request_column: the column holding each request (CSV and Parquet).
        input_columns: columns each holding one input file, a path, URL or the file's bytes (CSV and Parquet).
        id_column: the column holding each line's id (default ``id`` when there is one).
        deployment: run each line as a run of this deployment of the request flow (``hugginggpt-request/request``)
            on its work pool, rather than as a subflow in this process.
        max_llm_tokens: stop starting lines once this attempt's lines have used this many LLM tokens.
        max_lines_per_minute: start at most this many lines in any 60 seconds.

    Returns the :class:`BatchSummary`. When a line failed, was invalid or was not started, the flow run ends Failed
    (after every other line has run) with a :class:`BatchFailed` as its data, whose ``summary`` is the same;
    ``run_batch`` returns the summary either way.
    """
    t_start = time.perf_counter()
    log = get_run_logger()
    verified_result_links()  # a line's task run gets no edge from a recycled id
    settings = load_settings(options, storage=storage, catalog=catalog)
    run_id = str(flow_run.id or uuid.uuid4())
    in_flight = max_in_flight or settings.batch_max_in_flight
    columns = ColumnMap(request=request_column, inputs=list(input_columns or []), id=id_column)
    key = batch_key_of(requests_url, settings, columns)
    batch_store = store_for(settings, run_id)
    parts = LineParts(batch_store, key)
    lock = BatchLock(batch_store, parts.folder, run_id, requests_url)
    try:
        lock.acquire()
    except BatchBusyError as exc:
        raise BatchError(str(exc)) from None
    try:
        return _run_lines(
            requests_url,
            settings,
            storage=storage,
            catalog=catalog,
            in_flight=in_flight,
            results_url=results_url,
            options=options,
            columns=columns,
            deployment=deployment,
            budgets=Budgets(max_llm_tokens=max_llm_tokens, max_lines_per_minute=max_lines_per_minute),
            key=key,
            parts=parts,
            run_id=run_id,
            t_start=t_start,
            log=log,
        )
    finally:
        lock.release()


def batch_key_of(requests_url: str, settings: Settings, columns: ColumnMap) -> str:
    """What identifies a batch for resuming and for holding it: the requests file's content, the storage it runs
    against, and the column mapping when it is not the default."""
    root, _ = resolve_storage(settings.storage, settings.storage_options)
    salt = root if columns == ColumnMap() else f"{root}\0{columns.model_dump_json()}"
    try:
        return content_key(requests_url, _options_for(requests_url, settings), salt)
    except TableError as exc:
        raise BatchError(f"cannot read the requests file: {exc}") from exc


def read_lines(requests_url: str, settings: Settings, columns: ColumnMap, key: str) -> list[ParsedLine]:
    """Every row of the requests table as a :class:`ParsedLine`, read row group by row group. A cell holding a
    file's bytes is written to ``{storage}/batches/inputs-{key}/{row}/{column}/{name}`` and given as that URI."""
    store = store_for(settings, "batch-inputs")

    def keep(number: int, column: str, data: bytes, name: str | None) -> str:
        base = _basename(name or "") or "file"
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", base)[-100:] or "file"
        column_part = re.sub(r"[^A-Za-z0-9._-]+", "-", column)[:60] or "column"
        return store.put_root_bytes(f"batches/inputs-{key}/{number}/{column_part}/{safe}", data)

    try:
        return [
            parse_row(row)
            for row in read_rows(requests_url, _options_for(requests_url, settings), columns, store_bytes=keep)
        ]
    except TableError as exc:
        raise BatchError(f"cannot read the requests file: {exc}") from exc


def _run_lines(
    requests_url: str,
    settings: Settings,
    *,
    storage: str | None,
    catalog: str | None,
    in_flight: int,
    results_url: str | None,
    options: RunOptions | None,
    columns: ColumnMap,
    deployment: str | None,
    budgets: Budgets,
    key: str,
    parts: LineParts,
    run_id: str,
    t_start: float,
    log: Any,
) -> BatchSummary:
    parsed = read_lines(requests_url, settings, columns, key)
    summary = BatchSummary(
        flow_run_id=run_id,
        requests_url=requests_url,
        lines=len(parsed),
        max_in_flight=in_flight,
        batch_key=key,
        deployment=deployment,
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
        "%d line(s), %d invalid, %s; at most %d in flight%s",
        len(parsed),
        invalid,
        f"{len(earlier)} completed by an earlier attempt (batch {key})" if earlier else f"batch {key}",
        in_flight,
        f", each a run of deployment {deployment}" if deployment else "",
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
    meter = BudgetMeter(budgets)
    line_storage = _absolute(storage or settings.storage) if deployment else storage
    with shared_cluster(settings) as cluster, ThreadPoolTaskRunner(max_workers=in_flight) as runner:
        line_options = (options or RunOptions()).model_copy(update={"dask_address": cluster} if cluster else {})
        plan_futures: dict[int, PrefectFuture[Any]] = {}  # first position of a group -> its planning task run
        plans_counted: set[int] = set()
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

        def count_plans() -> None:
            for first, future in plan_futures.items():
                if first in plans_counted or not future.wrapped_future.done():
                    continue
                plans_counted.add(first)
                future.wait()  # done: this only takes the final state, with its result, from the wrapped future
                try:
                    value = future.state.result(raise_on_failure=False)
                except Exception as exc:  # the planning task run's result is not there: its calls are not known
                    log.warning("the shared plan of line %d: %s", parsed[first].line, str(exc)[:200])
                    continue
                # a plan refused twice, or a failed call, took its calls too
                if isinstance(value, PlanResult | PlanningError | LLMError):
                    summary.planning_calls += value.usage.calls
                    meter.spend(value.usage.prompt_tokens + value.usage.completion_tokens)

        todo: list[int] = []
        for pos, p in enumerate(parsed):
            if not p.valid or p.spec is None or pos in earlier:
                continue
            if p.plan is None and no_controller is not None:
                records[pos] = _record(p.line, p.spec, status="failed", error=no_controller, plan_source="llm")
                records[pos] = records[pos].model_copy(update={"columns": p.columns})  # type: ignore[union-attr]
                done += 1
                continue
            todo.append(pos)

        def submit(pos: int) -> PrefectFuture[Any]:
            p = parsed[pos]
            assert p.spec is not None
            params: dict[str, Any] = {
                "line": p.line,
                "spec": p.spec,
                "plan": p.plan,
                "plan_source": "explicit" if p.plan is not None else "llm",
                "storage": line_storage,
                "catalog": catalog,
                "options": line_options,
                "deployment": deployment,
                "run_tags": list(line_tags(key, p.line)),
            }
            if pos in group_of:
                first = group_of[pos]
                assert parsed[first].spec is not None
                if pos != first:
                    params["plan_source"] = f"batch plan cache of line {parsed[first].line}"
                params["shared_plan"] = allow_failure(plan_futures[first])
                params["shared_inputs"] = parsed[first].spec.inputs
            # plain values are quoted: Prefect links a task run to any earlier one that returned the same object (an
            # interned string such as "llm"), which drew edges between independent lines; the shared plan stays a link
            params = {k: v if k == "shared_plan" else quote(v) for k, v in params.items()}
            ident = f"-{p.spec.id}" if p.spec.id else ""
            with tags("hugginggpt", f"batch-{run_id}"):  # the line's task run and child flow run: filter by batch
                return runner.submit(run_line.with_options(task_run_name=f"line-{p.line}{ident}"), params)

        progress(force=True)
        queue = iter(todo)
        running: dict[Any, tuple[int, PrefectFuture[Any]]] = {}
        stopped: str | None = None
        exhausted = False
        while True:
            wait_for_rate = 0.0
            while not exhausted and stopped is None and len(running) < in_flight:
                count_plans()
                stopped = meter.stop_reason()
                if stopped is not None:
                    log.warning("no more lines start: %s", stopped)
                    break
                wait_for_rate = meter.wait()
                if wait_for_rate > 0:
                    break
                pos = next(queue, None)
                if pos is None:
                    exhausted = True
                    break
                future = submit(pos)
                meter.start()
                running[future.wrapped_future] = (pos, future)
            if not running:
                if wait_for_rate > 0 and stopped is None:
                    time.sleep(wait_for_rate)
                    continue
                break
            finished, _ = concurrent.futures.wait(
                list(running), timeout=wait_for_rate or None, return_when=concurrent.futures.FIRST_COMPLETED
            )
            for wrapped in finished:
                pos, future = running.pop(wrapped)
                record = _collect_line(parsed[pos], future)
                records[pos] = record
                meter.spend(record.llm_tokens)
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
        for pos in queue if stopped is not None else ():
            p = parsed[pos]
            assert p.spec is not None
            records[pos] = _record(p.line, p.spec, status="not started", error=stopped).model_copy(
                update={"columns": p.columns}
            )
        for future in plan_futures.values():
            future.wait()
        count_plans()
    progress(force=True)

    summary.records = [r for r in records if r is not None]
    summary.completed = sum(r.status == "completed" for r in summary.records)
    summary.failed = sum(r.status == "failed" for r in summary.records)
    summary.invalid = sum(r.status == "invalid" for r in summary.records)
    summary.not_started = sum(r.status == "not started" for r in summary.records)
    summary.plans_cached = sum(r.plan_cached for r in summary.records)
    summary.llm_tokens = meter.tokens
    summary.status = "completed" if summary.completed == summary.lines else "failed"
    summary.seconds = time.perf_counter() - t_start

    summary.results_uri = write_results(summary.records, parsed, requests_url, settings, run_id, results_url)
    batch_store = store_for(settings, run_id)
    batch_store.put_root_bytes(f"batches/{run_id}/summary.json", summary.model_dump_json(indent=2).encode("utf-8"))
    log.info(
        "batch done: %d completed, %d failed, %d invalid, %d not started of %d; %d line(s) reused a plan; results: %s",
        summary.completed,
        summary.failed,
        summary.invalid,
        summary.not_started,
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
        return Failed(message=str(failure), data=failure)  # type: ignore[return-value]
    return summary


def _absolute(url: str) -> str:
    """A local storage folder as an absolute path (a deployment's worker runs elsewhere); URLs as given."""
    if "://" in url or url.startswith(BLOCK_PREFIX):
        return url
    from pathlib import Path

    return str(Path(url).expanduser().resolve())


def write_results(
    records: Sequence[LineResult],
    parsed: Sequence[ParsedLine],
    requests_url: str,
    settings: Settings,
    run_id: str,
    results_url: str | None,
) -> str:
    """The results file: JSONL (one :class:`LineResult` per line), or a Parquet / CSV table when ``results_url``
    ends so, with one row per line: the line's number, its columns, its outcome and one column per output file."""
    store, results_rel = _results_target(settings, run_id, results_url)
    if not results_url or table_format(results_url) == "jsonl":
        body = "".join(r.model_dump_json() + "\n" for r in records).encode("utf-8")
        return store.put_root_bytes(results_rel, body)
    source = table_format(requests_url)
    names: list[str] = ["line"]

    def add(name: str) -> None:
        if name not in names:
            names.append(name)

    if source == "jsonl":
        for name in ("id", "request", "inputs"):
            add(name)
    for record in records:
        for name in (*record.columns, *record.meta):
            add(name)
    outcome = [name for name, _ in OUTCOME_COLUMNS]
    names = [n for n in names if n not in outcome] + outcome
    for record in records:
        for name in record.files:
            add(name)
    try:
        types = input_types(requests_url, _options_for(requests_url, settings)) if source == "parquet" else {}
    except TableError:
        types = {}
    inputs_of = {p.line: list(p.spec.inputs) for p in parsed if p.spec is not None}
    writer = ResultsWriter(
        results_url, _options_for(results_url, settings), names, {k: v for k, v in types.items() if k in names}
    )
    try:
        for record in records:
            row: dict[str, Any] = {"line": record.line}
            if source == "jsonl":
                row.update(id=record.id, request=record.request, inputs=inputs_of.get(record.line))
            row.update(record.meta)
            row.update(record.columns)
            row.update(
                status=record.status,
                answer=record.answer,
                error=record.error,
                flow_run_id=record.flow_run_id,
                storage_uri=record.storage_uri,
                plan_source=record.plan_source,
                llm_tokens=record.llm_tokens,
                seconds=record.seconds,
            )
            row.update(record.files)
            writer.write(row)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


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
    *,
    request_column: str = "request",
    input_columns: list[str] | None = None,
    id_column: str | None = None,
    deployment: str | None = None,
    max_llm_tokens: int | None = None,
    max_lines_per_minute: int | None = None,
) -> BatchSummary:
    """Run the batch flow and return its summary whatever the outcome (no Prefect state to unwrap). Raises
    :class:`BatchError` when the batch cannot run at all (its table cannot be read, a named column is missing,
    another batch of the same file is running)."""
    settings = load_settings(options, storage=storage, catalog=catalog)
    with prefect_run_settings(heartbeats=settings.heartbeats):
        state = hugginggpt_batch(
            requests_url,
            storage=storage,
            catalog=catalog,
            max_in_flight=max_in_flight,
            results_url=results_url,
            options=options,
            request_column=request_column,
            input_columns=input_columns,
            id_column=id_column,
            deployment=deployment,
            max_llm_tokens=max_llm_tokens,
            max_lines_per_minute=max_lines_per_minute,
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
