"""Stage 4, response: the LLM answers from the results; a deterministic answer when it cannot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cache
from importlib import resources

from prefect import task
from prefect.cache_policies import NO_CACHE

from tasks.llm import ChatModel, LLMError
from tasks.schemas import Assignment, ChatTurn, NodeResult, PlanNode, ResponseResult, bounded_history
from tasks.services import services_for
from tasks.settings import Settings


@cache
def _system_prompt() -> str:
    return resources.files("tasks.prompts").joinpath("respond_system.txt").read_text(encoding="utf-8")


def results_digest(
    nodes: Sequence[PlanNode], assignments: Sequence[Assignment], results: Sequence[NodeResult]
) -> list[dict]:
    """What the LLM (and the fallback) is told about each node."""
    by_node = {a.node_id: a for a in assignments}
    by_result = {r.id: r for r in results}
    digest = []
    for node in nodes:
        a = by_node.get(node.id)
        r = by_result.get(node.id)
        digest.append(
            {
                "id": node.id,
                "task": node.task,
                "args": node.args,
                "model": a.model if a else None,
                "why this model": a.reason if a else None,
                "status": r.status if r else "not run",
                "outputs": r.outputs if r else {},
                "error": r.error if r else None,
            }
        )
        if r is not None and r.round:  # planned by a replan after earlier tasks failed
            digest[-1]["round"] = r.round
    return digest


def build_response_messages(request: str, digest: list[dict], history: Sequence[ChatTurn] = ()) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": _system_prompt()}]
    messages += [{"role": t.role, "content": t.content} for t in bounded_history(history)]
    if digest:
        body = f"Request: {request}\nResults:\n{json.dumps(digest, ensure_ascii=False, indent=1)}"
    else:
        body = f"Request: {request}\nNo model was needed: answer the request directly."
    messages.append({"role": "user", "content": body})
    return messages


def fallback_answer(request: str, digest: list[dict]) -> str:
    """An answer built from the results alone: what ran, with which model, and what came out."""
    if not digest:
        return f"I could not reach the language model to answer {request!r}, and no model task was planned."
    done = [d for d in digest if d["status"] == "completed"]
    lines = [f"Here is what I found for your request ({len(done)} of {len(digest)} tasks completed):", ""]
    for d in digest:
        head = f"- {d['task']}#{d['id']}"
        if d["model"]:
            head += f" with {d['model']}"
        if d["status"] == "completed":
            outs = "; ".join(f"{k}: {v}" for k, v in d["outputs"].items()) or "no output"
            lines.append(f"{head}: {outs}")
        else:
            lines.append(f"{head}: {d['status']} ({d['error']})")
    return "\n".join(lines)


def respond(
    llm: ChatModel,
    request: str,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Assignment],
    results: Sequence[NodeResult],
    history: Sequence[ChatTurn] = (),
) -> ResponseResult:
    digest = results_digest(nodes, assignments, results)
    try:
        answer, usage = llm.chat(build_response_messages(request, digest, history), stage="respond", temperature=0.2)
    except LLMError as exc:
        return ResponseResult(
            answer=fallback_answer(request, digest), source="fallback", error=str(exc), usage=exc.usage
        )
    if not answer.strip():
        return ResponseResult(
            answer=fallback_answer(request, digest),
            source="fallback",
            error="the LLM returned an empty answer",
            usage=usage,
        )
    return ResponseResult(answer=answer.strip(), source="llm" if digest else "direct", usage=usage)


@task(name="respond", cache_policy=NO_CACHE)
def respond_task(
    settings: Settings,
    request: str,
    nodes: list[PlanNode],
    assignments: list[Assignment],
    results: list[NodeResult],
    history: list[ChatTurn],
) -> ResponseResult:
    """Prefect task: stage 4, with the run's chat model (:func:`tasks.services.services_for`)."""
    return respond(services_for(settings).chat_model, request, nodes, assignments, results, history)
