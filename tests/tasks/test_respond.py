from __future__ import annotations

from tasks.experts.base import ModelSpec
from tasks.llm import ChatCall, FunctionModel, LLMError, scripted
from tasks.respond import respond
from tasks.schemas import Assignment, NodeResult, PlanNode

NODES = [
    PlanNode(id=0, task="image-to-text", args={"image": "photo.png"}),
    PlanNode(id=1, task="text-to-speech", dep=[0], args={"text": "<GENERATED>-0"}),
]
ASSIGN = [
    Assignment(
        node_id=n.id, task=n.task, model=f"m/{n.task}", reason="r", spec=ModelSpec(id=f"m/{n.task}", task=n.task)
    )
    for n in NODES
]
RESULTS = [
    NodeResult(id=0, task="image-to-text", model="m/image-to-text", status="completed", outputs={"text": "a cat"}),
    NodeResult(id=1, task="text-to-speech", model="m/text-to-speech", status="failed", error="model exploded"),
]


def test_llm_answers_from_the_results() -> None:
    model = FunctionModel(scripted(respond="The photo shows a cat."))
    result = respond(model, "describe", NODES, ASSIGN, RESULTS)
    assert result.answer == "The photo shows a cat." and result.source == "llm"
    assert result.usage.calls == 1 and result.usage.completion_tokens == 5
    (call,) = model.calls
    assert call.stage == "respond" and call.schema is None
    told = call.messages[-1]["content"]
    assert "a cat" in told and "model exploded" in told and "m/text-to-speech" in told


def _overloaded(call: ChatCall) -> str:
    raise LLMError("the LLM at http://127.0.0.1:1/v1 answered HTTP 503: overloaded")


def test_fallback_answer_when_llm_fails() -> None:
    result = respond(FunctionModel(_overloaded), "describe", NODES, ASSIGN, RESULTS)
    assert result.source == "fallback" and "503" in (result.error or "")
    assert "image-to-text#0 with m/image-to-text: text: a cat" in result.answer
    assert "text-to-speech#1 with m/text-to-speech: failed (model exploded)" in result.answer
    assert "1 of 2 tasks completed" in result.answer


def test_fallback_answer_when_the_reply_is_blank() -> None:
    result = respond(FunctionModel(scripted(respond="  \n")), "describe", NODES, ASSIGN, RESULTS)
    assert result.source == "fallback" and result.error == "the LLM returned an empty answer"
    assert result.usage.calls == 1


def test_direct_answer_for_empty_plan() -> None:
    model = FunctionModel(scripted(respond="Hello to you too!"))
    result = respond(model, "hi", [], [], [])
    assert result.source == "direct" and result.answer == "Hello to you too!"
    assert "answer the request directly" in model.calls[0].messages[-1]["content"]
