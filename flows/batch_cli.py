"""``hugginggpt batch``.

    hugginggpt batch requests.jsonl --max-in-flight 8         # one child flow run per line, results JSONL
    hugginggpt batch s3://b/requests.parquet --request-column prompt --input-columns image \
        --results s3://b/results.parquet                       # tables in and out
    hugginggpt batch requests.csv --deployment hugginggpt-request/request   # lines on a work pool's workers

It prints a table of the lines (or, with ``--json``, the batch summary) and exits 0 when every line completed, 1
when one failed or was invalid, 2 on a usage error.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from flows.cli_options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_catalog,
    add_output_options,
    add_storage,
    config_error,
    dump_json,
    error,
    positive_int,
    progress_mode,
)


def register(subparsers: Any) -> None:
    """Add the ``batch`` subcommand; its handler is ``args.func``."""
    batch = subparsers.add_parser(
        "batch",
        help="run every request of a JSONL, CSV or Parquet table",
        description="Run each line of a JSONL file ({'request': ..., 'inputs': [...], 'models': {...}, 'id': ..., "
        "'plan': [...]}) or each row of a CSV or Parquet table as its own flow run, a bounded number at a time; "
        "write one result per line, in order, to a results JSONL in storage, or to a Parquet or CSV table.",
    )
    batch.add_argument(
        "requests_url",
        metavar="REQUESTS_URL",
        help="the requests: a .jsonl, .csv or .parquet file, a path or an fsspec URL (s3://...)",
    )
    batch.add_argument(
        "--max-in-flight",
        type=positive_int,
        metavar="N",
        help="requests running at the same time (HUGGINGGPT_BATCH_MAX_IN_FLIGHT)",
    )
    add_storage(batch)
    add_catalog(batch)
    batch.add_argument(
        "--results",
        metavar="URL",
        help="where to write the results: a .parquet or .csv URL for a table with one row per line, anything else "
        "JSONL (default {storage}/batches/{flow run id}/results.jsonl)",
    )
    tables = batch.add_argument_group("tables (CSV and Parquet)")
    tables.add_argument("--request-column", default="request", metavar="NAME", help="the column holding the request")
    tables.add_argument(
        "--input-columns",
        type=_names,
        metavar="A,B",
        help="columns each holding one input file: a path, a URL, or the file's bytes (image,audio)",
    )
    tables.add_argument("--id-column", metavar="NAME", help="the column holding each line's id (default: id)")
    batch.add_argument(
        "--deployment",
        metavar="FLOW/DEPLOYMENT",
        help="run each line as a run of this deployment of the request flow (hugginggpt-request/request), picked "
        "up by the workers of its work pool, instead of in this process",
    )
    batch.add_argument(
        "--max-llm-tokens",
        type=positive_int,
        metavar="N",
        help="stop starting lines once this run's lines have used N LLM tokens; the rest are recorded as "
        "'not started', and running the batch again runs them",
    )
    batch.add_argument(
        "--max-lines-per-minute", type=positive_int, metavar="N", help="start at most N lines in any minute"
    )

    add_output_options(batch)
    batch.set_defaults(func=cmd_batch)


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give column names separated by commas, e.g. image,audio")
    return names


def cmd_batch(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from flows.batch import BatchError, BatchSummary, run_batch
    from tasks.settings import RuntimeSettingError, check_runtime, load_settings

    try:
        settings = load_settings(storage=args.storage, catalog=args.catalog)
        check_runtime(settings)
    except (ValidationError, RuntimeSettingError) as exc:
        return config_error("batch", exc)
    url = args.requests_url
    if "://" not in url and not Path(url).expanduser().is_file():
        error("batch", f"requests file {url} not found")
        return EXIT_USAGE
    if settings.catalog is not None and not Path(settings.catalog).is_file():
        error("batch", f"catalog file {settings.catalog} does not exist (HUGGINGGPT_CATALOG / --catalog)")
        return EXIT_USAGE
    from prefect import tags

    from flows.batch import sqlite_concurrency_warning
    from flows.prefect_setup import prefect_run_settings
    from flows.progress import progress_view

    warning = sqlite_concurrency_warning(args.max_in_flight or settings.batch_max_in_flight)
    if warning:
        error("batch", f"warning: {warning}")
    try:
        with (
            prefect_run_settings(heartbeats=settings.heartbeats, quiet=args.json),
            progress_view(mode=progress_mode(args), batch=True),
            tags("hugginggpt"),
        ):
            summary: BatchSummary = run_batch(
                url,
                storage=args.storage,
                catalog=args.catalog,
                max_in_flight=args.max_in_flight,
                results_url=args.results,
                request_column=args.request_column,
                input_columns=args.input_columns,
                id_column=args.id_column,
                deployment=args.deployment,
                max_llm_tokens=args.max_llm_tokens,
                max_lines_per_minute=args.max_lines_per_minute,
            )
    except BatchError as exc:
        error("batch", str(exc))
        return EXIT_USAGE
    if args.json:
        print(dump_json(summary.model_dump(mode="json")))
    else:
        print_batch(summary)
    return EXIT_OK if summary.status == "completed" else EXIT_FAILED


def print_batch(summary: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from flows.progress import safe_text
    from tasks.batch_lines import table_rows

    console = Console(highlight=False)
    table = Table(title=f"Batch {summary.requests_url}")
    for col in ("line", "id", "status", "plan", "answer or error"):
        table.add_column(col, overflow="fold")
    for row in table_rows(summary.records):
        style = {"completed": "green", "failed": "red", "invalid": "yellow", "not started": "blue"}.get(
            row["status"], ""
        )
        table.add_row(
            *(Text(safe_text(row[c])) for c in ("line", "id")),
            Text(row["status"], style=style),
            *(Text(safe_text(row[c])) for c in ("plan", "answer or error")),
        )
    console.print(table)
    if summary.records_left_out:
        console.print(
            Text(
                safe_text(
                    f"the first {len(summary.records)} line(s) shown; all {summary.lines} are in {summary.results_uri}"
                )
            )
        )
    console.print(
        Text(
            f"{summary.completed} completed, {summary.failed} failed, {summary.invalid} invalid, "
            f"{summary.not_started} not started of {summary.lines} line(s) in {summary.seconds:.1f} s; "
            f"{summary.plans_cached} line(s) reused a plan "
            f"({summary.planning_calls} planning call(s) for {summary.plan_groups} shared request(s))"
        )
    )
    console.print(Text(safe_text(f"batch run {summary.flow_run_id} · results {summary.results_uri}"), style="dim"))
