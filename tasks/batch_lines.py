"""The line format of a batch: one request per line (JSONL, or a row of a CSV or Parquet table), read into
:class:`ParsedLine` (the request and its explicit plan, or why the line is invalid), and each line's result
record (:class:`LineResult`), built from its run's summary; the batch's summary (:class:`BatchSummary`) and the
rows and text of its artifacts. Plain Python over pydantic models: the batch flow (:mod:`flows.batch`) wires it.

A line: ``{"request": "...", "inputs": [...], "models": {task: model id}, "id": "...", "plan": [...]}`` (only
``request`` is required; ``plan`` is a HuggingGPT-format plan as a list, an object with ``tasks``, or JSON/YAML
text; ``meta`` is copied to the line's result untouched). Blank lines are skipped; line numbers are the file's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from tasks.parsing import ParseError, loads_json, parse_plan_value, split_lines
from tasks.plan_rules import PlanValidationError, validate_plan
from tasks.runs import MAX_REQUEST_CHARS, RequestError, check_request
from tasks.schemas import PlanNode, RequestSpec, RunSummary
from tasks.settings import RunOptions
from tasks.tables import (
    TableRow,
)
from tasks.task_types import TASK_TYPES

LineStatus = Literal["completed", "failed", "invalid", "not started"]
_ANSWER_CHARS = 4000


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
    """What a batch did: counts of every line, and the records of the first lines (``records``, in input order, a
    bounded number of them: ``records_left_out`` says how many more the results file holds)."""

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
    records: list[LineResult] = Field(
        default_factory=list,
        description="the first lines' records, in input order, at most SUMMARY_RECORDS (flows.batch_stream) of "
        "them: the results file (results_uri) has every line's",
    )
    records_left_out: int = Field(
        default=0, description="lines whose records are not in 'records' (the results file has them all)"
    )


def _counts(summary: BatchSummary) -> str:
    parts = [f"{summary.failed} failed", f"{summary.invalid} invalid"]
    if summary.not_started:
        parts.append(f"{summary.not_started} not started")
    return ", ".join(parts[:-1]) + " and " + parts[-1]


class BatchFailed(RuntimeError):
    """Some lines of a batch failed or were invalid (every other line ran); ``summary`` holds the counts (and the
    first lines' records; the results file has every line's).

    The data of the batch's Failed state, so that ``state.result(raise_on_failure=False)`` gives it back and
    a plain call of the flow raises it with a readable message.
    """

    def __init__(self, summary: BatchSummary) -> None:
        self.summary = summary
        super().__init__(f"{_counts(summary)} of {summary.lines} line(s); results: {summary.results_uri}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.summary,))


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


def line_record(line: int, spec: BatchLine, **fields: Any) -> LineResult:
    """A line's record: its number, id, request and meta, with ``fields``."""
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
    return line_record(
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


def record_from_summary(parsed: ParsedLine, summary: RunSummary, plan_source: str | None) -> LineResult:
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


def table_rows(records: Iterable[LineResult]) -> list[dict[str, str]]:
    """The rows of the batch's table artifact (and of ``hugginggpt batch``'s table), one per line."""
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


def summary_markdown(summary: BatchSummary) -> str:
    """The batch's summary artifact: the counts, the plan cache, where the results are, the lines that failed."""
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
    if summary.records_left_out:
        lines += [
            "",
            f"This summary lists the first {len(summary.records)} line(s); the other {summary.records_left_out} are "
            "in the results file.",
        ]
    return "\n".join(lines)
