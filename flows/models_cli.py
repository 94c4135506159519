"""``hugginggpt models``, ``hugginggpt models pull`` and ``hugginggpt catalog refresh``.

    hugginggpt models --task image-to-text            # every candidate, where it can run now and why not
    hugginggpt models --json                          # one JSON object per candidate of every task
    hugginggpt models pull --tier standard            # download the recommended models ahead of time
    hugginggpt models pull image-to-text openai/whisper-base
    hugginggpt catalog refresh --tasks image-to-text,translation --limit 20 --out catalog.jsonl

``models`` exits 0; ``models pull`` exits 0 when every download succeeded, 1 when one failed, 2 when the Hub is
offline or nothing matches; ``catalog refresh`` exits 0, or 2 when the Hub is offline.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from flows.cli_options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, add_catalog, config_error, error, positive_int
from flows.progress import escape_json_text, safe_text

PULL_TIERS = ("minimal", "standard", "full")

#: Files a local transformers run never reads (other frameworks' weights and exports).
PULL_IGNORE = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "*.tflite", "onnx/*", "coreml/*", "openvino/*", "*.gguf"]


def register(subparsers: Any) -> None:
    """Add the ``models`` and ``catalog`` subcommands; their handler is ``args.func``."""
    models = subparsers.add_parser(
        "models",
        help="list the catalog's models and where each can run",
        description="Every candidate of a task (or of every task): its tier, architecture and size, whether it can "
        "run locally (ready: weights on disk; downloadable; or why not) and remotely (its endpoint or Inference "
        "Providers; or why not).",
    )
    models.add_argument("--task", help="only this task type")
    models.add_argument("--json", action="store_true", help="one JSON object per candidate, a line each")
    models.add_argument("--runnable", action="store_true", help="only the models that can run now, here or remotely")
    add_catalog(models)
    models.set_defaults(func=cmd_models)
    models_sub = models.add_subparsers(dest="models_command")
    pull = models_sub.add_parser(
        "pull",
        help="download models ahead of time",
        description="Download the weights of models into the Hugging Face cache, with progress. minimal: the first "
        "recommended local model of each task; standard: every recommended local model; full: also every catalog "
        "model that can run locally. TASK narrows to those tasks; MODEL_ID pulls that model.",
    )
    pull.add_argument("targets", nargs="*", metavar="TASK|MODEL_ID", help="task types or model ids (default: all)")
    pull.add_argument("--tier", choices=PULL_TIERS, default="minimal", help="which models of each task (minimal)")
    add_catalog(pull)
    pull.set_defaults(func=cmd_pull)

    catalog = subparsers.add_parser("catalog", help="maintain the model catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True)
    refresh = catalog_sub.add_parser(
        "refresh",
        help="rebuild the catalog from the Hub",
        description="Ask the Hub (HF_ENDPOINT) for the most downloaded models of each task, then each one's "
        "architecture, size, library and Inference Providers, and write them as the catalog's long tail; the "
        "recommended tier is kept as it is.",
    )
    refresh.add_argument("--tasks", help="comma-separated task types (default: every task type)")
    refresh.add_argument("--limit", type=positive_int, default=30, metavar="N", help="models per task (30)")
    refresh.add_argument("--out", type=Path, help="where to write the JSONL (default: the built-in snapshot)")
    refresh.set_defaults(func=cmd_refresh)


def _settings(args: argparse.Namespace, command: str) -> Any:
    from pydantic import ValidationError

    from tasks.settings import load_settings

    try:
        return load_settings(catalog=getattr(args, "catalog", None))
    except ValidationError as exc:
        config_error(command, exc)
        return None


def _availability(args: argparse.Namespace, command: str) -> Any:
    from models_catalog.catalog import CatalogError
    from tasks.services import services_for

    settings = _settings(args, command)
    if settings is None:
        return None
    try:
        return services_for(settings).availability
    except CatalogError as exc:
        error(command, str(exc))
        return None


# --- models -------------------------------------------------------------------------------------------------------


def candidate_record(availability: Any, entry: Any) -> dict[str, Any]:
    """What ``hugginggpt models`` says about one catalog entry."""
    verdict = availability.verdict(entry.spec())
    if verdict.local:
        local = "ready" if verdict.weights_here else "downloadable"
    else:
        local = f"not here: {verdict.local_reason}"
    remote = verdict.remote_reason if verdict.remote else f"not served: {verdict.remote_reason}"
    return {
        "id": entry.id,
        "task": entry.task,
        "tier": entry.tier,
        "library": verdict.facts.library or entry.library,
        "architecture": verdict.facts.architecture,
        "params": verdict.facts.params,
        "requires": entry.requires,
        "local": local,
        "remote": remote,
        "runnable": bool(verdict.local or verdict.remote),
        "weights_here": verdict.weights_here,
    }


def ranked_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``records`` of one task (in the catalog's order) as selection would rank them, each with its ``rank``: those
    that can run first, then the recommended tier, then models whose weights are on this machine, then the
    catalog's order (downloads)."""
    ordered = sorted(
        enumerate(records),
        key=lambda ir: (not ir[1]["runnable"], ir[1]["tier"] != "recommended", not ir[1]["weights_here"], ir[0]),
    )
    return [{"rank": n, **record} for n, (_, record) in enumerate(ordered, start=1)]


def model_size(params: int | None) -> str:
    """A parameter count for people: ``1.3B``, ``247M``, ``12k``, ``512``; ``?`` when unknown."""
    if not params:
        return "?"
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if params >= scale:
            shown = params / scale
            return f"{shown:.1f}{unit}" if shown < 10 and unit != "k" else f"{shown:,.0f}{unit}"
    return str(params)


_COLUMNS = (("#", 3), ("task", 30), ("model", 55), ("tier", 11), ("architecture", 24), ("size", 8))


def cmd_models(args: argparse.Namespace) -> int:
    from tasks.task_types import TASK_TYPES, normalize_task_name

    availability = _availability(args, "models")
    if availability is None:
        return EXIT_USAGE
    catalog = availability.catalog
    if args.task:
        task = normalize_task_name(args.task)
        if task not in TASK_TYPES:
            error("models", f"unknown task {args.task!r}; known tasks: {', '.join(sorted(TASK_TYPES))}")
            return EXIT_USAGE
        tasks = [task]
    else:
        tasks = sorted(catalog.tasks())
    entries = [e for task in tasks for e in catalog.ranked(task)]
    with ThreadPoolExecutor(max_workers=8) as pool:  # the Hub is asked once per model, a few at a time
        found = list(pool.map(lambda e: candidate_record(availability, e), entries))
    records = [r for task in tasks for r in ranked_records(x for x in found if x["task"] == task)]
    if args.runnable:
        records = [r for r in records if r["runnable"]]
    try:
        if not args.json:
            head = " ".join(
                f"{name:>{width}}" if name in ("#", "size") else f"{name:<{width}}" for name, width in _COLUMNS
            )
            print(f"{head}  where it can run")
        for record in records:
            if args.json:
                print(escape_json_text(json.dumps(record, ensure_ascii=False)))
                continue
            # catalog and Hub text, printed as text: control characters escaped, never markup or terminal codes
            shown = {k: safe_text(v if v is not None else "?", one_line=True) for k, v in record.items()}
            print(
                f"{record['rank']:>3} {shown['task']:<30} {shown['id']:<55} {shown['tier']:<11} "
                f"{shown['architecture']:<24} {model_size(record['params']):>8}  local: {shown['local']}  |  "
                f"remote: {shown['remote']}"
            )
        if not args.json and not records:
            error("models", "no model can run here" if args.runnable else "the catalog has no model for it")
    except BrokenPipeError:  # the reader stopped (| head): not an error
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the interpreter flushes it at exit
    return EXIT_OK


# --- models pull ----------------------------------------------------------------------------------------------------


def pull_plan(availability: Any, targets: Sequence[str], tier: str) -> tuple[list[Any], list[str]]:
    """The entries to download for ``targets`` (tasks or model ids; none: every task) at ``tier``, and what was
    left out and why."""
    from models_catalog.catalog import CatalogEntry
    from tasks.task_types import TASK_TYPES, normalize_task_name

    catalog = availability.catalog
    tasks: list[str] = []
    models: list[str] = []
    for target in targets:
        (tasks if normalize_task_name(target) in TASK_TYPES else models).append(target)
    tasks = [normalize_task_name(t) for t in tasks] or ([] if models else sorted(catalog.tasks()))
    chosen: dict[tuple[str, str | None], Any] = {}
    skipped: list[str] = []
    for task in tasks:
        picked = 0
        for entry in catalog.ranked(task):
            if entry.tier != "recommended" and tier != "full":
                break
            if tier == "minimal" and picked:
                break
            verdict = availability.verdict(entry.spec(), remote=False)
            if not verdict.local:
                if entry.tier == "recommended":
                    skipped.append(f"{entry.id} ({task}): {verdict.local_reason}")
                continue
            chosen.setdefault((entry.id, entry.revision), entry)
            picked += 1
    for model_id in models:
        entry = next((e for e in catalog if e.id == model_id), None)
        entry = entry or CatalogEntry(id=model_id, task="feature-extraction")
        chosen.setdefault((entry.id, entry.revision), entry)
    return list(chosen.values()), skipped


def cmd_pull(args: argparse.Namespace) -> int:
    from tasks.hub import hub_offline

    if hub_offline():
        error("models pull", "the Hub is offline (HF_HUB_OFFLINE=1): nothing can be downloaded")
        return EXIT_USAGE
    availability = _availability(args, "models pull")
    if availability is None:
        return EXIT_USAGE
    entries, skipped = pull_plan(availability, args.targets, args.tier)
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    if not entries:
        error("models pull", f"no model to pull for {' '.join(args.targets) or 'the catalog'} at tier {args.tier}")
        return EXIT_USAGE
    from huggingface_hub import snapshot_download

    failed = 0
    for n, entry in enumerate(entries, 1):
        size = f", {entry.params / 1e6:,.0f}M params" if entry.params else ""
        print(f"[{n}/{len(entries)}] {entry.id}{'@' + entry.revision if entry.revision else ''}{size}", file=sys.stderr)
        try:
            folder = snapshot_download(entry.id, revision=entry.revision, ignore_patterns=PULL_IGNORE)
        except Exception as exc:
            failed += 1
            error("models pull", f"{entry.id}: {type(exc).__name__}: {exc}")
            continue
        print(f"{entry.id}\t{folder}")
    print(f"pulled {len(entries) - failed} of {len(entries)} model(s)", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


# --- catalog refresh ------------------------------------------------------------------------------------------------


#: ``model_info`` calls in flight at once while refreshing (the Hub answers each in tens of milliseconds; one at a
#: time, a 3,000-model listing took minutes).
REFRESH_WORKERS = 16


def refreshed_entries(
    tasks: Iterable[str],
    limit: int,
    keep: set[tuple[str, str]],
    known: dict[tuple[str, str], Any],
    *,
    workers: int = REFRESH_WORKERS,
) -> tuple[list[Any], list[str]]:
    """Catalog entries for the ``limit`` most downloaded Hub models of each task, with the Hub's metadata (asked for
    ``workers`` models at a time), in listing order; entries in ``keep`` (the recommended tier) are left out;
    descriptions of ``known`` entries are kept. Also returns every listed entry that was skipped, with why (an id
    that is no repository id, metadata that is no catalog entry): one bad entry never costs the others."""
    from huggingface_hub import HfApi

    api = HfApi()
    listed = [
        (task, model)
        for task in tasks
        for model in api.list_models(pipeline_tag=task, sort="downloads", limit=limit)
        if (task, model.id) not in keep
    ]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        outcomes = list(pool.map(lambda item: _refreshed_entry(api, item[0], item[1], known), listed))
    entries = [o for o in outcomes if not isinstance(o, str)]
    skipped = [o for o in outcomes if isinstance(o, str)]
    return entries, skipped


def _refreshed_entry(api: Any, task: str, listed: Any, known: dict[tuple[str, str], Any]) -> Any:
    """The catalog entry of one listed model, or why it is skipped (a line naming it)."""
    from huggingface_hub.errors import HfHubHTTPError
    from pydantic import ValidationError

    from models_catalog.catalog import CatalogEntry, repo_id_problem
    from tasks.model_facts import HUB_EXPAND, facts_of_model_info, hub_name

    model_id = getattr(listed, "id", None)
    shown = safe_text(str(model_id)[:120], one_line=True)
    problem = repo_id_problem(model_id)
    if problem is not None:
        return f"{task}: skipped {shown!r}: {problem}"
    try:
        info = api.model_info(model_id, expand=[*HUB_EXPAND, "downloads", "likes", "tags"])
    except HfHubHTTPError as exc:  # gated, removed since it was listed: keep what the list said
        print(f"{shown}: {safe_text(exc, one_line=True)[:300]}", file=sys.stderr)
        info = listed
    except Exception as exc:
        return f"{task}: skipped {shown}: {type(exc).__name__}: {safe_text(exc, one_line=True)[:200]}"
    facts = facts_of_model_info(info)
    tags = [t for t in (getattr(info, "tags", None) or []) if isinstance(t, str) and hub_name(t, allow=":/")]
    old = known.get((task, model_id))
    try:
        return CatalogEntry(
            id=model_id,
            task=task,
            downloads=_count(getattr(info, "downloads", None)),
            likes=_count(getattr(info, "likes", None)),
            tags=[t for t in tags if ":" not in t][:12],
            languages=old.languages if old else [],
            license=next((t.split(":", 1)[1] for t in tags if t.startswith("license:")), None),
            library=facts.library or "unknown",
            description=old.description if old else "",
            architecture=facts.architecture,
            params=facts.params,
            providers=facts.providers,
        )
    except ValidationError as exc:
        fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return f"{task}: skipped {shown}: not a catalog entry ({fields})"


def _count(value: Any) -> int:
    """A download or like count from the Hub: a whole number of at least 0, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def cmd_refresh(args: argparse.Namespace) -> int:
    from models_catalog.catalog import DEFAULT_CATALOG_PATH, RECOMMENDED_PATH, read_catalog_file
    from tasks.hub import hub_offline
    from tasks.task_types import TASK_TYPES, normalize_task_name

    if hub_offline():
        error("catalog refresh", "the Hub is offline (HF_HUB_OFFLINE=1): nothing can be asked")
        return EXIT_USAGE
    tasks = [normalize_task_name(t) for t in args.tasks.split(",") if t.strip()] if args.tasks else sorted(TASK_TYPES)
    unknown = [t for t in tasks if t not in TASK_TYPES]
    if unknown:
        error("catalog refresh", f"unknown task(s) {', '.join(unknown)}; known tasks: {', '.join(sorted(TASK_TYPES))}")
        return EXIT_USAGE
    out: Path = args.out or DEFAULT_CATALOG_PATH
    keep = {(e.task, e.id) for e in read_catalog_file(RECOMMENDED_PATH)}
    base = read_catalog_file(out) if out.is_file() else []
    known = {(e.task, e.id): e for e in [*read_catalog_file(DEFAULT_CATALOG_PATH), *base]}
    try:
        fresh, skipped = refreshed_entries(tasks, args.limit, keep, known)
    except Exception as exc:
        error("catalog refresh", f"the Hub could not be asked: {type(exc).__name__}: {safe_text(exc, one_line=True)}")
        return EXIT_FAILED
    for line in skipped:
        error("catalog refresh", line)
    others = [e for e in base if e.task not in tasks]  # tasks not refreshed stay as they were
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8") as fh:
        for entry in sorted([*others, *fresh], key=lambda e: (e.task, -e.downloads, e.id)):
            fh.write(entry.model_dump_json(exclude_none=True, exclude={"tier", "trust_remote_code", "requires"}) + "\n")
    left_out = f", {len(skipped)} skipped (above)" if skipped else ""
    print(f"wrote {len(fresh)} model(s) of {len(tasks)} task(s) to {out}{left_out}; the recommended tier is unchanged")
    return EXIT_OK
