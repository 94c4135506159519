from __future__ import annotations

from tasks.experts.base import ModelSpec
from tasks.llm import LLMClient
from tasks.respond import respond
from tasks.schemas import Assignment, NodeResult, PlanNode
from tasks.settings import Settings
from tests.llm_server import HTTPFault

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


def test_llm_answers_from_the_results(llm) -> None:
    llm.set(respond="The photo shows a cat.")
    result = respond(LLMClient(Settings()), "describe", NODES, ASSIGN, RESULTS)
    assert result.answer == "The photo shows a cat." and result.source == "llm"
    told = llm.requests[0]["messages"][-1]["content"]
    assert "a cat" in told and "model exploded" in told and "m/text-to-speech" in told


def test_fallback_answer_when_llm_fails(llm) -> None:
    llm.set(respond=HTTPFault(503, "overloaded"))
    result = respond(LLMClient(Settings()), "describe", NODES, ASSIGN, RESULTS)
    assert result.source == "fallback" and "503" in (result.error or "")
    assert "image-to-text#0 with m/image-to-text: text: a cat" in result.answer
    assert "text-to-speech#1 with m/text-to-speech: failed (model exploded)" in result.answer
    assert "1 of 2 tasks completed" in result.answer


def test_direct_answer_for_empty_plan(llm) -> None:
    llm.set(respond="Hello to you too!")
    result = respond(LLMClient(Settings()), "hi", [], [], [])
    assert result.source == "direct" and result.answer == "Hello to you too!"
    assert "answer the request directly" in llm.requests[0]["messages"][-1]["content"]
