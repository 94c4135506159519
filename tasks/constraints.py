"""What a planning or selection reply may be, as JSON schemas for an endpoint and as grammars for constrained
decoding: one home for both, used by planning, selection, the embedded controller and any stage that re-plans.

**Plans.** :class:`PlanContract` is the whole plan contract of one request: task types from the task table (those
runnable here), ids 0..n-1 in order, ``dep`` holding only earlier ids (or ``[-1]``), the argument names of each
task type with every required one present, a ``<GENERATED>-k`` only to a node in ``dep`` that produces the
argument's modality, and files only among the request's inputs. An endpoint gets :func:`plan_schema`, the strongest
JSON schema that says part of it (an enum of task types, the argument names of each through ``anyOf``); the schema
also carries the contract under :data:`CONTRACT_KEY`, which the embedded controller reads (and an endpoint never
sees: :func:`for_endpoint`). What depends on position (ids, dependencies, references to earlier nodes' outputs)
is no JSON schema: :class:`PlanSteps` writes the reply as a sequence of Lark grammars for llguidance, one per
piece (the opening and a node's head up to its ``dep``; then its ``args``; ...), each built knowing the pieces
decoded before it and the tokens left, so that the reply is a valid plan and closes within the token limit.

**Selection.** :func:`selection_schema`: one choice per node, in order, each with its own candidates as an enum.

:func:`worst_case_bytes` and :func:`fit_strings` size a schema's free strings so a reply closes within a
number of tokens (a token is at least one byte).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.schemas import GENERATED_PREFIX
from tasks.task_types import FILE_MODALITIES, TASK_TYPES, Modality, TaskType

#: The key of a plan schema that carries its :class:`PlanContract` (JSON Schema ignores unknown keywords; an
#: endpoint is sent the schema without it).
CONTRACT_KEY = "x-hugginggpt-plan-contract"

Layout = Literal["tasks", "list"]

#: A JSON string of at most this many bytes per character, escapes included (``\\uXXXX``).
BYTES_PER_CHAR = 6
#: Bytes kept for closing a plan (``]}``) and the end-of-sequence token.
_CLOSING = 4
#: The shortest literal text a node may be given room for.
MIN_TEXT = 8


class PlanContract(BaseModel):
    """The rules a plan reply must follow for one request (see the module doc)."""

    model_config = ConfigDict(frozen=True)

    allowed: tuple[str, ...] = Field(description="task types the plan may use")
    inputs: tuple[str, ...] = Field(default=(), description="files the request gave, the only literal files")
    max_nodes: int = Field(default=8, ge=0, le=64)
    max_text: int = Field(default=300, ge=1, description="characters of a literal text argument, at most")
    layout: Layout = Field(
        default="tasks", description="'tasks': {\"tasks\": [...]} (ours); 'list': a bare list, HuggingGPT's keys"
    )


# ---------------------------------------------------------------------------
# JSON schemas
# ---------------------------------------------------------------------------
def _node_schema(task: TaskType, inputs: Sequence[str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for spec in task.args:
        value: dict[str, Any] = {"type": "string"}
        if spec.modality in FILE_MODALITIES and inputs:
            value = {"anyOf": [{"enum": list(inputs)}, {"type": "string", "pattern": r"^<GENERATED>-[0-9]+$"}]}
        elif spec.modality in FILE_MODALITIES:
            value = {"type": "string", "pattern": r"^<GENERATED>-[0-9]+$"}
        args[spec.name] = value
    return {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 0},
            "task": {"const": task.name},
            "dep": {"type": "array", "items": {"type": "integer", "minimum": -1}},
            "args": {
                "type": "object",
                "properties": args,
                "required": [a.name for a in task.required_args],
                "additionalProperties": False,
            },
        },
        "required": ["id", "task", "dep", "args"],
        "additionalProperties": False,
    }


def plan_schema(
    allowed: Iterable[str],
    inputs: Sequence[str] = (),
    *,
    max_nodes: int = 8,
    layout: Layout = "tasks",
) -> dict[str, Any]:
    """The JSON schema of a plan for ``allowed`` task types and the request's ``inputs``: ``task`` one of them,
    each task's arguments by name (required ones required, no others), file arguments an input or a
    ``<GENERATED>-k``; with the :class:`PlanContract` under :data:`CONTRACT_KEY` for the embedded controller.
    ``layout='list'`` is a bare list (HuggingGPT's reply format)."""
    allowed = tuple(t for t in TASK_TYPES if t in set(allowed))
    contract = PlanContract(allowed=allowed, inputs=tuple(inputs), max_nodes=max_nodes, layout=layout)
    nodes = {
        "type": "array",
        "maxItems": max_nodes,
        "items": {"anyOf": [_node_schema(TASK_TYPES[t], inputs) for t in allowed]},
    }
    if layout == "list":
        schema: dict[str, Any] = dict(nodes)
    else:
        schema = {
            "type": "object",
            "properties": {"tasks": nodes},
            "required": ["tasks"],
            "additionalProperties": False,
        }
    schema[CONTRACT_KEY] = contract.model_dump(mode="json")
    return schema


def contract_only(
    allowed: Iterable[str], inputs: Sequence[str] = (), *, max_nodes: int = 8, layout: Layout = "list"
) -> dict[str, Any]:
    """A "schema" holding only the contract: the embedded controller decodes to it, an endpoint is asked for no
    JSON schema (HuggingGPT's prompt style asks for none)."""
    allowed = tuple(t for t in TASK_TYPES if t in set(allowed))
    contract = PlanContract(allowed=allowed, inputs=tuple(inputs), max_nodes=max_nodes, layout=layout)
    return {CONTRACT_KEY: contract.model_dump(mode="json")}


def contract_of(schema: Mapping[str, Any] | None) -> PlanContract | None:
    """The :class:`PlanContract` a schema carries, if any."""
    if not schema or CONTRACT_KEY not in schema:
        return None
    return PlanContract.model_validate(schema[CONTRACT_KEY])


def for_endpoint(schema: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The schema as an endpoint is sent it: without the contract; ``None`` when nothing else is left."""
    if schema is None:
        return None
    rest = {k: v for k, v in schema.items() if k != CONTRACT_KEY}
    return rest or None


def selection_schema(pending: Sequence[tuple[int, Sequence[str]]], *, max_reason: int = 200) -> dict[str, Any]:
    """The selection reply for ``pending`` (node id, candidate model ids): one choice per node, in order, its
    ``model`` one of that node's candidates."""
    choices = [
        {
            "type": "object",
            "properties": {
                "id": {"const": node_id},
                "model": {"enum": list(candidates)},
                "reason": {"type": "string", "maxLength": max_reason},
            },
            "required": ["id", "model", "reason"],
            "additionalProperties": False,
        }
        for node_id, candidates in pending
    ]
    return {
        "type": "object",
        "properties": {
            "choices": {
                "type": "array",
                "prefixItems": choices,
                "items": False,
                "minItems": len(choices),
                "maxItems": len(choices),
            }
        },
        "required": ["choices"],
        "additionalProperties": False,
    }


def worst_case_bytes(schema: Any) -> int:
    """An upper bound of the bytes of a compact JSON value matching ``schema`` (with at most two bytes of
    whitespace around each separator), for the bounded schemas of this module; 10**9 when unbounded."""
    unbounded = 10**9
    if schema is True or schema is None or not isinstance(schema, Mapping):
        return unbounded
    if "const" in schema:
        return len(json.dumps(schema["const"]).encode())
    if "enum" in schema:
        return max(len(json.dumps(v).encode()) for v in schema["enum"])
    if "anyOf" in schema:
        return max(worst_case_bytes(s) for s in schema["anyOf"])
    kind = schema.get("type")
    if kind == "string":
        if "maxLength" not in schema:
            return unbounded
        return 2 + BYTES_PER_CHAR * int(schema["maxLength"])
    if kind == "integer":
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if lo is None or hi is None:
            return unbounded
        return max(len(str(lo)), len(str(hi)))
    if kind == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties", True) is not False:
            return unbounded
        return 2 + sum(len(json.dumps(k).encode()) + 3 + worst_case_bytes(v) + 3 for k, v in props.items())
    if kind == "array":
        items = list(schema.get("prefixItems", []))
        total = 2 + sum(worst_case_bytes(s) + 3 for s in items)
        extra = schema.get("items", True)
        if extra is False:
            return total
        more = int(schema.get("maxItems", -1)) - len(items)
        if more < 0:
            return unbounded
        return total + more * (worst_case_bytes(extra) + 3)
    return unbounded


def fit_strings(schema: dict[str, Any], budget: int, *, cap: int) -> dict[str, Any]:
    """``schema`` with every free string's ``maxLength`` lowered (to at most ``cap``) so that a reply fits in
    ``budget`` bytes, or as low as 0 when nothing fits."""

    def with_limit(node: Any, limit: int) -> Any:
        if isinstance(node, list):
            return [with_limit(n, limit) for n in node]
        if not isinstance(node, dict):
            return node
        out = {k: with_limit(v, limit) for k, v in node.items()}
        if out.get("type") == "string" and "enum" not in out and "const" not in out and "pattern" not in out:
            out["maxLength"] = min(int(node.get("maxLength", cap)), limit)
        return out

    lo, hi = 0, cap
    if worst_case_bytes(with_limit(schema, lo)) > budget:
        return with_limit(schema, 0)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if worst_case_bytes(with_limit(schema, mid)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return with_limit(schema, lo)


# ---------------------------------------------------------------------------
# the plan as a sequence of grammars
# ---------------------------------------------------------------------------
def _lit(text: str) -> str:
    """A Lark string literal for ``text``."""
    return json.dumps(text, ensure_ascii=False)


def _text_regex(max_chars: int) -> str:
    """A JSON string of 1 to ``max_chars`` characters, the first not blank, none a ``<`` (so that no
    ``<GENERATED>`` can be spelled in free text), escapes other than ``\\u``."""
    char = r'(?:[^"\\<\x00-\x1f]|\\["\\\/bfnrt])'
    first = r'[^"\\<\x00-\x20]'
    return f'/"{first}{char}{{0,{max(max_chars - 1, 0)}}}"/'


_HEAD_RE = re.compile(r'"task": "([a-z0-9-]+)", (?:"id": \d+, )?"dep": \[([-0-9, ]*)\]$')


class PlanSteps:
    """Decodes one plan reply to a :class:`PlanContract`, piece by piece (see the module doc).

    :meth:`grammar` gives the Lark grammar of the next piece for the bytes (tokens) left; the decoder calls
    :meth:`advance` with the text of each piece once the grammar is complete, until it returns ``False`` (the plan
    is closed). Pieces: the opening with node 0's head or the closing; node k's ``args`` and the end of the node;
    ``, `` with node k+1's head, or the closing.
    """

    def __init__(self, contract: PlanContract) -> None:
        self.contract = contract
        self.tasks: list[str] = []
        self.pending: tuple[str, list[int]] | None = None  # a node whose head is written, its args not yet
        self.closed = False
        allowed = set(contract.allowed)
        self._allowed = [TASK_TYPES[t] for t in TASK_TYPES if t in allowed]

    # --- state ---------------------------------------------------------------
    def advance(self, piece: str) -> bool:
        """Record the piece just decoded; ``False`` once the plan is closed."""
        if self.pending is not None:
            task, _ = self.pending
            self.tasks.append(task)
            self.pending = None
            return True
        match = _HEAD_RE.search(piece)
        if match is None:
            self.closed = True
            return False
        deps = [int(d) for d in match.group(2).split(",") if d.strip() and int(d) >= 0]
        self.pending = (match.group(1), deps)
        return True

    # --- grammars ------------------------------------------------------------
    def grammar(self, budget: int) -> str:
        """The Lark grammar of the next piece, for ``budget`` bytes left (tokens left: a token is at least a
        byte)."""
        if self.pending is not None:
            return self._args_grammar(*self.pending, budget)
        return self._head_grammar(budget)

    def _producers(self, modality: Modality) -> list[int]:
        return [i for i, t in enumerate(self.tasks) if TASK_TYPES[t].produces(modality)]

    def _needs(self, task: TaskType) -> Modality | None:
        """The file modality a dependency must produce for ``task``: its required file argument's, when the
        request gave no file."""
        if self.contract.inputs:
            return None
        return next((a.modality for a in task.required_args if a.modality in FILE_MODALITIES), None)

    def _head_grammar(self, budget: int) -> str:
        k = len(self.tasks)
        tasks_layout = self.contract.layout == "tasks"
        opening = '{"tasks": [' if tasks_layout else "["
        closing = "]}" if tasks_layout else "]"
        lead = opening if k == 0 else ", "
        rules: list[str] = []
        alternatives: list[str] = []
        if k < self.contract.max_nodes:
            for task in self._allowed:
                needed = self._needs(task)
                producers = self._producers(needed) if needed is not None else []
                if needed is not None and not producers:
                    continue  # nothing this node could take its file from
                head = f'{{"id": {k}, "task": "{task.name}", "dep": '
                if not tasks_layout:
                    head = f'{{"task": "{task.name}", "id": {k}, "dep": '
                cost = len(lead) + len(head) + 4 * k + 2 + self._args_cost(task) + len(closing) + _CLOSING
                if cost > budget:
                    continue
                dep_rule = self._dep_rules(k, producers if needed is not None else None, rules)
                alternatives.append(f"{_lit(lead + head)} {dep_rule}")
        if k == 0:
            alternatives.append(_lit(opening + closing))
        else:
            alternatives.append(_lit(closing))
        return "start: " + " | ".join(alternatives) + "\n" + "\n".join(dict.fromkeys(rules))

    def _dep_rules(self, k: int, producers: list[int] | None, rules: list[str]) -> str:
        """The rule name of a ``dep`` for node k: ``[-1]`` or earlier ids in increasing order; with
        ``producers``, holding at least one of them."""
        if producers is None:
            name = f"dep{k}"
            if k == 0:
                rules.append(f'{name}: "[-1]"')
                return name
            for j in range(k):
                later = " | ".join(f"any{j2}_{k}" for j2 in range(j + 1, k))
                rules.append(f'any{j}_{k}: "{j}"' + (f' (", " ({later}))?' if later else ""))
            rules.append(f'{name}: "[-1]" | "[" ({" | ".join(f"any{j}_{k}" for j in range(k))}) "]"')
            return name
        last = max(producers)
        tag = "_".join(map(str, producers))
        name = f"need{k}_{tag}"
        for j in range(k):
            # sat{j}: j written and a producer already among the ids; want{j}: j written, none yet
            later_sat = " | ".join(f"sat{j2}_{k}_{tag}" for j2 in range(j + 1, k))
            rules.append(f'sat{j}_{k}_{tag}: "{j}"' + (f' (", " ({later_sat}))?' if later_sat else ""))
            if j < last:
                nexts = [
                    f"sat{j2}_{k}_{tag}" if j2 in producers else f"want{j2}_{k}_{tag}" for j2 in range(j + 1, last + 1)
                ]
                rules.append(f'want{j}_{k}_{tag}: "{j}" ", " ({" | ".join(nexts)})')
        firsts = [f"sat{j}_{k}_{tag}" if j in producers else f"want{j}_{k}_{tag}" for j in range(last + 1)]
        rules.append(f'{name}: "[" ({" | ".join(firsts)}) "]"')
        return name

    def _value_choices(self, modality: Modality, deps: Sequence[int]) -> list[str]:
        refs = [
            _lit(json.dumps(f"{GENERATED_PREFIX}{j}")) for j in deps if TASK_TYPES[self.tasks[j]].produces(modality)
        ]
        if modality in FILE_MODALITIES:
            return [_lit(json.dumps(i, ensure_ascii=False)) for i in self.contract.inputs] + refs
        return refs

    def _args_cost(self, task: TaskType) -> int:
        """Bytes of the args piece of ``task`` with the longest fixed choices and the shortest texts."""
        inputs = max((len(json.dumps(i, ensure_ascii=False).encode()) for i in self.contract.inputs), default=0)
        ref = len(GENERATED_PREFIX) + 2 + 2
        cost = len(', "args": {') + 2
        for spec in task.args:
            cost += len(spec.name) + 6
            if spec.modality in FILE_MODALITIES:
                cost += max(inputs, ref)
            elif spec.required:
                cost += max(2 + BYTES_PER_CHAR * MIN_TEXT, ref)
        return cost

    def _args_grammar(self, name: str, deps: list[int], budget: int) -> str:
        task = TASK_TYPES[name]
        texts = [a for a in task.args if a.modality not in FILE_MODALITIES]
        fixed = self._args_cost(task) - sum(2 + BYTES_PER_CHAR * MIN_TEXT for a in texts if a.required)
        spare = budget - fixed - _CLOSING - 4
        per_text = spare // (BYTES_PER_CHAR * max(len(texts), 1))
        max_chars = max(1, min(self.contract.max_text, per_text))
        rules = [f"TEXT: {_text_regex(max_chars)}"]
        parts: list[str] = []
        for spec in task.args:
            choices = self._value_choices(spec.modality, deps)
            if spec.modality not in FILE_MODALITIES:
                choices.append("TEXT")
            if not choices:
                continue  # an optional file argument with nothing to name
            pair = f"{_lit(json.dumps(spec.name) + ': ')} ({' | '.join(choices)})"
            if not parts:
                parts.append(pair if spec.required else f"({pair})?")
            else:
                sep = _lit(", ")
                parts.append(f"{sep} {pair}" if spec.required else f"({sep} {pair})?")
        body = " ".join(parts)
        opening = _lit(', "args": {')
        return f"start: {opening} {body} {_lit('}}')}\n" + "\n".join(rules)
