"""Chat history is bounded in characters as well as turns, wherever it goes: the chat session, the flow's
parameters, the planner's and the responder's prompts, and the message of an error."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from flows.chat import ChatSession
from flows.cli import main, prefect_api_hint
from tasks.plan import build_plan_messages
from tasks.respond import build_response_messages
from tasks.schemas import (
    MAX_HISTORY_CHARS,
    MAX_HISTORY_MESSAGE_CHARS,
    ChatTurn,
    RequestSpec,
    RunSummary,
    bounded_history,
)

HUGE = 2_000_000


def _size(history: list[ChatTurn]) -> int:
    return sum(len(t.content) for t in history)


def test_bounded_history_clips_long_messages_and_drops_the_oldest() -> None:
    history = [
        ChatTurn(role="user", content="first question"),
        ChatTurn(role="assistant", content="A" * HUGE),
        *[ChatTurn(role=r, content=f"{r} {n} " + "B" * 110_000) for n in range(5) for r in ("user", "assistant")],
        ChatTurn(role="user", content="last question"),
        ChatTurn(role="assistant", content="short answer"),
    ]
    bounded = bounded_history(history)
    assert _size(bounded) <= MAX_HISTORY_CHARS
    assert all(len(t.content) <= MAX_HISTORY_MESSAGE_CHARS for t in bounded)
    assert bounded[-2:] == history[-2:], "the most recent turn is kept whole"
    assert bounded[0].role == "user", "a history never starts with an answer whose question was left out"
    clipped = next(t for t in bounded if t.content.startswith("assistant 4"))
    assert clipped.content.endswith("more characters left out]")
    # a short history is kept as it is
    short = [ChatTurn(role="user", content="hi"), ChatTurn(role="assistant", content="hello")]
    assert bounded_history(short) == short


def test_planner_and_responder_prompts_carry_a_bounded_history() -> None:
    history = [ChatTurn(role="user", content="q"), ChatTurn(role="assistant", content="A" * HUGE)]
    plan_prompt = sum(len(m["content"]) for m in build_plan_messages("next", [], history, demos=[]))
    bare_plan = sum(len(m["content"]) for m in build_plan_messages("next", [], [], demos=[]))
    assert plan_prompt - bare_plan <= MAX_HISTORY_CHARS + 200
    response_prompt = sum(len(m["content"]) for m in build_response_messages("next", [], history))
    assert response_prompt - sum(len(m["content"]) for m in build_response_messages("next", [])) <= MAX_HISTORY_CHARS


def test_chat_session_sends_a_bounded_history() -> None:
    seen: list[list[ChatTurn]] = []

    def runner(spec: RequestSpec, tags: Any) -> Any:
        seen.append(spec.history)
        return RunSummary(request=spec.request, answer=("X" * HUGE) if spec.request.startswith("big") else "ok")

    session = ChatSession(history_turns=5, runner=runner)
    for n in range(6):
        session.ask(f"big {n}")
    session.ask("small")
    assert seen[0] == []
    for history in seen[1:]:
        assert 0 < _size(history) <= MAX_HISTORY_CHARS
        assert all(len(t.content) <= MAX_HISTORY_MESSAGE_CHARS for t in history)
    assert seen[-1][-2].content == "big 5" and seen[-1][-1].content.startswith("XXX")


def test_api_error_message_never_quotes_the_whole_request() -> None:
    message = prefect_api_hint(RuntimeError("Flow run parameters must be less than 524,288 bytes: " + "H" * HUGE))
    assert len(message) < 2000 and "Flow run parameters must be less than 524,288 bytes" in message


@pytest.mark.usefixtures("prefect_server")
def test_chat_goes_on_after_an_answer_of_two_million_characters(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    llm.set(respond=["A" * HUGE, "second answer", "third answer"])
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\nAnd again\nOnce more\n"))
    assert main(["chat", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    summaries = [json.loads(line) for line in captured.out.splitlines()]
    assert [s["status"] for s in summaries] == ["completed"] * 3
    assert [len(s["answer"]) for s in summaries] == [HUGE, len("second answer"), len("third answer")]
    assert len(captured.err) < 5000
    for stage in ("plan", "respond"):
        later = llm.stage_requests(stage)[1:]
        assert len(later) == 2
        for body in later:
            assert sum(len(m["content"]) for m in body["messages"]) < MAX_HISTORY_CHARS + 20_000
