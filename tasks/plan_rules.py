"""The rules a plan must follow: read the raw nodes from a reply (:func:`parse_plan`), check them against the task
table and the inputs, repairing what can be repaired safely (:func:`validate_plan`), and order them by their
dependencies (:func:`topological_order`). Plain Python over pydantic models: planning (:mod:`tasks.plan`), re-planning,
the demo library and the evaluation datasets all judge plans here."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath
from typing import Any

from tasks.inputs import InputPolicy
from tasks.parsing import ParseError, coerce_id, parse_plan_reply, quote
from tasks.schemas import GENERATED_PREFIX, GENERATED_RE, PlanNode
from tasks.task_types import EXECUTABLE_TASKS, FILE_MODALITIES, TASK_TYPES, normalize_task_name

MAX_PLAN_NODES = 200
MAX_PROBLEMS_SHOWN = 10
_URL_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


class PlanValidationError(ValueError):
    """A plan broke the rules; ``problems`` lists every one, each naming the node and what was wrong."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "; ".join(self.problems[:MAX_PROBLEMS_SHOWN])
        more = len(self.problems) - MAX_PROBLEMS_SHOWN
        super().__init__("invalid plan: " + shown + (f"; and {more} more problem(s)" if more > 0 else ""))


# ---------------------------------------------------------------------------
# parsing and validation
# ---------------------------------------------------------------------------
def parse_plan(text: str) -> list[Any]:
    """Read the list of raw nodes from a reply: a list, ``{"tasks": [...]}`` (or plan/nodes), or one bare node."""
    try:
        return parse_plan_reply(text)
    except ParseError as exc:
        raise PlanValidationError([str(exc)]) from None


def _is_url(value: str) -> bool:
    return bool(_URL_RE.match(value))


def _match_input(value: str, inputs: Sequence[str], request: str) -> str | None:
    """The given input a literal file argument refers to, or ``None`` when the user never gave it."""
    if value in inputs:
        return value
    base = PurePosixPath(value.replace("\\", "/")).name
    for given in inputs:
        if PurePosixPath(given.replace("\\", "/")).name == base and base:
            return given
    if value and value in request:
        return value
    return None


def validate_plan(
    raw_nodes: Sequence[Any],
    *,
    inputs: Sequence[str] = (),
    request: str = "",
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    policy: InputPolicy | None = None,
) -> tuple[list[PlanNode], list[str]]:
    """Check a raw plan against the task table; repair what can be repaired safely.

    With ``policy``, every file argument (a given input or a URL) must also be one the policy allows: a path
    inside its roots, a URL of an allowed scheme that names no private address (judged without resolving names;
    the fetch checks again).

    Returns the nodes in dependency order and the repairs made. Raises
    :class:`PlanValidationError` listing every problem otherwise.

    Repairs: ``dep: [-1]`` means none; task names in other spellings are
    normalized; a ``<GENERATED>-k`` whose k exists but is missing from ``dep``
    is added to it; a file argument naming a given input by its base name is
    replaced by the input as given; numbers in ``args`` become strings.
    """
    allowed_set = set(allowed)
    problems: list[str] = []
    repairs: list[str] = []
    nodes: list[PlanNode] = []

    if not isinstance(raw_nodes, Sequence) or isinstance(raw_nodes, str):
        raise PlanValidationError([f"the plan must be a list of tasks, not {type(raw_nodes).__name__}"])
    if len(raw_nodes) > MAX_PLAN_NODES:
        raise PlanValidationError([f"the plan has {len(raw_nodes)} tasks; the limit is {MAX_PLAN_NODES}"])

    for pos, raw in enumerate(raw_nodes):
        where = f"task at position {pos}"
        if not isinstance(raw, dict):
            problems.append(f"{where} is not a JSON object ({type(raw).__name__})")
            continue
        node_id = coerce_id(raw.get("id", pos))
        if node_id is None or node_id < 0:
            problems.append(f"{where} has an invalid id {quote(raw.get('id'), 40)} (ids are integers from 0)")
            continue
        where = f"task {node_id}"
        name = raw.get("task")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"{where} has no task type")
            continue
        key = normalize_task_name(name)
        if key not in TASK_TYPES:
            problems.append(f"{where}: unknown task type {quote(name, 60)}")
            continue
        if key not in allowed_set:
            problems.append(
                f"{where}: task type {key!r} cannot run in this deployment (runnable: {', '.join(sorted(allowed_set))})"
            )
            continue
        if key != name:
            repairs.append(f"task {node_id}: task type {quote(name, 60)} read as {key!r}")
        dep_raw = raw.get("dep", [])
        if dep_raw is None:
            dep_raw = []
        if not isinstance(dep_raw, list):
            dep_raw = [dep_raw]
        deps: list[int] = []
        for d in dep_raw:
            di = coerce_id(d)
            if di is None:
                problems.append(f"{where}: dependency {quote(d, 40)} is not a task id")
            elif di >= 0 and di not in deps:
                deps.append(di)
        args_raw = raw.get("args", {})
        if not isinstance(args_raw, dict):
            problems.append(f"{where}: 'args' must be an object, not {type(args_raw).__name__}")
            continue
        args: dict[str, str] = {}
        for arg_name, value in args_raw.items():
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                problems.append(f"{where}: argument {quote(arg_name, 60)} must be a string, not {type(value).__name__}")
                continue
            if not isinstance(value, str):
                repairs.append(f"{where}: argument {quote(arg_name, 60)} converted to text")
            args[str(arg_name)] = str(value)
        nodes.append(PlanNode(id=node_id, task=key, dep=deps, args=args))

    by_id: dict[int, PlanNode] = {}
    for node in nodes:
        if node.id in by_id:
            problems.append(f"task id {node.id} is used twice")
        by_id[node.id] = node
    if problems:
        raise PlanValidationError(problems)

    for node in nodes:
        tt = TASK_TYPES[node.task]
        where = f"task {node.id} ({node.task})"
        for dep in node.dep:
            if dep == node.id:
                problems.append(f"{where} depends on itself")
            elif dep not in by_id:
                problems.append(f"{where} depends on task {dep}, which is not in the plan")
        for arg_name in node.args:
            if tt.arg(arg_name) is None:
                problems.append(
                    f"{where}: unknown argument {quote(arg_name, 60)} (it takes {', '.join(a.name for a in tt.args)})"
                )
        for spec in tt.required_args:
            if not node.args.get(spec.name, "").strip():
                problems.append(f"{where}: missing required argument {spec.name!r} ({spec.modality})")
        for arg_name, value in node.args.items():
            spec = tt.arg(arg_name)
            if spec is None:
                continue
            refs = [int(k) for k in GENERATED_RE.findall(value)]
            if refs:
                whole = value.strip() == f"{GENERATED_PREFIX}{refs[0]}"
                if spec.modality in FILE_MODALITIES and not (whole and len(refs) == 1):
                    problems.append(
                        f"{where}: argument {arg_name!r} ({spec.modality}) must be exactly one <GENERATED>-k, "
                        f"not {quote(value, 100)}"
                    )
                    continue
                for k in refs:
                    if k == node.id:
                        problems.append(f"{where}: argument {arg_name!r} uses <GENERATED>-{k}, its own output")
                        continue
                    if k not in by_id:
                        problems.append(
                            f"{where}: argument {arg_name!r} uses <GENERATED>-{k}, but there is no task {k}"
                        )
                        continue
                    producer = TASK_TYPES[by_id[k].task]
                    if not producer.produces(spec.modality):
                        problems.append(
                            f"{where}: argument {arg_name!r} needs {spec.modality} but task {k} ({producer.name}) "
                            f"produces {', '.join(map(str, producer.outputs))}"
                        )
                        continue
                    if k not in node.dep and k != node.id:
                        node.dep.append(k)
                        repairs.append(f"{where}: added task {k} to dep, since it uses <GENERATED>-{k}")
            elif spec.modality in FILE_MODALITIES:
                match = value if _is_url(value) and value in request else _match_input(value, inputs, request)
                if match is None:
                    given = ", ".join(inputs) if inputs else "no files"
                    problems.append(
                        f"{where}: argument {arg_name!r} names {quote(value, 100)}, "
                        f"which is not among the inputs given ({given})"
                    )
                    continue
                refusal = policy.refusal(match) if policy is not None else None
                if refusal is not None:
                    problems.append(f"{where}: argument {arg_name!r}: {refusal}")
                elif match != value:
                    node.args[arg_name] = match
                    repairs.append(
                        f"{where}: argument {arg_name!r} {quote(value, 100)} "
                        f"read as the given input {quote(match, 100)}"
                    )
        # a dependency whose output is not consumed is allowed (ordering only)
    if problems:
        raise PlanValidationError(problems)

    ordered = topological_order(nodes)
    return ordered, repairs


def topological_order(nodes: Sequence[PlanNode]) -> list[PlanNode]:
    """Nodes in an order where every node comes after its dependencies, lowest id first among the ready
    ones (so a plan already in order keeps its order); raises on a cycle."""
    by_id = {n.id: n for n in nodes}
    waiting = {n.id: set(n.dep) for n in nodes}
    dependents: dict[int, list[int]] = {n.id: [] for n in nodes}
    for n in nodes:
        for d in n.dep:
            dependents[d].append(n.id)
    ready = [i for i, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered: list[PlanNode] = []
    while ready:
        i = heapq.heappop(ready)
        ordered.append(by_id[i])
        for j in dependents[i]:
            waiting[j].discard(i)
            if not waiting[j]:
                heapq.heappush(ready, j)
    if len(ordered) < len(nodes):
        cycle = ", ".join(str(i) for i in sorted(set(by_id) - {n.id for n in ordered}))
        raise PlanValidationError([f"the dependencies form a cycle among tasks {cycle}"])
    return ordered
