"""Ways of prompting the planner, so that ``hugginggpt eval`` can compare them on the same LLM and data.

A :class:`PlanStyle` names a prompt (``ours``: ``tasks/prompts/plan_system.txt`` with the task table, the
format the request flow uses; ``hugginggpt``: a re-creation of HuggingGPT's planning prompt style in
``tasks/prompts/hugginggpt_plan.txt``) and the options measured on top of it: demos picked per request by
sentence-embedding similarity, the task table (arguments, outputs, descriptions) versus task names only, and
JSON-schema constrained output. :func:`plan_with_style` plans one request with a style, with the same
validate / re-ask-once loop as :func:`tasks.plan.plan_request`; the default style sends exactly the messages
:func:`tasks.plan.build_plan_messages` builds.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tasks.demos import (
    DEFAULT_EMBEDDING_MODEL,
    Demo,
    DemoSelector,
    Embedder,
    SimilarDemoSelector,
    default_embedding_model,
    demo_library,
    load_demo_file,
    load_embedder,
)
from tasks.llm import ChatModel
from tasks.plan import ask_for_plan, build_plan_messages, plan_reply_schema
from tasks.schemas import ChatTurn, PlanResult
from tasks.task_types import EXECUTABLE_TASKS

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "Demo",
    "DemoSelector",
    "Embedder",
    "PlanStyle",
    "SimilarDemoSelector",
    "build_style_messages",
    "default_embedding_model",
    "demo_pool",
    "fixed_demos",
    "load_embedder",
    "plan_with_style",
]

PromptName = Literal["ours", "hugginggpt"]
DemoMode = Literal["fixed", "similar"]

HUGGINGGPT_USER_TEMPLATE = (
    "The chat log [ {context} ] may hold the resources I refer to. My input now is {{ {request} }}. "
    "Watch the input and output types of the tasks and the dependencies between them."
)


class PlanStyle(BaseModel):
    """How the planner is prompted."""

    model_config = ConfigDict(frozen=True)

    prompt: PromptName = Field(default="ours", description="'ours' or 'hugginggpt' (HuggingGPT's prompt style)")
    demos: DemoMode = Field(
        default="fixed", description="'fixed': the prompt's own demos; 'similar': picked per request"
    )
    n_demos: int = Field(default=5, ge=1, description="demos shown when they are picked by similarity")
    task_table: bool = Field(
        default=True, description="ours: list each task's arguments, outputs and description (False: names only)"
    )
    json_schema: bool = Field(
        default=True, description="ours: ask for JSON-schema constrained output (HuggingGPT's style never does)"
    )

    @property
    def label(self) -> str:
        """A short name for reports and file names: ``ours``, ``ours+similar``, ``hugginggpt``, ..."""
        parts = [self.prompt]
        if self.demos == "similar":
            parts.append(f"similar{self.n_demos}")
        if self.prompt == "ours" and not self.task_table:
            parts.append("names")
        if self.prompt == "ours" and not self.json_schema:
            parts.append("noschema")
        return "+".join(parts)


def fixed_demos(prompt: PromptName) -> list[Demo]:
    """The demos a prompt shows when they are not picked per request."""
    return load_demo_file("plan_demos.json" if prompt == "ours" else "hugginggpt_demos.json")


def demo_pool() -> list[Demo]:
    """The demos to pick from by similarity: the demo library (:func:`tasks.demos.demo_library`: built-in and
    TaskBench's; the user's own are for ``run``)."""
    return demo_library()


@cache
def _prompt_file(name: str) -> str:
    return resources.files("tasks.prompts").joinpath(name).read_text(encoding="utf-8")


# ---------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------
def _hugginggpt_node(node: dict[str, Any]) -> dict[str, Any]:
    """A demo node in HuggingGPT's key order (task, id, dep, args)."""
    return {"task": node["task"], "id": node["id"], "dep": node.get("dep", [-1]) or [-1], "args": node.get("args", {})}


def _hugginggpt_request(request: str, inputs: Sequence[str]) -> str:
    """HuggingGPT takes files inside the request text; name the given ones that the text does not."""
    missing = [i for i in inputs if i not in request and Path(i).name not in request]
    return request if not missing else f"{request} (files: {', '.join(missing)})"


def _hugginggpt_messages(
    request: str,
    inputs: Sequence[str],
    history: Sequence[ChatTurn],
    allowed: Sequence[str],
    demos: Sequence[Demo],
) -> list[dict[str, str]]:
    names = ", ".join(json.dumps(name) for name in sorted(allowed))
    system = _prompt_file("hugginggpt_plan.txt").replace("{task_names}", names).strip()
    messages = [{"role": "system", "content": system}]
    for demo in demos:
        messages.append({"role": "user", "content": _hugginggpt_request(demo.request, demo.inputs)})
        messages.append({"role": "assistant", "content": json.dumps([_hugginggpt_node(n) for n in demo.plan])})
    context = json.dumps([{"role": t.role, "content": t.content} for t in history], ensure_ascii=False)[1:-1]
    content = HUGGINGGPT_USER_TEMPLATE.format(context=context, request=_hugginggpt_request(request, inputs))
    messages.append({"role": "user", "content": content})
    return messages


def build_style_messages(
    style: PlanStyle,
    request: str,
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    selector: DemoSelector | None = None,
) -> list[dict[str, str]]:
    """The planning messages for ``request`` in the given style.

    ``selector`` picks the demos when ``style.demos == "similar"`` (see :class:`SimilarDemoSelector`).
    """
    allowed = tuple(allowed)
    if style.demos == "similar":
        if selector is None:
            raise ValueError("demos='similar' needs a demo selector (SimilarDemoSelector)")
        demos = selector(request, style.n_demos)
    else:
        demos = fixed_demos(style.prompt)
    if style.prompt == "hugginggpt":
        return _hugginggpt_messages(request, inputs, history, allowed, demos)
    return build_plan_messages(
        request, inputs, history, allowed, demos=[d.model_dump() for d in demos], task_table=style.task_table
    )


# ---------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------
def plan_with_style(
    llm: ChatModel,
    request: str,
    *,
    style: PlanStyle = PlanStyle(),  # noqa: B008 - frozen model
    inputs: Sequence[str] = (),
    history: Sequence[ChatTurn] = (),
    allowed: Iterable[str] = EXECUTABLE_TASKS,
    selector: DemoSelector | None = None,
) -> PlanResult:
    """Plan one request in ``style``: ask, validate, re-ask once with the problems, then give up with them.

    The loop is :func:`tasks.plan.ask_for_plan`, as for :func:`tasks.plan.plan_request`; only the messages (and,
    for HuggingGPT's style, the reply format: a bare list, no JSON schema) differ.
    """
    allowed = tuple(allowed)
    messages = build_style_messages(style, request, inputs, history, allowed, selector)
    # the embedded controller decodes every style to the plan contract; an endpoint is asked for our JSON schema
    # only with our prompt (HuggingGPT's never asked for one)
    schema = plan_reply_schema(
        allowed,
        inputs,
        layout="tasks" if style.prompt == "ours" else "list",
        endpoint_schema=style.prompt == "ours" and style.json_schema,
    )
    correction = (
        'Reply with the corrected plan only, as {"tasks": [...]}.'
        if style.prompt == "ours"
        else "Reply with the corrected JSON list of tasks only."
    )
    return ask_for_plan(
        llm, messages, request=request, inputs=inputs, allowed=allowed, schema=schema, correction=correction
    )
