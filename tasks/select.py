"""Stage 2, model selection: candidates from the catalog, one LLM call for the whole plan.

For each node: a model pinned by the user (a catalog id, or a folder of weights) wins, once it can run
here; else the catalog's runnable candidates for its task are ranked and the top K kept (the recommended ones
only, when one can run: the long tail then serves as fallbacks); a lone candidate is used
without asking; the nodes with several candidates are put to the LLM in one
call, and each choice keeps its reason. When the LLM fails or picks a model
that is not a candidate, the top-ranked candidate is used and the reason says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from models_catalog.catalog import Catalog, CatalogEntry
from tasks.availability import Availability
from tasks.constraints import selection_schema
from tasks.experts.base import ModelSpec
from tasks.llm import ChatModel, JSONExtractError, LLMError, extract_json
from tasks.schemas import Assignment, CandidateCheck, LLMUsage, PlanNode, SelectionResult
from tasks.services import services_for
from tasks.settings import Settings
from tasks.task_types import TASK_TYPES, normalize_task_name


class SelectionError(ValueError):
    """A pinned model or the catalog made selection impossible; the message says which and why."""


SELECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "choices": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "model": {"type": "string"},
                    "reason": {"type": "string"},
                },
                "required": ["id", "model", "reason"],
            },
        }
    },
    "required": ["choices"],
}


@cache
def _system_prompt() -> str:
    return resources.files("tasks.prompts").joinpath("select_system.txt").read_text(encoding="utf-8")


def parse_pins(pins: Sequence[str] | Mapping[str, str] | None) -> dict[str, str]:
    """``["image-to-text=Salesforce/blip", ...]`` (or a mapping) -> {task: model id or folder}, task names
    normalized."""
    if not pins:
        return {}
    items = pins.items() if isinstance(pins, Mapping) else []
    if not isinstance(pins, Mapping):
        parsed = []
        for pin in pins:
            task_name, sep, model_id = pin.partition("=")
            if not sep or not task_name.strip() or not model_id.strip():
                raise SelectionError(f"--model {pin!r} is not of the form TASK=MODEL_ID or TASK=FOLDER")
            parsed.append((task_name, model_id))
        items = parsed
    return {normalize_task_name(t): m.strip() for t, m in items}


def _candidate_line(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "model": entry.id,
        "downloads": entry.downloads,
        "likes": entry.likes,
        "tags": entry.tags[:6],
        "languages": entry.languages[:4],
        "description": entry.description[:200],
    }


def build_select_messages(request: str, pending: Sequence[tuple[PlanNode, list[CatalogEntry]]]) -> list[dict[str, str]]:
    tasks_desc = [
        {
            "id": node.id,
            "task": node.task,
            "args": node.args,
            "candidates": [_candidate_line(c) for c in cands],
        }
        for node, cands in pending
    ]
    user = f"Request: {request}\nTasks and candidates:\n{json.dumps(tasks_desc, ensure_ascii=False, indent=1)}"
    return [{"role": "system", "content": _system_prompt()}, {"role": "user", "content": user}]


def _parse_choices(reply: str) -> dict[int, tuple[str, str]]:
    value = extract_json(reply)
    if isinstance(value, dict):
        value = value.get("choices", value.get("models", [value]))
    if not isinstance(value, list):
        raise JSONExtractError("the selection reply is not a list of choices")
    out: dict[int, tuple[str, str]] = {}
    for item in value:
        if not isinstance(item, dict):
            continue
        raw_id = item.get("id", item.get("task_id"))
        try:
            node_id = int(raw_id)
        except (TypeError, ValueError):
            continue
        model = item.get("model", item.get("id_model", ""))
        out[node_id] = (str(model), str(item.get("reason", "")).strip())
    return out


def looks_like_folder(value: str) -> bool:
    """Whether a pin names a folder of weights rather than a Hub id: a path that exists, or one written as a path
    (``./x``, ``../x``, ``/x``, ``~/x``)."""
    return value.startswith(("./", "../", "/", "~", ".\\")) or Path(value).expanduser().is_dir()


def pinned_entry(task_name: str, value: str, catalog: Catalog) -> CatalogEntry:
    """The catalog entry a pin names: a catalog model of that task, or a local folder of weights (a fine-tune: its
    ``config.json`` gives the architecture; no catalog edit needed). Raises :class:`SelectionError` saying what is
    wrong."""
    if task_name not in TASK_TYPES:
        raise SelectionError(
            f"--model {task_name}={value}: unknown task {task_name!r}; known tasks: {', '.join(sorted(TASK_TYPES))}"
        )
    if looks_like_folder(value):
        folder = Path(value).expanduser().resolve()
        if not folder.is_dir():
            raise SelectionError(f"--model {task_name}={value}: the folder {folder} does not exist")
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except OSError:
            raise SelectionError(
                f"--model {task_name}={value}: {folder} has no config.json (save the model with save_pretrained)"
            ) from None
        except ValueError as exc:
            raise SelectionError(f"--model {task_name}={value}: {folder}/config.json is not JSON ({exc})") from None
        model_type = config.get("model_type") if isinstance(config, dict) else None
        if not isinstance(model_type, str) or not model_type:
            raise SelectionError(f"--model {task_name}={value}: {folder}/config.json names no model_type")
        return CatalogEntry(
            id=str(folder),
            task=task_name,
            local_path=str(folder),
            architecture=model_type,
            description=f"local weights ({model_type})",
        )
    entry = catalog.get(task_name, value)
    if entry is None:
        known = ", ".join(e.id for e in catalog.ranked(task_name)[:5]) or "none"
        raise SelectionError(
            f"--model {task_name}={value}: not in the catalog for task {task_name!r} and not a folder of weights "
            f"(add it with HUGGINGGPT_CATALOG, or give a folder; the catalog has e.g. {known})"
        )
    return entry


def check_pins(pins: Mapping[str, str], availability: Availability) -> dict[str, str]:
    """``pins`` with folders made absolute, once each names a model that can run here; raises
    :class:`SelectionError` with the reason otherwise. Call it before any LLM call."""
    checked: dict[str, str] = {}
    for task_name, value in pins.items():
        entry = pinned_entry(task_name, value, availability.catalog)
        backend, why = availability.choose(entry.spec())
        if backend is None:
            raise SelectionError(f"--model {task_name}={value}: cannot run here: {why}")
        checked[task_name] = entry.id  # a folder: its absolute path
    return checked


def needs_llm_choice(
    task_name: str, availability: Availability, pins: Mapping[str, str], *, top_k: int = 5, max_fallbacks: int = 2
) -> bool:
    """Whether :func:`select_models` would ask the LLM to choose a model for a node of ``task_name``: it is not
    pinned and has more than one candidate that can run here."""
    if task_name in pins:
        return False
    ranked = [e for e, _ in availability.runnable(task_name, limit=top_k + max_fallbacks)[0]]
    return len(([e for e in ranked if e.tier == "recommended"] or ranked)[:top_k]) > 1


def select_models(
    nodes: Sequence[PlanNode],
    availability: Availability,
    *,
    llm: ChatModel,
    request: str,
    pins: Mapping[str, str] | None = None,
    top_k: int = 5,
    max_fallbacks: int = 2,
    unused_pins: str = "refuse",
) -> SelectionResult:
    """Choose a model for every node (see the module doc). Candidates that cannot run here (``availability``) are
    removed first, so the LLM never picks one, and every check is kept in ``SelectionResult.checks``. Each
    assignment keeps up to ``max_fallbacks`` next-ranked runnable candidates. Nodes with no runnable model are
    left out, listed in ``SelectionResult.unassigned`` with the reason, so they fail alone at execution. A pin for
    a task the plan does not use is refused, or with ``unused_pins="ignore"`` left aside."""
    catalog = availability.catalog
    planned_tasks = {n.task for n in nodes}
    pins = {t: m for t, m in (pins or {}).items() if unused_pins != "ignore" or t in planned_tasks}
    stray = sorted(set(pins) - planned_tasks)
    if stray:
        raise SelectionError(
            f"--model pins task(s) {', '.join(stray)} that the plan does not use "
            f"(plan tasks: {', '.join(sorted(planned_tasks)) or 'none'})"
        )
    assignments: dict[int, Assignment] = {}
    unassigned: dict[int, str] = {}
    pending: list[tuple[PlanNode, list[CatalogEntry]]] = []

    runnable: dict[str, list[tuple[CatalogEntry, str]]] = {}
    backend_of: dict[tuple[str, str], str] = {}
    checks: list[CandidateCheck] = []
    for task_name in sorted(planned_tasks - set(pins)):
        kept, looked_at = availability.runnable(task_name, limit=top_k + max_fallbacks)
        checks += looked_at
        runnable[task_name] = kept
        backend_of.update({(task_name, e.id): b for e, b in kept})
        if not kept:
            total = len(catalog.for_task(task_name))
            removed = [c for c in looked_at if c.backend is None]
            why = f" (e.g. {removed[0].model}: {removed[0].reason})" if removed else ""
            for node in nodes:
                if node.task == task_name and node.task not in pins:
                    unassigned[node.id] = (
                        f"no runnable model for task {task_name!r}: the catalog lists {total}, none can run here"
                        f"{why}. Add one with weights on this machine (HUGGINGGPT_CATALOG, local_path), give an "
                        "endpoint, or allow the Hub (unset HF_HUB_OFFLINE; HF_TOKEN for remote inference)"
                    )

    def fallbacks(task_name: str, chosen: str) -> list[ModelSpec]:
        return [e.spec() for e, _ in runnable[task_name] if e.id != chosen][:max_fallbacks]

    for node in nodes:
        if node.task in pins:
            entry = pinned_entry(node.task, pins[node.task], catalog)
            backend, why = availability.choose(entry.spec())
            checks.append(CandidateCheck(task=node.task, model=entry.id, backend=backend, reason=why))  # type: ignore[arg-type]
            if backend is None:
                raise SelectionError(f"--model {node.task}={pins[node.task]}: cannot run here: {why}")
            assignments[node.id] = Assignment(
                node_id=node.id,
                task=node.task,
                model=entry.id,
                backend=backend,  # type: ignore[arg-type]
                candidates=[entry.id],
                reason=f"pinned by the user ({why})",
                spec=entry.spec(),
            )
            continue
        ranked = [e for e, _ in runnable[node.task]]
        cands = ([e for e in ranked if e.tier == "recommended"] or ranked)[:top_k]
        if not cands:
            continue
        if len(cands) == 1:
            assignments[node.id] = Assignment(
                node_id=node.id,
                task=node.task,
                model=cands[0].id,
                backend=backend_of[(node.task, cands[0].id)],  # type: ignore[arg-type]
                candidates=[cands[0].id],
                reason="the only runnable candidate",
                spec=cands[0].spec(),
                fallbacks=fallbacks(node.task, cands[0].id),
            )
        else:
            pending.append((node, cands))

    usage = LLMUsage()
    if pending:
        choices: dict[int, tuple[str, str]] = {}
        failure: str | None = None
        try:
            schema = selection_schema([(node.id, [c.id for c in cands]) for node, cands in pending])
            reply, usage = llm.chat(build_select_messages(request, pending), stage="select", schema=schema)
            choices = _parse_choices(reply)
        except LLMError as exc:
            usage = exc.usage
            failure = f"selection by the LLM failed ({exc})"
        except JSONExtractError as exc:
            failure = f"selection by the LLM failed ({exc})"
        for node, cands in pending:
            by_id = {c.id: c for c in cands}
            chosen, reason = choices.get(node.id, ("", ""))
            if chosen in by_id:
                entry = by_id[chosen]
                reason = reason or "chosen by the LLM"
            else:
                entry = cands[0]
                if failure:
                    reason = f"{failure}; took the top-ranked candidate"
                elif chosen:
                    reason = f"the LLM chose {chosen!r}, which is not a candidate; took the top-ranked candidate"
                else:
                    reason = "the LLM made no choice for this task; took the top-ranked candidate"
            assignments[node.id] = Assignment(
                node_id=node.id,
                task=node.task,
                model=entry.id,
                backend=backend_of[(node.task, entry.id)],  # type: ignore[arg-type]
                candidates=[c.id for c in cands],
                reason=reason,
                spec=entry.spec(),
                fallbacks=fallbacks(node.task, entry.id),
            )
    ordered = [assignments[n.id] for n in nodes if n.id in assignments]
    return SelectionResult(assignments=ordered, unassigned=unassigned, usage=usage, checks=checks)


@task(name="select", cache_policy=NO_CACHE)
def select_task(
    settings: Settings,
    request: str,
    nodes: list[PlanNode],
    pins: dict[str, str],
) -> SelectionResult:
    """Prefect task: stage 2, with the run's services (:func:`tasks.services.services_for`)."""
    services = services_for(settings)
    return select_models(
        nodes,
        services.availability,
        llm=services.chat_model,
        request=request,
        pins=pins,
        top_k=settings.top_k,
        max_fallbacks=settings.max_fallbacks,
        unused_pins=settings.unused_pins,
    )
