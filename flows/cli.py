"""The ``hugginggpt`` command.

    hugginggpt run "Describe photo.jpg, then read the description aloud" --input photo.jpg

Progress (plan, model choices, each node's state) is shown live on stderr (a table redrawn in place on a
terminal, one line per change otherwise, nothing with ``--quiet``); the answer and the files produced are
printed at the end. With ``--json`` stdout carries only the run summary as JSON. Text that came from a model or
the LLM is shown as text: rich markup and escape sequences in it are never interpreted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Sequence
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
    add_output_options,
    add_storage,
    config_error,
    controller_ready,
    dump_json,
    error,
    progress_mode,
)
from tasks.settings import RuntimeSettingError


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
        help="pin the model for a task: a catalog id or a folder of weights; repeatable",
    )
    for add in (add_storage, add_catalog, add_llm_model, add_device):
        add(run)
    run.add_argument("--plan", metavar="FILE", help="run this plan (JSON or YAML, HuggingGPT format): no planning call")
    _add_run_options(run)
    from flows.batch_cli import register as register_batch
    from flows.demos_cli import register as register_demos
    from flows.eval_cli import register as register_eval
    from flows.models_cli import register as register_models
    from flows.plan_cli import register as register_plan
    from flows.serve_cli import register as register_serve

    register_eval(sub)
    register_batch(sub)
    register_plan(sub)
    register_models(sub)
    register_demos(sub)
    register_serve(sub)

    chat = sub.add_parser(
        "chat",
        help="talk with HuggingGPT: one request per line, earlier turns as context",
        description="An interactive session: each line you type is one request (one flow run tagged with the "
        "session); the last turns (--history, HUGGINGGPT_CHAT_HISTORY) are its history and the files they produced "
        "are its inputs. Reads stdin line by line (a pipe works too); 'exit' or end of input ends it.",
    )
    add_inputs(chat)
    chat.add_argument(
        "--model", "-m", dest="models", action="append", default=[], metavar="TASK=MODEL_ID", help="pin a model"
    )
    for add in (add_storage, add_catalog, add_llm_model, add_device):
        add(chat)
    chat.add_argument(
        "--history", type=int, metavar="TURNS", help="earlier turns each request sees (HUGGINGGPT_CHAT_HISTORY)"
    )
    _add_run_options(chat)

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
    parser.add_argument(
        "--max-replans",
        type=int,
        metavar="N",
        help="LLM calls that may plan new tasks after a task failed (HUGGINGGPT_MAX_REPLANS, default 1; 0: none)",
    )
    add_output_options(parser)


def run_options(args: argparse.Namespace) -> Any:
    """The flags that set settings for this run, as the flow's ``options`` parameter."""
    from tasks.settings import RunOptions

    return RunOptions(
        storage=args.storage,
        catalog=args.catalog,
        llm_model=args.llm_model,
        device=args.device,
        cache=False if args.no_cache else None,
        cache_ttl=args.cache_ttl,
        max_replans=getattr(args, "max_replans", None),
    )


def _settings(args: argparse.Namespace) -> Any:
    """Settings with the flags applied, as the flow will see them, checked to work on this machine (raises
    ``ValidationError`` or :class:`tasks.settings.RuntimeSettingError`)."""
    from tasks.settings import check_runtime, load_settings

    settings = load_settings(run_options(args))
    check_runtime(settings)
    return settings


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
    from tasks.runs import checked_before
    from tasks.schemas import RequestSpec

    try:
        settings = _settings(args)
    except (ValidationError, RuntimeSettingError) as exc:
        return config_error(None, exc)
    pins, problem = parsed_pins(args.models)
    plan = None
    if problem is None and args.plan:
        plan, problem = plan_file(args.plan, args.inputs, args.request)
    checked = None
    if problem is None:
        spec = RequestSpec(request=args.request, inputs=list(args.inputs), models=pins or {}, plan=plan)
        checked, problem = checked_request(settings, spec)
    if problem is not None or checked is None:
        error(None, problem or "invalid request")
        return EXIT_USAGE
    if plan is None and not controller_ready(None, settings):
        return EXIT_USAGE
    with checked_before(checked, settings):  # the flow, in this process, does not check the request again
        return _execute(args, settings, checked.spec)


def parsed_pins(models: Sequence[str]) -> tuple[dict[str, str] | None, str | None]:
    """The ``--model TASK=MODEL`` flags as ``{task: model id}``; or the problem."""
    from tasks.select import SelectionError, parse_pins

    try:
        return parse_pins(list(models)), None
    except SelectionError as exc:
        return None, str(exc)


def plan_file(path: str, inputs: Sequence[str], request: str) -> tuple[list[Any] | None, str | None]:
    """The nodes of a ``--plan`` file, read as a plan in HuggingGPT's format (repaired where the validator repairs);
    or the problem."""
    from tasks.plan import validate_plan

    try:
        nodes, _ = validate_plan(load_plan_file(path), inputs=list(inputs), request=request)
    except (OSError, ValueError) as exc:  # PlanValidationError is a ValueError
        return None, f"plan {path}: {exc}"
    return nodes, None


def checked_request(settings: Any, spec: Any) -> tuple[Any, str | None]:
    """The request through the one preflight (:func:`tasks.runs.preflight`: the request rule, the inputs, here on this
    machine, the pins, the plan), before Prefect starts; the checked request, or the problem."""
    from models_catalog.catalog import CatalogError
    from tasks.plan import PlanValidationError
    from tasks.runs import RequestError, preflight
    from tasks.select import SelectionError
    from tasks.services import services_for

    try:
        return preflight(spec, services_for(settings), inputs_here=True), None
    except PlanValidationError as exc:
        return None, f"plan: {exc}"
    except (RequestError, SelectionError, CatalogError) as exc:
        return None, str(exc)


def cmd_chat(args: argparse.Namespace) -> int:
    from flows.chat import ChatSession
    from tasks.schemas import RequestSpec, RunSummary

    try:
        settings = _settings(args)
    except (ValidationError, RuntimeSettingError) as exc:
        return config_error("chat", exc)
    pins, problem = parsed_pins(args.models)
    if problem is None:  # the session's inputs and pins, checked once for every turn
        probe = RequestSpec(request="chat", inputs=list(args.inputs), models=pins or {})
        checked, problem = checked_request(settings, probe)
        pins = checked.pins if checked is not None else None
    if problem is None and args.history is not None and args.history < 0:
        problem = "--history must be 0 or more"
    if problem is not None or pins is None:
        error("chat", problem or "invalid --model")
        return EXIT_USAGE
    if not controller_ready("chat", settings):
        return EXIT_USAGE

    def run_turn(spec: RequestSpec, tags: list[str]) -> Any:
        options = run_options(args).model_copy(update={"unused_pins": "ignore"})  # pins hold for the session
        result = run_flow(args, settings, spec, options=options, tags=tags)
        if isinstance(result, RunSummary):
            return result
        return RunSummary(request=spec.request, status="failed", error=result)

    session = ChatSession(
        options=run_options(args),
        history_turns=settings.chat_history if args.history is None else args.history,
        inputs=args.inputs,
        models=pins,
        runner=run_turn,
    )
    interactive = sys.stdin.isatty()
    if interactive:
        import readline  # noqa: F401  (line editing and history for input())

        error("chat", f"session {session.session_id}: one request per line; 'exit' or Ctrl-D ends")
    failed = 0
    while True:
        try:
            line = input("you> ") if interactive else sys.stdin.readline()
        except EOFError:
            break
        if not interactive and not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in ("exit", "quit", "/exit", "/quit"):
            break
        try:
            summary = session.ask(text)
        except PrefectUnreachableError as exc:
            error("chat", str(exc))
            return EXIT_USAGE
        failed += summary.status != "completed"
        if args.json:
            print(escape_json_line(summary_json(summary)), flush=True)
        else:
            print_summary(summary)
    error("chat", f"session {session.session_id}: {len(session.turns)} turn(s), {failed} failed")
    return EXIT_OK if not failed else EXIT_FAILED


def escape_json_line(document: Any) -> str:
    """One line of JSON for stdout (JSON Lines), control characters escaped."""
    from flows.progress import escape_json_text

    return escape_json_text(json.dumps(document, ensure_ascii=False))


def cmd_resume(args: argparse.Namespace) -> int:
    from tasks.runs import RequestError, load_run_record
    from tasks.schemas import RequestSpec
    from tasks.services import services_for
    from tasks.storage import StorageError

    try:
        settings = _settings(args)
    except (ValidationError, RuntimeSettingError) as exc:
        return config_error(None, exc)
    try:
        store = services_for(settings).store(args.run_id)
        record = load_run_record(store)
    except (StorageError, RequestError) as exc:
        error(None, f"cannot resume: {exc}")
        return EXIT_USAGE
    if record is None:
        error(None, f"no run {args.run_id} in {settings.storage} ({store.uri('request.json')} does not exist)")
        return EXIT_USAGE
    spec = RequestSpec(
        request=record.request,
        inputs=record.inputs,
        models=record.models,
        history=record.history,
        resume_from=args.run_id,
    )
    return _execute(args, settings, spec)


def _execute(args: argparse.Namespace, settings: Any, spec: Any) -> int:
    from tasks.schemas import RunSummary

    try:
        summary = run_flow(args, settings, spec)
    except PrefectUnreachableError as exc:
        error(None, str(exc))
        return EXIT_USAGE
    if not isinstance(summary, RunSummary):
        error(None, summary)
        return EXIT_FAILED
    if args.json:
        print(dump_json(summary_json(summary)))
    else:
        print_summary(summary)
    if summary.error_kind == "configuration":  # e.g. the LLM could not be reached: a setting to change
        return EXIT_USAGE
    return EXIT_OK if summary.status == "completed" else EXIT_FAILED


class PrefectUnreachableError(RuntimeError):
    """The Prefect API could not be reached; the message says what to set."""


def run_flow(
    args: argparse.Namespace, settings: Any, spec: Any, *, options: Any = None, tags: Sequence[str] = ()
) -> Any:
    """Run one request (:func:`flows.request.run_request`) with its progress shown as the flags say; the
    :class:`RunSummary`, or a message saying why the run has none. Raises :class:`PrefectUnreachableError`."""
    from flows.prefect_setup import prefect_run_settings
    from flows.progress import progress_view
    from flows.request import NoSummaryError, run_request
    from flows.temporary_server import start_temporary_server, temporary_server_notice
    from tasks.runs import stored_summary

    began = time.time()
    try:
        with (
            prefect_run_settings(heartbeats=settings.heartbeats, quiet=args.json),
            progress_view(mode=progress_mode(args)),
        ):
            if (started := start_temporary_server()) is not None:
                error(None, temporary_server_notice(started))
            return run_request(spec, options or run_options(args), tags=tags)
    except Exception as exc:
        if isinstance(exc, NoSummaryError):
            return str(exc)
        if not _is_prefect_api_error(exc):
            raise
        summary = stored_summary(settings, spec.request, began)  # the run may have finished before the API went
        if summary is None:
            raise PrefectUnreachableError(prefect_api_hint(exc)) from None
        error(None, prefect_api_hint(exc))
        return summary


def _is_prefect_api_error(exc: BaseException) -> bool:
    import httpx

    text = str(exc)
    return isinstance(exc, httpx.HTTPError) or (
        isinstance(exc, RuntimeError) and ("Prefect API" in text or "reach API" in text or "ephemeral" in text)
    )


def prefect_api_hint(exc: BaseException) -> str:
    """What to do when the Prefect API could not be reached; the error quoted on one line, clipped (an API's
    answer can quote a whole request, flow run parameters included)."""
    from prefect.settings import get_current_settings

    from tasks.parsing import clip

    url = get_current_settings().api.url
    where = f"the Prefect API at {url}" if url else "Prefect's embedded local server"
    return (
        f"could not reach {where} ({type(exc).__name__}: {clip(str(exc))}). Start a server with "
        "`prefect server start` and set "
        "PREFECT_API_URL=http://127.0.0.1:4200/api, or unset PREFECT_API_URL to use the embedded one "
        "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS gives it more time to start)"
    )


def summary_json(summary: Any) -> dict[str, Any]:
    """The ``--json`` document: the run summary with each result's model and outputs."""
    return summary.model_dump(mode="json")


_STATUS_STYLES = {"completed": "green", "cached": "magenta", "failed": "red", "skipped": "yellow"}


def print_summary(summary: Any, console: Any = None) -> None:
    """The run for people: its error (once), the table of tasks, the answer, the files. Everything that came
    from a model, the LLM or the user is printed as plain text (:func:`flows.progress.safe_text`), never as
    markup."""
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    from flows.progress import safe_text
    from tasks.report import TERMINAL_CELL_CHARS, node_rows

    if console is None:  # into a pipe or a file: no wrapping at 80 columns, which would split paths and model ids
        console = Console(highlight=False)
        console = console if console.is_terminal else Console(highlight=False, width=100_000)
    if summary.resumed_from:
        console.print(Text(safe_text(f"resumes run {summary.resumed_from}", one_line=True), style="dim"))
    if summary.error:
        error(None, safe_text(summary.error, one_line=True))
    if summary.plan:
        table = Table(title="Tasks", show_lines=False)
        for col in ("node", "depends on", "model", "status", "seconds", "output"):
            table.add_column(col, overflow="fold")
        for row in node_rows(summary, short_files=True, max_chars=TERMINAL_CELL_CHARS):
            table.add_row(
                *(Text(safe_text(row[c])) for c in ("node", "depends on", "model")),
                Text(row["status"], style=_STATUS_STYLES.get(row["status"], "")),
                Text(row["seconds"]),
                Text(safe_text(row["output"])),
            )
        console.print(table)
    if summary.answer and not (summary.error and not summary.results):
        # a request that failed before any task ran has no answer beyond its error, said above
        fallback = summary.answer_source == "fallback"
        title = "Answer (built from the results; the LLM could not answer)" if fallback else "Answer"
        console.print(Panel(Text(safe_text(summary.answer)), title=title, expand=console.is_terminal))
    files = [(r.task, r.id, k, v) for r in summary.results for k, v in r.outputs.items() if k != "text"]
    if files:
        console.print(Text("Files:", style="bold"))
        for task, node_id, modality, uri in files:
            console.print(Text(safe_text(f"  {task}#{node_id} {modality}: {uri}", one_line=True)))
    console.print(
        Text(
            safe_text(
                f"run {summary.flow_run_id} · storage {summary.storage_uri} · LLM {summary.llm.calls} call(s), "
                f"{summary.llm.prompt_tokens}+{summary.llm.completion_tokens} tokens · "
                f"{summary.timings.get('total', 0.0):.1f} s",
                one_line=True,
            ),
            style="dim",
        )
    )


#: the commands that run requests (and may leave a model load running when they print their result)
RUN_COMMANDS = frozenset({"run", "resume", "chat", "batch"})


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from flows.prefect_setup import drain_prefect_queues

    folded: Any = contextlib.nullcontext()
    if args.command in RUN_COMMANDS:
        from flows.library_bars import library_progress

        folded = library_progress()
    try:
        # the commands that run requests keep the libraries' bars folded into the progress channel until they
        # return: a model load a run started ahead (a prefetch for a node that then never ran) and that ends
        # after the run prints no bar below the summary
        with folded:
            if args.command == "run":
                return drain_prefect_queues(cmd_run(args))
            if args.command == "resume":
                return drain_prefect_queues(cmd_resume(args))
            if args.command == "chat":
                return drain_prefect_queues(cmd_chat(args))
            if args.command in ("eval", "batch", "plan", "models", "catalog", "demos", "serve"):
                return drain_prefect_queues(args.func(args))
    except KeyboardInterrupt:
        error(None, "interrupted")
        return 130
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
