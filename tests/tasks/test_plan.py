from __future__ import annotations

import json

import pytest

from tasks.llm import ChatCall, FunctionModel, LLMClient, LLMError, extract_json, scripted
from tasks.plan import (
    PlanningError,
    PlanValidationError,
    build_plan_messages,
    parse_plan,
    plan_reply_schema,
    plan_request,
    validate_plan,
)
from tasks.schemas import ChatTurn
from tasks.settings import Settings
from tasks.task_types import EXECUTABLE_TASKS
from tests.llm_server import HTTPFault, plan_json

CHAIN = [
    {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.jpg"}},
    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
]


def _fake(*replies: str) -> FunctionModel:
    return FunctionModel(scripted(plan=list(replies)))


# --- tolerant parsing ---------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    [
        json.dumps(CHAIN),
        "```json\n" + json.dumps({"tasks": CHAIN}) + "\n```",
        "Sure! Here is the plan:\n" + json.dumps(CHAIN) + "\nLet me know if you need more.",
        json.dumps({"plan": CHAIN}),
    ],
)
def test_parse_plan_tolerates_fences_prose_and_wrappers(reply: str) -> None:
    assert parse_plan(reply) == CHAIN


def test_parse_plan_bare_object_is_one_node() -> None:
    assert parse_plan(json.dumps(CHAIN[0])) == [CHAIN[0]]


def test_parse_plan_not_json_names_the_problem() -> None:
    with pytest.raises(PlanValidationError, match="not JSON"):
        parse_plan("I would caption the image and then read it aloud.")


def test_extract_json_skips_broken_brackets() -> None:
    assert extract_json('[see below] {"a": 1}') == {"a": 1}


# --- validation --------------------------------------------------------------
def test_valid_chain_is_ordered_and_dep_minus_one_means_none() -> None:
    nodes, repairs = validate_plan(list(reversed(CHAIN)), inputs=["photo.jpg"])
    assert [n.id for n in nodes] == [0, 1]
    assert nodes[0].dep == [] and nodes[1].dep == [0]
    assert repairs == []


def test_empty_plan_is_valid() -> None:
    assert validate_plan([], inputs=[]) == ([], [])


def test_unknown_task_type_rejected() -> None:
    with pytest.raises(PlanValidationError, match="unknown task type 'image-to-poem'"):
        validate_plan([{"id": 0, "task": "image-to-poem", "dep": [-1], "args": {"image": "a.png"}}], inputs=["a.png"])


def test_task_name_spelling_repaired() -> None:
    nodes, repairs = validate_plan(
        [{"id": 0, "task": "Image_to_Text", "dep": [-1], "args": {"image": "a.png"}}], inputs=["a.png"]
    )
    assert nodes[0].task == "image-to-text"
    assert "read as 'image-to-text'" in repairs[0]


def test_dependency_on_missing_id_rejected() -> None:
    with pytest.raises(PlanValidationError, match="depends on task 7, which is not in the plan"):
        validate_plan([{"id": 0, "task": "summarization", "dep": [7], "args": {"text": "x"}}])


def test_cycle_rejected() -> None:
    plan = [
        {"id": 0, "task": "summarization", "dep": [1], "args": {"text": "<GENERATED>-1"}},
        {"id": 1, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]
    with pytest.raises(PlanValidationError, match="cycle among tasks 0, 1"):
        validate_plan(plan)


def test_generated_ref_missing_from_dep_is_added() -> None:
    plan = [
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "long text"}},
        {"id": 1, "task": "translation", "dep": [-1], "args": {"text": "<GENERATED>-0"}},
    ]
    nodes, repairs = validate_plan(plan)
    assert nodes[1].dep == [0]
    assert any("added task 0 to dep" in r for r in repairs)


def test_generated_ref_to_missing_node_rejected() -> None:
    with pytest.raises(PlanValidationError, match="there is no task 3"):
        validate_plan([{"id": 0, "task": "summarization", "dep": [], "args": {"text": "<GENERATED>-3"}}])


def test_generated_ref_of_wrong_modality_rejected() -> None:
    plan = [
        {"id": 0, "task": "translation", "dep": [-1], "args": {"text": "hello"}},
        {"id": 1, "task": "image-classification", "dep": [0], "args": {"image": "<GENERATED>-0"}},
    ]
    with pytest.raises(PlanValidationError, match="needs image but task 0 \\(translation\\) produces text"):
        validate_plan(plan)


def test_input_never_given_rejected() -> None:
    with pytest.raises(PlanValidationError, match="'/etc/passwd', which is not among the inputs given"):
        validate_plan(
            [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "/etc/passwd"}}],
            inputs=["photo.jpg"],
            request="classify photo.jpg",
        )


def test_input_by_base_name_repaired_to_given_path() -> None:
    nodes, repairs = validate_plan(
        [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "photo.jpg"}}],
        inputs=["/data/in/photo.jpg"],
    )
    assert nodes[0].args["image"] == "/data/in/photo.jpg"
    assert repairs


def test_missing_and_unknown_args_rejected() -> None:
    with pytest.raises(PlanValidationError) as info:
        validate_plan([{"id": 0, "task": "question-answering", "dep": [], "args": {"text": "who?", "img": "x"}}])
    text = str(info.value)
    assert "missing required argument 'context'" in text and "unknown argument 'img'" in text


def test_duplicate_ids_rejected() -> None:
    node = {"id": 0, "task": "summarization", "dep": [], "args": {"text": "a"}}
    with pytest.raises(PlanValidationError, match="id 0 is used twice"):
        validate_plan([node, node])


def test_embedded_generated_text_reference_allowed() -> None:
    plan = [
        {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "a.png"}},
        {"id": 1, "task": "text-generation", "dep": [0], "args": {"text": "Write a poem about <GENERATED>-0"}},
    ]
    nodes, _ = validate_plan(plan, inputs=["a.png"])
    assert nodes[1].dep == [0]


# --- the stage, with a stand-in model ----------------------------------------------
def test_plan_request_uses_demos_history_and_schema() -> None:
    model = _fake(plan_json(*CHAIN))
    history = [ChatTurn(role="user", content="earlier question"), ChatTurn(role="assistant", content="earlier answer")]
    result = plan_request(model, "Describe photo.jpg and read it aloud", inputs=["photo.jpg"], history=history)
    assert [n.task for n in result.nodes] == ["image-to-text", "text-to-speech"]
    assert result.usage.calls == 1 and result.usage.prompt_tokens > 0
    (call,) = model.calls
    assert call.stage == "plan" and call.schema == plan_reply_schema(EXECUTABLE_TASKS, ["photo.jpg"])
    contents = "\n".join(m["content"] for m in call.messages)
    assert "earlier question" in contents and "holiday.jpg" in contents  # history and a demo
    assert call.messages[-1]["content"].startswith("Request: Describe photo.jpg")


def test_plan_request_reasks_once_with_the_error() -> None:
    bad = plan_json({"id": 0, "task": "image-to-poem", "dep": [-1], "args": {"image": "photo.jpg"}})
    model = _fake(bad, plan_json(CHAIN[0]))
    result = plan_request(model, "Describe photo.jpg", inputs=["photo.jpg"])
    assert result.attempts == 2 and result.usage.calls == 2
    reask = model.calls[1].messages[-1]["content"]
    assert "unknown task type 'image-to-poem'" in reask
    assert model.calls[1].messages[-2] == {"role": "assistant", "content": bad}


def test_plan_request_fails_after_second_bad_plan() -> None:
    model = _fake("no plan today")
    with pytest.raises(PlanningError, match="invalid twice; last error: the plan is not JSON"):
        plan_request(model, "Describe photo.jpg", inputs=["photo.jpg"])
    assert len(model.stage_calls("plan")) == 2


def test_refused_and_failed_planning_calls_are_counted() -> None:
    model = _fake("no plan today")
    with pytest.raises(PlanningError) as refused:
        plan_request(model, "Describe photo.jpg", inputs=["photo.jpg"])
    assert refused.value.usage.calls == 2 == len(model.calls)

    def bad_then_down(call: ChatCall) -> str:
        if len(model.calls) > 1:
            raise LLMError("the server went away")
        return "no plan today"

    model = FunctionModel(bad_then_down)
    with pytest.raises(LLMError) as failed:
        plan_request(model, "Describe photo.jpg", inputs=["photo.jpg"])
    assert failed.value.usage.calls == 2 == len(model.calls)  # the refused reply and the failed call


# --- the OpenAI client against the scripted server ----------------------------------------
@pytest.mark.llm_http  # the OpenAI client's fallback and retries over HTTP
def test_plan_request_without_json_schema_support(llm) -> None:
    llm.reject_response_format = True
    llm.set(plan="```json\n" + plan_json(CHAIN[0]) + "\n```")
    client = LLMClient(Settings())
    result = plan_request(client, "Describe photo.jpg", inputs=["photo.jpg"])
    assert len(result.nodes) == 1
    assert "response_format" not in llm.requests[-1]
    # the client remembers: the next call does not try the schema again
    plan_request(client, "Describe photo.jpg", inputs=["photo.jpg"])
    assert "response_format" not in llm.requests[-1] and len(llm.requests) == 3
    assert result.usage.calls == 2 and client.usage.calls == 3  # the refused request counts


@pytest.mark.llm_http  # the OpenAI client's fallback and retries over HTTP
def test_client_counts_its_retries_and_failed_requests(llm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "1")
    llm.set(plan=[HTTPFault(500), plan_json(CHAIN[0])])
    client = LLMClient(Settings())
    result = plan_request(client, "Describe photo.jpg", inputs=["photo.jpg"])
    assert result.usage.calls == 2 == len(llm.requests)
    llm.set(plan=HTTPFault(500))
    with pytest.raises(LLMError) as failed:
        plan_request(client, "Describe photo.jpg", inputs=["photo.jpg"])
    assert failed.value.usage.calls == 2 and len(llm.requests) == 4
    assert client.usage.calls == 4


def test_prompt_lists_only_runnable_task_types() -> None:
    system = build_plan_messages("x")[0]["content"]
    assert "- image-to-text(image: image) -> text" in system
    assert "text-to-video" not in system
