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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _err(message: str) -> None:
    print(f"hugginggpt: {message}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hugginggpt", description="HuggingGPT on Prefect: solve a request with Hugging Face models."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="answer one request", description="Plan, select models, run them, and answer.")
    run.add_argument("request", help="what you want done, in plain language")
    run.add_argument(
        "--input",
        "-i",
        dest="inputs",
        action="append",
        default=[],
        metavar="PATH",
        help="a file the request refers to (path, http(s) or fsspec URL); repeatable",
    )
    run.add_argument(
        "--model",
        "-m",
        dest="models",
        action="append",
        default=[],
        metavar="TASK=MODEL_ID",
        help="pin the model for a task; repeatable",
    )
    run.add_argument("--storage", metavar="URL", help="artifact store: a folder or fsspec URL (HUGGINGGPT_STORAGE)")
    run.add_argument("--catalog", metavar="PATH", help="extra catalog JSONL (HUGGINGGPT_CATALOG)")
    run.add_argument("--llm-model", metavar="NAME", help="chat model of the controller (HUGGINGGPT_LLM_MODEL)")
    run.add_argument("--device", metavar="DEVICE", help="cpu, cuda, cuda:1, mps or auto (HUGGINGGPT_DEVICE)")
    run.add_argument("--json", action="store_true", help="print only the run summary as JSON on stdout")
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from tasks.select import SelectionError, parse_pins
    from tasks.settings import LLMNotConfiguredError, load_settings

    try:
        settings = load_settings(
            storage=args.storage, catalog=args.catalog, llm_model=args.llm_model, device=args.device
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in exc.errors())
        _err(f"invalid configuration: {problems}")
        return EXIT_USAGE
    try:
        settings.require_llm()
    except LLMNotConfiguredError as exc:
        _err(str(exc))
        return EXIT_USAGE
    try:
        pins = parse_pins(args.models)
    except SelectionError as exc:
        _err(str(exc))
        return EXIT_USAGE
    missing = [p for p in args.inputs if "://" not in p and not Path(p).expanduser().is_file()]
    if missing:
        _err(f"input file(s) not found: {', '.join(missing)}")
        return EXIT_USAGE
    if settings.catalog is not None and not Path(settings.catalog).is_file():
        _err(f"catalog file {settings.catalog} does not exist (HUGGINGGPT_CATALOG / --catalog)")
        return EXIT_USAGE

    # flags become the environment of this process, so every task sees the same settings
    for name, value in (("HUGGINGGPT_LLM_MODEL", args.llm_model), ("HUGGINGGPT_DEVICE", args.device)):
        if value:
            os.environ[name] = value

    from prefect.task_runners import ThreadPoolTaskRunner

    from flows.request import hugginggpt_request, prefect_run_settings
    from tasks.schemas import RunSummary

    request_flow = hugginggpt_request.with_options(task_runner=ThreadPoolTaskRunner(max_workers=settings.max_workers))
    with prefect_run_settings(heartbeats=settings.heartbeats, quiet=args.json):
        state = request_flow(
            args.request,
            inputs=list(args.inputs),
            models=pins,
            storage=args.storage,
            catalog=args.catalog,
            return_state=True,
        )
    summary = state.result(raise_on_failure=False)
    if not isinstance(summary, RunSummary):
        _err(f"the run ended {state.name} without a summary: {summary}")
        return EXIT_FAILED
    if args.json:
        print(json.dumps(summary_json(summary), indent=2, ensure_ascii=False))
    else:
        print_summary(summary)
    return EXIT_OK if summary.status == "completed" else EXIT_FAILED


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

        for row in node_rows(summary):
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
    try:
        if args.command == "run":
            return cmd_run(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
