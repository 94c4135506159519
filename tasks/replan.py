"""Replanning: after the graph has run with nodes that failed or were skipped, one LLM call may plan new tasks.

The call (stage ``replan``) is told the request, every task planned so far with its status, the outputs of the
completed ones and the errors of the others, and answers in the format of a plan: no tasks (answer with what
there is) or new tasks. New tasks continue the ids, may use the outputs of completed tasks through
``<GENERATED>-k``, and are validated like any plan (:func:`validate_replan`); the flow gives them models through
the same selection and runs them as a new round of the same flow run.

:func:`replan_request` is the core (no Prefect); :func:`replan_task` its Prefect wrapper.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from importlib import resources
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.inputs import InputPolicy
from tasks.llm import ChatModel, LLMError
from tasks.parsing import clip, coerce_id, quote
from tasks.plan import PLAN_SCHEMA, PlanValidationError, describe_task_types, parse_plan, validate_plan
from tasks.schemas import GENERATED_RE, Assignment, ChatTurn, NodeResult, PlanNode, ReplanRound
from tasks.settings import Settings
from tasks.task_types import EXECUTABLE_TASKS

#: Characters of one output or error shown to the replanning call.
SHOWN_CHARS = 500


@cache
def _system_prompt() -> str:
    return resources.files("tasks.prompts").joinpath("replan_system.txt").read_text(encoding="utf-8")


def next_id(nodes: Sequence[PlanNode]) -> int:
    """The first id a new task may take."""
    return max((n.id for n in nodes), default=-1) + 1


def needs_replan(results: Sequence[NodeResult]) -> list[int]:
    """The ids of the last round's nodes that did not complete (none: nothing to replan)."""
    last = max((r.round for r in results), default=0)
    return [r.id for r in results if r.round == last and r.status != "completed"]


def build_replan_messages(
    request: str,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Assignment],
    results: Sequence[NodeResult],
    *,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
) -> list[dict[str, str]]:
    """The system prompt (rules, the first new id, the task table), the history, then the request with every task so
    far: its status, model, outputs (clipped) or error."""
    system = (
        _system_prompt()
        .replace("{task_types}", describe_task_types(tuple(allowed)))
        .replace("{next_id}", str(next_id(nodes)))
    )
    by_node = {a.node_id: a for a in assignments}
    by_result = {r.id: r for r in results}
    done = []
    for node in nodes:
        result = by_result.get(node.id)
        assignment = by_node.get(node.id)
        entry: dict[str, Any] = {
            "id": node.id,
            "task": node.task,
            "dep": node.dep or [-1],
            "args": node.args,
            "model": (result.model if result else None) or (assignment.model if assignment else None),
            "status": result.status if result else "not run",
        }
        if result is not None and result.status == "completed":
            entry["outputs"] = {k: clip(v, SHOWN_CHARS) for k, v in result.outputs.items()}
        elif result is not None:
            entry["error"] = clip(result.error or "no detail", SHOWN_CHARS)
        done.append(entry)
    given = ", ".join(inputs) if inputs else "none"
    user = (
        f"Request: {request}\nInputs: {given}\n"
        f"Tasks so far:\n{json.dumps(done, ensure_ascii=False, indent=1)}\n"
        f'Reply with new tasks from id {next_id(nodes)} on, or {{"tasks": []}}.'
    )
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.content} for t in history]
    messages.append({"role": "user", "content": user})
    return messages


def validate_replan(
    raw_nodes: Sequence[Any],
    earlier: Sequence[PlanNode],
    results: Sequence[NodeResult],
    *,
    inputs: Sequence[str] = (),
    request: str = "",
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
) -> tuple[list[PlanNode], list[str]]:
    """The new tasks of a replanning reply, validated as :func:`validate_plan` validates a plan, with the completed
    earlier tasks as the tasks they may use; returned in dependency order with the repairs made.

    Raises :class:`~tasks.plan_rules.PlanValidationError` listing every problem: an id already taken, a dependency or a
    ``<GENERATED>-k`` on a task that did not complete, and everything :func:`validate_plan` refuses."""
    if not isinstance(raw_nodes, Sequence) or isinstance(raw_nodes, str):
        raise PlanValidationError([f"the new tasks must be a list, not {type(raw_nodes).__name__}"])
    status = {r.id: r.status for r in results}
    taken = {n.id for n in earlier}
    completed = [n for n in earlier if status.get(n.id) == "completed"]
    done_ids = {n.id for n in completed}
    problems: list[str] = []
    for pos, raw in enumerate(raw_nodes):
        if not isinstance(raw, dict):
            continue  # validate_plan names it
        node_id = coerce_id(raw.get("id"))
        where = f"task {node_id}" if node_id is not None else f"task at position {pos}"
        if node_id is not None and node_id in taken:
            problems.append(f"{where}: id {node_id} is already taken; new tasks continue from {next_id(earlier)}")
            continue
        dep_raw = raw.get("dep", [])
        refs = [coerce_id(d) for d in (dep_raw if isinstance(dep_raw, list) else [dep_raw])]
        args = raw.get("args")
        for value in args.values() if isinstance(args, dict) else ():
            refs += [int(k) for k in GENERATED_RE.findall(value)] if isinstance(value, str) else []
        for k in sorted({r for r in refs if r is not None and r in taken and r not in done_ids}):
            problems.append(f"{where} uses task {k}, which {status.get(k, 'did not run')}: it has no output to use")
    if problems:
        raise PlanValidationError(problems)
    prior = [n.model_dump() for n in completed]
    nodes, repairs = validate_plan([*prior, *raw_nodes], inputs=inputs, request=request, allowed=allowed, policy=policy)
    return [n for n in nodes if n.id not in done_ids], repairs  # earlier tasks, validated before, need none


def replan_request(
    llm: ChatModel,
    request: str,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Assignment],
    results: Sequence[NodeResult],
    *,
    round: int,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
    schema: Mapping[str, Any] | None = PLAN_SCHEMA,
) -> tuple[ReplanRound, list[PlanNode]]:
    """One replanning call: the record of it, and the new tasks (none when the LLM answers with none, fails, or
    replies with tasks that are not valid: the record's ``error`` then says why)."""
    allowed = tuple(allowed)
    after = needs_replan(results)
    started = time.perf_counter()
    record = ReplanRound(round=round, after=after)
    messages = build_replan_messages(
        request, nodes, assignments, results, inputs=inputs, history=history, allowed=allowed
    )
    try:
        reply, usage = llm.chat(messages, stage="replan", schema=dict(schema) if schema is not None else None)
    except LLMError as exc:
        record.error = f"the replanning call failed: {exc}"
        record.usage = exc.usage
        record.seconds = time.perf_counter() - started
        return record, []
    record.usage = usage
    try:
        new, repairs = validate_replan(
            parse_plan(reply), nodes, results, inputs=inputs, request=request, allowed=allowed, policy=policy
        )
    except PlanValidationError as exc:
        record.error = (
            f"the replan was not usable: {str(exc).removeprefix('invalid plan: ')} (reply {quote(reply, 120)})"
        )
        new, repairs = [], []
    record.tasks = [n.id for n in new]
    record.repairs = repairs
    record.seconds = time.perf_counter() - started
    return record, new


@task(name="replan", cache_policy=NO_CACHE)
def replan_task(
    settings: Settings,
    request: str,
    nodes: list[PlanNode],
    assignments: list[Assignment],
    results: list[NodeResult],
    round: int,
    inputs: list[str],
    history: list[ChatTurn],
) -> tuple[ReplanRound, list[PlanNode]]:
    """Prefect task: a replan after round ``round - 1``, with the run's services, offered the task types that can run
    here. The reply is asked for in the plan's JSON schema (task types, argument names); the plan contract's rules of
    position (ids from 0, references to tasks of the same reply) do not fit new tasks that continue a plan, so the
    embedded controller decodes the schema and :func:`validate_replan` checks the rest."""
    from tasks.constraints import for_endpoint
    from tasks.plan import plan_reply_schema, plannable_tasks
    from tasks.services import services_for

    services = services_for(settings)
    allowed = plannable_tasks(services.availability)
    policy = InputPolicy.from_settings(settings)
    return replan_request(
        services.chat_model,
        request,
        nodes,
        assignments,
        results,
        round=round,
        inputs=inputs,
        history=history,
        allowed=allowed,
        policy=policy,
        schema=for_endpoint(plan_reply_schema(allowed, inputs, policy)),
    )
