"""Plan sharing in a batch: lines whose request texts agree once their inputs are abstracted (``Caption
photo1.jpg`` and ``Caption photo2.jpg``, both given one image) are planned once, and the others reuse that plan
with their own inputs (:func:`adapt_plan`, validated against each line). Plain Python over pydantic models."""

from __future__ import annotations

import mimetypes
import posixpath
import re
from collections.abc import Sequence
from typing import Any

from tasks.batch_lines import BatchLine, ParsedLine
from tasks.plan_rules import validate_plan
from tasks.schemas import PlanNode
from tasks.task_types import TASK_TYPES


def basename(path: str) -> str:
    return posixpath.basename(path.replace("\\", "/").rstrip("/"))


def _input_pattern(inputs: Sequence[str]) -> tuple[re.Pattern[str] | None, dict[str, tuple[int, bool]]]:
    """A regex matching each input as given or by its base name (longest first), and what each match means."""
    meaning: dict[str, tuple[int, bool]] = {}
    for i, given in enumerate(inputs):
        for text, whole in ((given, True), (basename(given), False)):
            if text and text not in meaning:
                meaning[text] = (i, whole)
    if not meaning:
        return None, meaning
    alternatives = sorted(meaning, key=len, reverse=True)
    return re.compile("|".join(re.escape(a) for a in alternatives)), meaning


def abstract_inputs(text: str, inputs: Sequence[str]) -> str:
    """``text`` with each input (as given, or its base name) replaced by ``<INPUT-i>``."""
    pattern, meaning = _input_pattern(inputs)
    if pattern is None:
        return text
    return pattern.sub(lambda m: f"<INPUT-{meaning[m.group(0)][0]}>", text)


def _input_kind(path: str) -> str:
    kind, _ = mimetypes.guess_type(basename(path))
    if kind:
        return kind.split("/", 1)[0]
    return posixpath.splitext(basename(path))[1].lower() or "file"


def plan_key(spec: BatchLine) -> tuple[str, tuple[str, ...]]:
    """What a plan depends on: the request text with its inputs abstracted, and the kind of each input."""
    return abstract_inputs(spec.request.strip(), spec.inputs), tuple(_input_kind(p) for p in spec.inputs)


def adapt_plan(
    nodes: Sequence[PlanNode], from_inputs: Sequence[str], to_inputs: Sequence[str], request: str
) -> list[PlanNode]:
    """A plan made for one line's inputs, rewritten for another's: each argument naming input i (as given or
    by base name) names the other line's input i instead; then validated against that line."""
    pattern, meaning = _input_pattern(from_inputs)

    def swap(match: re.Match[str]) -> str:
        i, whole = meaning[match.group(0)]
        if i >= len(to_inputs):
            return match.group(0)
        return to_inputs[i] if whole else basename(to_inputs[i])

    raw: list[dict[str, Any]] = []
    for node in nodes:
        args = {}
        for name, value in node.args.items():
            if value in from_inputs and from_inputs.index(value) < len(to_inputs):
                args[name] = to_inputs[from_inputs.index(value)]
            else:
                args[name] = pattern.sub(swap, value) if pattern is not None else value
        raw.append({"id": node.id, "task": node.task, "dep": list(node.dep), "args": args})
    adapted, _ = validate_plan(raw, inputs=to_inputs, request=request, allowed=TASK_TYPES)
    return adapted


def plan_groups(parsed: Sequence[ParsedLine]) -> dict[tuple[str, tuple[str, ...]], list[int]]:
    """Positions (in ``parsed``) of the lines to be planned by the LLM, grouped by :func:`plan_key`."""
    groups: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for pos, p in enumerate(parsed):
        if p.valid and p.spec is not None and p.plan is None:
            groups.setdefault(plan_key(p.spec), []).append(pos)
    return groups
