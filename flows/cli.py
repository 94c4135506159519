"""The ``hugginggpt`` command.

    hugginggpt run "Describe photo.jpg, then read the description aloud" --input photo.jpg

Progress (plan, model choices, each node finishing) is logged live to stderr by
Prefect; the answer and the files produced are printed at the end. With
``--json`` stdout carries only the run summary as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.cli_options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_catalog,
    add_device,
    add_inputs,
    add_llm_model,
    add_storage,
    config_error,
    error,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hugginggpt", description="HuggingGPT on Prefect: solve a request with Hugging Face models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="answer one request", description="Plan, select models, run them, and answer.")
    run.add_argument("request", help="what you want done, in plain language")
    add_inputs(run)
    run.add_argument(
        "--model",
        "-m",
        dest="models",
        action="append",
        default=[],
        metavar="TASK=MODEL_ID",
        help="pin the model for a task; repeatable",
    )
    for add in (add_storage, add_catalog, add_llm_model, add_device):
        add(run)
    run.add_argument("--plan", metavar="FILE", help="run this plan (JSON or YAML, HuggingGPT format): no planning call")
    _add_run_options(run)
    from flows.batch_cli import register as register_batch
    from flows.eval_cli import register as register_eval

    register_eval(sub)
    register_batch(sub)

    resume = sub.add_parser(
        "resume",
        help="finish an earlier run that failed or crashed",
        description="Run again the nodes of an earlier run that did not complete; completed ones are reused.",
    )
    resume.add_argument("run_id", metavar="FLOW_RUN_ID", help="the flow run id of the earlier run")
    add_storage(resume, help="artifact store of that run")
    for add in (add_catalog, add_llm_model, add_device):
        add(resume)
    _add_run_options(resume)
    return parser


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-cache", action="store_true", help="run every model, even for inputs seen before")
    parser.add_argument(
        "--cache-ttl", type=float, metavar="SECONDS", help="reuse only outputs younger than this (HUGGINGGPT_CACHE_TTL)"
    )
    parser.add_argument("--json", action="store_true", help="print only the run summary as JSON on stdout")


def _settings(args: argparse.Namespace) -> Any:
    """Settings with the flags applied; flags also become this process's environment, so every task sees them."""
    from tasks.settings import load_settings

    for name, value in (
        ("HUGGINGGPT_LLM_MODEL", args.llm_model),
        ("HUGGINGGPT_DEVICE", args.device),
        ("HUGGINGGPT_CACHE", "false" if args.no_cache else None),
        ("HUGGINGGPT_CACHE_TTL", None if args.cache_ttl is None else str(args.cache_ttl)),
    ):
        if value is not None:
            os.environ[name] = value
    return load_settings(storage=args.storage, catalog=args.catalog)


def load_plan_file(path: str) -> list[Any]:
    """A plan from a JSON or YAML file: a list of nodes, or an object with a ``tasks`` list (read by
    :func:`tasks.parsing.parse_plan_text`: bounded, no YAML aliases or tags; errors are ``ValueError``)."""
    from tasks.parsing import MAX_DOCUMENT_CHARS, ParseError, parse_plan_text

    with open(path, encoding="utf-8") as fh:
        text = fh.read(MAX_DOCUMENT_CHARS + 1)
    if len(text) > MAX_DOCUMENT_CHARS:
        raise ParseError(f"the plan file is larger than {MAX_DOCUMENT_CHARS} characters")
    return parse_plan_text(text, "the plan file")


def cmd_run(args: argparse.Namespace) -> int:
    from flows.request import RequestError, check_request
    from tasks.plan import validate_plan
    from tasks.schemas import PlanNode
    from tasks.select import SelectionError, parse_pins
    from tasks.settings import LLMNotConfiguredError

    try:
        settings = _settings(args)
    except ValidationError as exc:
        return config_error(None, exc)
    try:
        check_request(args.request)
    except RequestError as exc:
        error(None, str(exc))
        return EXIT_USAGE
    plan: list[PlanNode] | None = None
    if args.plan:
        try:
            nodes, _ = validate_plan(load_plan_file(args.plan), inputs=args.inputs, request=args.request)
        except (OSError, ValueError) as exc:  # PlanValidationError is a ValueError
            error(None, f"plan {args.plan}: {exc}")
            return EXIT_USAGE
        plan = nodes
    else:
        try:
            settings.require_llm()
        except LLMNotConfiguredError as exc:
            error(None, str(exc))
            return EXIT_USAGE
    try:
        pins = parse_pins(args.models)
    except SelectionError as exc:
        error(None, str(exc))
        return EXIT_USAGE
    missing = [p for p in args.inputs if "://" not in p and not Path(p).expanduser().is_file()]
    if missing:
        error(None, f"input file(s) not found: {', '.join(missing)}")
        return EXIT_USAGE
    from tasks.inputs import InputPolicy, refused_inputs

    refused = refused_inputs(args.inputs, InputPolicy.from_settings(settings))
    if refused:
        error(None, "; ".join(refused))
        return EXIT_USAGE
    if settings.catalog is not None and not Path(settings.catalog).is_file():
        error(None, f"catalog file {settings.catalog} does not exist (HUGGINGGPT_CATALOG / --catalog)")
        return EXIT_USAGE
    return _execute(args, settings, args.request, list(args.inputs), pins, plan=plan)


def cmd_resume(args: argparse.Namespace) -> int:
    from flows.request import RequestError, load_run_record
    from tasks.storage import StorageError, store_for

    try:
        settings = _settings(args)
    except ValidationError as exc:
        return config_error(None, exc)
    try:
        store = store_for(settings, args.run_id)
        record = load_run_record(store)
    except (StorageError, RequestError) as exc:
        error(None, f"cannot resume: {exc}")
        return EXIT_USAGE
    if record is None:
        error(None, f"no run {args.run_id} in {settings.storage} ({store.uri('request.json')} does not exist)")
        return EXIT_USAGE
    return _execute(
        args, settings, record.request, record.inputs, record.models, history=record.history, resume_from=args.run_id
    )


def _execute(
    args: argparse.Namespace,
    settings: Any,
    request: str,
    inputs: list[str],
    pins: dict[str, str],
    *,
    history: list[Any] | None = None,
    plan: list[Any] | None = None,
    resume_from: str | None = None,
) -> int:
    import time

    from flows.request import configured_flow, prefect_run_settings, stored_summary, summary_of
    from flows.runners import task_runner_for
    from tasks.schemas import RunSummary

    started = time.time()
    try:
        with prefect_run_settings(heartbeats=settings.heartbeats, quiet=args.json):
            request_flow = configured_flow(settings, task_runner=task_runner_for(settings))
            state = request_flow(
                request,
                inputs=inputs,
                models=pins,
                history=history or [],
                storage=args.storage,
                catalog=args.catalog,
                plan=plan,
                resume_from=resume_from,
                return_state=True,
            )
    except Exception as exc:
        if not _is_prefect_api_error(exc):
            raise
        error(None, prefect_api_hint(exc))
        summary = stored_summary(settings, request, started)  # the run may have finished before the API went
        if summary is None:
            return EXIT_USAGE
    else:
        summary = summary_of(state)
    if not isinstance(summary, RunSummary):
        error(None, f"the run ended {state.name} without a summary: {summary}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary_json(summary), indent=2, ensure_ascii=False))
    else:
        print_summary(summary)
    return EXIT_OK if summary.status == "completed" else EXIT_FAILED


def _is_prefect_api_error(exc: BaseException) -> bool:
    import httpx

    text = str(exc)
    return isinstance(exc, httpx.HTTPError) or (
        isinstance(exc, RuntimeError) and ("Prefect API" in text or "ephemeral" in text)
    )


def prefect_api_hint(exc: BaseException) -> str:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    where = f"the Prefect API at {url}" if url else "Prefect's embedded local server"
    return (
        f"could not reach {where} ({type(exc).__name__}: {exc}). Start a server with `prefect server start` and set "
        "PREFECT_API_URL=http://127.0.0.1:4200/api, or unset PREFECT_API_URL to use the embedded one "
        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS gives it more time to start)"
    )


def summary_json(summary: Any) -> dict[str, Any]:
    """The ``--json`` document: the run summary with each result's model and outputs."""
    return summary.model_dump(mode="json")


def print_summary(summary: Any) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    console = Console()
    if summary.error:
        console.print(f"[bold red]Error:[/] {summary.error}")
    if summary.plan:
        table = Table(title="Tasks", show_lines=False)
        for col in ("node", "depends on", "model", "status", "seconds", "output"):
            table.add_column(col, overflow="fold")
        from tasks.report import node_rows

        for row in node_rows(summary, short_files=True):
            style = {"completed": "green", "failed": "red", "skipped": "yellow"}.get(row["status"], "")
            table.add_row(
                row["node"],
                row["depends on"],
                row["model"],
                f"[{style}]{row['status']}[/]" if style else row["status"],
                row["seconds"],
                row["output"],
            )
        console.print(table)
    title = (
        "Answer" if summary.answer_source != "fallback" else "Answer (built from the results; the LLM could not answer)"
    )
    console.print(Panel(summary.answer or "(none)", title=title, expand=True))
    files = [(r.task, r.id, k, v) for r in summary.results for k, v in r.outputs.items() if k != "text"]
    if files:
        console.print("[bold]Files:[/]")
        for task, node_id, modality, uri in files:
            console.print(f"  {task}#{node_id} {modality}: {uri}")
    console.print(
        f"[dim]run {summary.flow_run_id} · storage {summary.storage_uri} · LLM {summary.llm.calls} call(s), "
        f"{summary.llm.prompt_tokens}+{summary.llm.completion_tokens} tokens · "
        f"{summary.timings.get('total', 0.0):.1f} s[/]"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from flows.request import drain_prefect_queues

    try:
        if args.command == "run":
            return drain_prefect_queues(cmd_run(args))
        if args.command == "resume":
            return drain_prefect_queues(cmd_resume(args))
        if args.command in ("eval", "batch", "plan"):
            return drain_prefect_queues(args.func(args))
    except KeyboardInterrupt:
        error(None, "interrupted")
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
