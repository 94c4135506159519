"""The cores of streaming and replanning: the incremental plan parser, a plan validated as it streams, streamed
chat replies (scripted server, in-process function), and the replanning call's validation."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tasks.llm import FunctionModel, LLMClient, LLMError
from tasks.parsing import PlanStreamParser
from tasks.plan import PlanValidationError, StreamedPlan, plan_request_streamed
from tasks.replan import needs_replan, replan_request, validate_replan
from tasks.schemas import NodeResult, PlanNode
from tasks.settings import Settings
from tests.llm_server import ScriptedLLM, pieces, plan_json

TEXT = ["text-classification", "summarization", "translation", "text-to-speech", "image-to-text"]


def _feed_by_char(parser: PlanStreamParser, text: str) -> list[tuple[int, object]]:
    """(position of the character that handed a task out, the task)."""
    out = []
    for pos, ch in enumerate(text):
        out += [(pos, node) for node in parser.feed(ch)]
    return out


def test_each_task_is_handed_out_when_its_object_closes() -> None:
    nodes = [
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": 'a "quoted" {brace} and ]bracket['}},
        {"id": 1, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]
    text = "Here is the plan:\n```json\n" + json.dumps({"tasks": nodes}) + "\n```\nHope it helps {not json}"
    got = _feed_by_char(PlanStreamParser(), text)
    assert [node for _, node in got] == nodes
    closes = [text.index('"}}') + 2, text.index('"}}', text.index('"}}') + 3) + 2]
    assert [pos for pos, _ in got] == closes  # not a character later


@pytest.mark.parametrize(
    "reply",
    [
        '[{"id": 0, "task": "a"}, {"id": 1, "task": "b"}]',
        '{"thoughts": ["x", {"id": 9}], "plan": [{"id": 0, "task": "a"}, {"id": 1, "task": "b"}]}',
        'prose [see below] first {"nodes": [{"id": 0, "task": "a"}, {"id": 1, "task": "b"}]}',
    ],
)
def test_the_task_list_is_found_in_the_shapes_a_plan_comes_in(reply: str) -> None:
    parser = PlanStreamParser()
    got = [node for part in pieces(reply) for node in parser.feed(part)]
    assert got == [{"id": 0, "task": "a"}, {"id": 1, "task": "b"}]
    assert parser.done


def test_the_parser_stops_at_a_task_that_is_not_json_and_past_its_bounds() -> None:
    parser = PlanStreamParser()
    assert parser.feed('{"tasks": [{"id": 0, "task": "a"}, {"id": 1, "task": 01}, {"id": 2}]}') == [
        {"id": 0, "task": "a"}
    ]
    assert parser.stopped and "not JSON" in parser.stopped
    small = PlanStreamParser(limit=20)
    assert small.feed('[{"id": 0, "task": "summarization"}]') == [] and "longer than 20" in (small.stopped or "")
    deep = PlanStreamParser()
    assert deep.feed('{"tasks": [' + "[" * 80) == [] and "deep" in (deep.stopped or "")


def test_a_streamed_plan_hands_out_tasks_once_what_they_use_has_arrived() -> None:
    streamed = StreamedPlan(allowed=TEXT)
    nodes = [
        {"id": 1, "task": "Translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},  # before its dependency
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "a long text"}},
        {"id": 2, "task": "text-classification", "dep": [-1], "args": {"text": "so good"}},
    ]
    text = json.dumps({"tasks": nodes})
    handed: list[list[int]] = []
    for part in pieces(text):
        ready = streamed.feed(part)
        if ready:
            handed.append([n.id for n in ready])
    assert handed == [[0, 1], [2]]
    assert streamed.accepted[1].task == "translation"  # validated: the name is normalised
    whole, repairs = streamed.finish(text)
    assert [n.id for n in whole] == [0, 1, 2] and "read as 'translation'" in repairs[0]


def test_a_streamed_plan_stops_at_an_invalid_task_and_its_end_is_checked_against_what_was_handed_out() -> None:
    streamed = StreamedPlan(allowed=TEXT)
    text = plan_json(
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "x"}},
        {"id": 1, "task": "no-such-task", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        {"id": 2, "task": "summarization", "dep": [-1], "args": {"text": "y"}},
    )
    ready = [n.id for part in pieces(text) for n in streamed.feed(part)]
    assert ready == [0] and "unknown task type 'no-such-task'" in str(streamed.problem)
    with pytest.raises(PlanValidationError, match="no-such-task"):
        streamed.finish()

    other = StreamedPlan(allowed=TEXT)
    other.feed(plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "x"}}))
    with pytest.raises(PlanValidationError, match="read one way while the reply streamed and another at its end"):
        other.finish(plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "changed"}}))


def _stream(answer: list[str]) -> Iterator[str]:
    yield from answer


def test_streamed_planning_hands_out_tasks_as_the_reply_arrives_and_re_asks_when_nothing_was_handed_out() -> None:
    good = plan_json(
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "x"}},
        {"id": 1, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    )
    seen: list[tuple[int, int]] = []  # (task id, pieces sent when it was handed out)
    sent = [0]

    def reply(call: object) -> Iterator[str]:
        for part in pieces(good):
            sent[0] += 1
            yield part

    result = plan_request_streamed(
        FunctionModel(reply), "go", lambda node: seen.append((node.id, sent[0])), allowed=TEXT
    )
    assert [n.id for n in result.nodes] == [0, 1] and result.attempts == 1
    assert seen[0][0] == 0 and seen[0][1] < len(pieces(good)) // 2 + 2  # the first task before half the reply

    replies = iter(["not a plan", good])
    bad_then_good = FunctionModel(lambda call: next(replies))
    result = plan_request_streamed(bad_then_good, "go", lambda node: None, allowed=TEXT)
    assert result.attempts == 2 and len(bad_then_good.calls) == 2 and result.usage.calls == 2
    assert "That plan is invalid" in bad_then_good.calls[-1].messages[-1]["content"]


@pytest.fixture
def scripted() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()


def test_the_openai_client_streams_and_falls_back_when_the_server_does_not(scripted: ScriptedLLM) -> None:
    reply = plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "a b c"}})
    scripted.set(plan=reply)
    client = LLMClient(Settings(openai_base_url=scripted.base_url, openai_api_key="sk-x", llm_max_retries=0))
    got: list[str] = []
    text, usage = client.stream([{"role": "user", "content": "go"}], on_text=got.append, stage="plan")
    assert text == reply and got == pieces(reply) and len(got) > 5
    assert usage.calls == 1 and usage.completion_tokens == len(reply.split())
    assert scripted.streamed["plan"] == 1 and scripted.requests[-1]["stream"] is True

    scripted.streams = False  # a server that answers a stream request with one completion
    got.clear()
    text, usage = client.stream([{"role": "user", "content": "go"}], on_text=got.append, stage="plan")
    assert text == reply and got == [reply] and usage.calls == 1
    client.stream([{"role": "user", "content": "go"}], on_text=got.append, stage="plan")
    assert "stream" not in scripted.requests[-1]  # not asked to stream again
    assert scripted.calls["plan"] == 3


def test_a_function_model_streams_the_pieces_it_yields() -> None:
    model = FunctionModel(lambda call: _stream(["{", '"a"', ": 1}"]) if call.stage == "plan" else "whole")
    got: list[str] = []
    assert model.stream([], on_text=got.append, stage="plan")[0] == '{"a": 1}' and got == ["{", '"a"', ": 1}"]
    got.clear()
    assert model.stream([], on_text=got.append, stage="respond")[0] == "whole" and got == ["whole"]
    assert model.chat([], stage="plan")[0] == '{"a": 1}'


# ---------------------------------------------------------------------------
# replanning
# ---------------------------------------------------------------------------
EARLIER = [
    PlanNode(id=0, task="summarization", args={"text": "a long text"}),
    PlanNode(id=1, task="text-to-speech", dep=[0], args={"text": "<GENERATED>-0"}),
    PlanNode(id=2, task="translation", dep=[1], args={"text": "never"}),
]
RESULTS = [
    NodeResult(id=0, task="summarization", status="completed", outputs={"text": "short"}),
    NodeResult(id=1, task="text-to-speech", status="failed", error="the speech model broke"),
    NodeResult(id=2, task="translation", status="skipped", error="upstream failed"),
]


def test_new_tasks_may_use_completed_ones_and_nothing_else() -> None:
    new, _ = validate_replan(
        [{"id": 3, "task": "text-classification", "dep": [-1], "args": {"text": "<GENERATED>-0"}}],
        EARLIER,
        RESULTS,
        allowed=TEXT,
    )
    assert new == [PlanNode(id=3, task="text-classification", dep=[0], args={"text": "<GENERATED>-0"})]
    with pytest.raises(PlanValidationError) as err:
        validate_replan(
            [
                {"id": 1, "task": "summarization", "args": {"text": "x"}},
                {"id": 4, "task": "translation", "dep": [2], "args": {"text": "<GENERATED>-1"}},
            ],
            EARLIER,
            RESULTS,
            allowed=TEXT,
        )
    assert err.value.problems == [
        "task 1: id 1 is already taken; new tasks continue from 3",
        "task 4 uses task 1, which failed: it has no output to use",
        "task 4 uses task 2, which skipped: it has no output to use",
    ]
    with pytest.raises(PlanValidationError, match=r"needs image but task 0 \(summarization\) produces text"):
        validate_replan(
            [{"id": 3, "task": "image-to-text", "args": {"image": "<GENERATED>-0"}}], EARLIER, RESULTS, allowed=TEXT
        )


def test_the_replanning_call_is_told_what_happened_and_its_failures_are_recorded() -> None:
    model = FunctionModel(
        lambda call: plan_json({"id": 3, "task": "text-classification", "dep": [0], "args": {"text": "<GENERATED>-0"}})
    )
    record, new = replan_request(model, "Read the summary aloud", EARLIER, [], RESULTS, round=1, allowed=TEXT)
    assert [n.id for n in new] == [3] and record.tasks == [3] and record.after == [1, 2] and record.error is None
    (call,) = model.stage_calls("replan")
    told = call.messages[-1]["content"]
    assert '"short"' in told and "the speech model broke" in told and "from id 3 on" in told
    assert "from 3 on" in call.messages[0]["content"]

    def broken(call: object) -> str:
        raise LLMError("the server is down")

    record, new = replan_request(FunctionModel(broken), "r", EARLIER, [], RESULTS, round=1, allowed=TEXT)
    assert new == [] and "the server is down" in (record.error or "") and record.usage.calls == 1
    record, new = replan_request(
        FunctionModel(lambda call: '{"tasks": [{"id": 0, "task": "summarization"}]}'),
        "r",
        EARLIER,
        [],
        RESULTS,
        round=1,
        allowed=TEXT,
    )
    assert new == [] and "id 0 is already taken" in (record.error or "")
    assert needs_replan(RESULTS) == [1, 2]
    assert needs_replan([*RESULTS, NodeResult(id=3, task="summarization", status="completed", round=1)]) == []
