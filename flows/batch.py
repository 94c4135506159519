"""The batch flow: a JSONL file of requests, each run as a child flow run of the request flow.

    hugginggpt batch s3://bucket/requests.jsonl --max-in-flight 8

One request per line (the line format and each line's result record: :mod:`tasks.batch_lines`). This module
only wires: the lines that share a plan (:mod:`tasks.batch_plans`), the record of finished lines and the batch's
lock (:mod:`flows.batch_ledger`) and its budgets (:mod:`flows.batch_budget`).

Each valid line runs as a child flow run of ``hugginggpt-request`` (named ``line-{n}-{id}: {request}``), started
from a task run of the batch (``batch-line``), with at most ``max_in_flight`` of them running at once. A line
that cannot be read becomes an ``invalid`` record with the reason; a request that fails becomes a ``failed``
record with its error; neither stops the batch. Lines that share a request text once their inputs are
abstracted (``Caption photo1.jpg`` and ``Caption photo2.jpg``, both given one image) are planned once, by a
``plan`` task run of the batch, and the others reuse that plan with their own inputs.

The lines stream through a bounded window (:mod:`flows.batch_stream`, the scheduling core, wired here to Prefect's
task runner): a table of any size is never held whole. Each line's record is kept as it finishes, one file per
line under ``{storage}/batches/lines-{key}/``, where ``key`` is a hash of the requests file's content and the
storage: a batch interrupted (Ctrl-C, a crash, a restart) and run again on the same file and storage skips the lines
that completed (asked by line number) and runs the others. The results (one record per line, in input order,
earlier attempts' records included) are written from a local spool of the records, a row group at a time, to
``{storage}/batches/{batch run id}/results.jsonl`` (or ``results_url``) under a temporary name moved into place
when the batch ends, with ``summary.json`` beside it; the summary counts every line and lists the first
:data:`flows.batch_stream.SUMMARY_RECORDS`. While it runs, a progress artifact follows it, and a table artifact lists
the same first lines at the end. A child run that the Prefect API refuses with 503 (a busy database) is started
again.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import posixpath
import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Annotated, Any

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
from pydantic import Field, ValidationError

from flows import events as progress_events
from flows.artifacts import artifact_scope
from flows.batch_budget import BudgetMeter, Budgets
from flows.batch_ledger import BatchBusyError, BatchLock, LineParts, line_tags
from flows.batch_stream import SUMMARY_RECORDS, RecordSpool, SharedPlan, read_ahead, run_stream
from flows.prefect_setup import prefect_run_settings
from flows.request import NoSummaryError, failure_reason, run_request
from flows.result_links import verified_result_links
from flows.runners import shared_cluster
from flows.tag_limits import read_limited_tags, untagged
from tasks.batch_lines import (
    BatchFailed,
    BatchLine,
    BatchSummary,
    LineResult,
    ParsedLine,
    line_record,
    line_request,
    parse_row,
    summary_markdown,
    summary_record,
    table_rows,
)
from tasks.batch_plans import adapt_plan, basename
from tasks.llm import LLMError
from tasks.plan import PlanningError, PlanValidationError, plan_task
from tasks.report import artifact_key
from tasks.schemas import PlanNode, PlanResult, RunSummary
from tasks.services import prepare_controller
from tasks.settings import LLMNotConfiguredError, RunOptions, Settings, load_settings
from tasks.storage import BLOCK_PREFIX, ArtifactStore, StorageError, resolve_storage, store_for
from tasks.tables import (
    OUTCOME_COLUMNS,
    ColumnMap,
    ResultsWriter,
    TableError,
    content_key,
    count_rows,
    input_types,
    read_rows,
    table_format,
)

_PROGRESS_EVERY = 0.5  # seconds between two updates of the progress artifact


class BatchError(RuntimeError):
    """The batch as a whole cannot run (its requests file cannot be read)."""


def _options_for(url: str, settings: Settings) -> dict[str, Any]:
    """The store's fsspec options apply to a URL on the store's own protocol."""
    root, options = resolve_storage(settings.storage, settings.storage_options)
    protocol = url.split("://", 1)[0] if "://" in url else "file"
    root_protocol = root.split("://", 1)[0] if "://" in root else "file"
    return options if protocol == root_protocol else {}


def _child_name(line: int, spec: BatchLine) -> str:
    request = " ".join(spec.request.split())
    request = request if len(request) <= 50 else request[:47] + "..."
    return f"line-{line}" + (f"-{spec.id}" if spec.id else "") + f": {request}"


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
        record = line_record(
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
        record = line_record(line, spec, status="failed", error=error, plan_source=plan_source, plan_cached=cached)
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
    record = line_record(parsed.line, parsed.spec, status="failed", error=f"task run ended {state.name}: {value}")
    return record.model_copy(update={"columns": parsed.columns})


# ---------------------------------------------------------------------------
# the flow
# ---------------------------------------------------------------------------
def _batch_run_name() -> str:
    url = str(flow_run.parameters.get("requests_url", "")) or "requests"
    return f"batch {basename(url) or url}"


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
    parts = LineParts(batch_store, key, log)
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


def read_lines(requests_url: str, settings: Settings, columns: ColumnMap, key: str) -> Iterator[ParsedLine]:
    """Every row of the requests table as a :class:`ParsedLine`, one at a time (the table is read row group by row
    group). A cell holding a file's bytes is written to ``{storage}/batches/inputs-{key}/{row}/{column}/{name}`` and
    given as that URI. A table that cannot be read raises :class:`BatchError` (before the first line, or at the row
    where it turns out damaged)."""
    store = store_for(settings, "batch-inputs")

    def keep(number: int, column: str, data: bytes, name: str | None) -> str:
        base = basename(name or "") or "file"
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", base)[-100:] or "file"
        column_part = re.sub(r"[^A-Za-z0-9._-]+", "-", column)[:60] or "column"
        return store.put_root_bytes(f"batches/inputs-{key}/{number}/{column_part}/{safe}", data)

    try:
        for row in read_rows(requests_url, _options_for(requests_url, settings), columns, store_bytes=keep):
            yield parse_row(row)
    except TableError as exc:
        raise BatchError(f"cannot read the requests file: {exc}") from exc


def _first_checked(lines: Iterator[ParsedLine]) -> Iterator[ParsedLine]:
    """``lines`` with the first one read now: a table that cannot be opened, or lacks a named column, stops the
    batch before any line starts."""
    first = next(lines, None)
    if first is None:
        return iter(())
    return itertools.chain([first], lines)


class _PrefectLines:
    """The :class:`flows.batch_stream.LineRunner` of the batch flow: each shared plan a ``plan`` task run, each line
    a ``batch-line`` task run, submitted to the batch's task runner."""

    def __init__(
        self,
        runner: ThreadPoolTaskRunner,
        settings: Settings,
        base: dict[str, Any],
        key: str,
        run_id: str,
        log: Any,
    ) -> None:
        self.runner = runner
        self.settings = settings
        self.base = base
        self.key = key
        self.run_id = run_id
        self.log = log
        self.futures: dict[concurrent.futures.Future[Any], PrefectFuture[Any]] = {}
        self.limited = read_limited_tags()  # the tags with a concurrency limit, read once for the batch

    def plan(self, first: ParsedLine) -> SharedPlan:
        assert first.spec is not None
        spec = first.spec
        parameters = {"settings": self.settings, "request": spec.request, "inputs": spec.inputs, "history": []}
        with untagged(plan_task.with_options(task_run_name=f"plan-line-{first.line}"), self.limited) as plan:
            future = self.runner.submit(plan, parameters)
        return SharedPlan(first, future.wrapped_future, future)

    def planned(self, plan: SharedPlan) -> tuple[int, int]:
        future: PrefectFuture[Any] = plan.handle
        first = plan.first
        future.wait()  # done: this only takes the final state, with its result, from the wrapped future
        try:
            value = future.state.result(raise_on_failure=False)
        except Exception as exc:  # the planning task run's result is not there: its calls are not known
            self.log.warning("the shared plan of line %d: %s", first.line, str(exc)[:200])
            return 0, 0
        # a plan refused twice, or a failed call, took its calls too
        if isinstance(value, PlanResult | PlanningError | LLMError):
            return value.usage.calls, value.usage.prompt_tokens + value.usage.completion_tokens
        return 0, 0

    def start(self, p: ParsedLine, shared: SharedPlan | None) -> concurrent.futures.Future[Any]:
        assert p.spec is not None
        params: dict[str, Any] = {
            **self.base,
            "line": p.line,
            "spec": p.spec,
            "plan": p.plan,
            "plan_source": "explicit" if p.plan is not None else "llm",
            "run_tags": [*line_tags(self.key, p.line), f"batch-{self.run_id}"],
        }
        if shared is not None:
            assert shared.first.spec is not None
            if shared.first.line != p.line:
                params["plan_source"] = f"batch plan cache of line {shared.first.line}"
            params["shared_plan"] = allow_failure(shared.handle)
            params["shared_inputs"] = shared.first.spec.inputs
        # plain values are quoted: Prefect links a task run to any earlier one that returned the same object (an
        # interned string such as "llm"), which drew edges between independent lines; the shared plan stays a link
        params = {k: v if k == "shared_plan" else quote(v) for k, v in params.items()}
        ident = f"-{p.spec.id}" if p.spec.id else ""
        line_task = run_line.with_options(task_run_name=f"line-{p.line}{ident}")
        # the line task run's tags (its child flow run has them as run_tags): filter by batch
        with tags("hugginggpt", f"batch-{self.run_id}"), untagged(line_task, self.limited) as tagged:
            future = self.runner.submit(tagged, params)
        self.futures[future.wrapped_future] = future
        return future.wrapped_future

    def finish(self, p: ParsedLine, wrapped: concurrent.futures.Future[Any]) -> LineResult:
        return _collect_line(p, self.futures.pop(wrapped))


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
    lines = _first_checked(read_lines(requests_url, settings, columns, key))
    try:
        total = count_rows(requests_url, _options_for(requests_url, settings))
    except TableError as exc:
        raise BatchError(f"cannot read the requests file: {exc}") from exc
    summary = BatchSummary(
        flow_run_id=run_id,
        requests_url=requests_url,
        max_in_flight=in_flight,
        batch_key=key,
        deployment=deployment,
    )
    parts.load()
    log.info(
        "%d line(s); %s; at most %d in flight, %d read ahead%s",
        total,
        f"{parts.known} with a record of an earlier attempt (batch {key})" if parts.known else f"batch {key}",
        in_flight,
        read_ahead(in_flight),
        f", each a run of deployment {deployment}" if deployment else "",
    )

    progress_id = create_progress_artifact(
        progress=0.0,
        key=artifact_key(artifact_scope("batch"), "progress"),
        description=f"Lines of {requests_url} finished, batch run {run_id}",
    )
    done = 0
    last_update = 0.0

    def progress(force: bool = False) -> None:
        nonlocal last_update
        now = time.monotonic()
        if total and (force or now - last_update >= _PROGRESS_EVERY):
            update_progress_artifact(progress_id, progress=round(100.0 * min(done, total) / total, 1))
            last_update = now

    def cannot_plan() -> str | None:
        try:
            prepare_controller(settings)
        except LLMNotConfiguredError as exc:
            return str(exc)
        return None

    meter = BudgetMeter(budgets)
    line_storage = _absolute(storage or settings.storage) if deployment else storage
    spool = RecordSpool(SUMMARY_RECORDS)

    def on_record(pos: int, p: ParsedLine, record: LineResult, ran: bool) -> None:
        nonlocal done
        if ran:
            record = record.model_copy(update={"columns": p.columns})
        spool.add(pos, record, list(p.spec.inputs) if p.spec is not None else None)
        done += 1
        if not ran:
            if record.status == "invalid":
                log.warning("invalid %s", p.error)
            return
        progress_events.emit(progress_events.LineEvent(record.line, record.status, done, total, record.id or ""))
        try:
            parts.record(record)
        except StorageError as exc:
            log.warning("line %d: its record could not be kept for a resume: %s", record.line, exc)
        log.info(
            "line %d%s %s in %.1f s", record.line, f" ({record.id})" if record.id else "", record.status, record.seconds
        )
        progress()

    with spool:
        progress(force=True)
        with shared_cluster(settings) as cluster, ThreadPoolTaskRunner(max_workers=in_flight) as runner:
            line_options = (options or RunOptions()).model_copy(update={"dask_address": cluster} if cluster else {})
            base = {
                "storage": line_storage,
                "catalog": catalog,
                "options": line_options,
                "deployment": deployment,
            }
            tally = run_stream(
                lines,
                _PrefectLines(runner, settings, base, key, run_id, log),
                max_in_flight=in_flight,
                meter=meter,
                on_record=on_record,
                earlier=parts.earlier,
                cannot_plan=cannot_plan,
                on_stop=lambda reason: log.warning("no more lines start: %s", reason),
            )
        progress(force=True)

        summary.lines = tally.lines
        summary.completed = tally.completed
        summary.failed = tally.failed
        summary.invalid = tally.invalid
        summary.not_started = tally.not_started
        summary.resumed = tally.resumed
        summary.plans_cached = tally.plans_cached
        summary.plan_groups = tally.plan_groups
        summary.planning_calls = tally.planning_calls
        summary.llm_tokens = meter.tokens
        summary.status = "completed" if summary.completed == summary.lines else "failed"
        summary.records = spool.first()
        summary.records_left_out = tally.lines - len(summary.records)
        summary.results_uri = write_results(spool, requests_url, settings, run_id, results_url)
        summary.seconds = time.perf_counter() - t_start
    batch_store = store_for(settings, run_id)
    batch_store.put_root_bytes(f"batches/{run_id}/summary.json", summary.model_dump_json(indent=2).encode("utf-8"))
    log.info(
        "batch done: %d completed, %d failed, %d invalid, %d not started of %d (%d resumed); %d line(s) reused a "
        "plan; results: %s",
        summary.completed,
        summary.failed,
        summary.invalid,
        summary.not_started,
        summary.lines,
        summary.resumed,
        summary.plans_cached,
        summary.results_uri,
    )

    if summary.records:
        shown = f" (the first {len(summary.records)}; the results file has all {summary.lines})"
        create_table_artifact(
            key=artifact_key(artifact_scope("batch"), "lines"),
            table=table_rows(summary.records),
            description=f"One row per line of {requests_url}, batch run {run_id}"
            + (shown if summary.records_left_out else ""),
        )
    create_markdown_artifact(
        key=artifact_key(artifact_scope("batch"), "summary"),
        markdown=summary_markdown(summary),
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
    spool: RecordSpool,
    requests_url: str,
    settings: Settings,
    run_id: str,
    results_url: str | None,
) -> str:
    """The results file, written from ``spool`` in line order, a row group at a time: JSONL (one
    :class:`LineResult` per line), or a Parquet / CSV table when ``results_url`` ends so, with one row per line: the
    line's number, its columns, its outcome and one column per output file. A table is two passes over the spool:
    its column names, then its rows."""
    store, results_rel = _results_target(settings, run_id, results_url)
    if not results_url or table_format(results_url) == "jsonl":
        jsonl = ResultsWriter.into(
            store.fs,
            store.path_of(results_rel),
            [],
            fmt="jsonl",
            retries=settings.storage_retries,
            retry_wait=settings.storage_retry_wait,
        )
        try:
            for record in spool:
                jsonl.write_text(record.model_dump_json())
            return jsonl.close()
        except BaseException:
            jsonl.abort()
            raise
    source = table_format(requests_url)
    names: list[str] = ["line"]
    seen: set[str] = set(names)

    def add(name: str) -> None:
        if name not in seen:
            seen.add(name)
            names.append(name)

    if source == "jsonl":
        for name in ("id", "request", "inputs"):
            add(name)
    files: dict[str, None] = {}
    for record in spool:
        for name in (*record.columns, *record.meta):
            add(name)
        files.update(dict.fromkeys(record.files))
    outcome = [name for name, _ in OUTCOME_COLUMNS]
    names = [n for n in names if n not in outcome] + outcome
    seen = set(names)
    for name in files:
        add(name)
    try:
        types = input_types(requests_url, _options_for(requests_url, settings)) if source == "parquet" else {}
    except TableError:
        types = {}
    writer = ResultsWriter(
        results_url,
        _options_for(results_url, settings),
        names,
        {k: v for k, v in types.items() if k in names},
        retries=settings.storage_retries,
        retry_wait=settings.storage_retry_wait,
    )
    try:
        for record, inputs in spool.entries():
            row: dict[str, Any] = {"line": record.line}
            if source == "jsonl":
                row.update(id=record.id, request=record.request, inputs=inputs)
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
