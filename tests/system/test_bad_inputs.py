"""The catalogue of bad inputs: each one is answered with an error that names what was wrong, and nothing already
computed is lost (what ran before the problem, or beside it, is kept in storage and in the summary)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from flows.request import run_request
from tasks.runs import MAX_REQUEST_CHARS
from tasks.schemas import RequestSpec, RunSummary
from tasks.settings import RunOptions
from tests.llm_server import plan_json
from tests.web_server import WebServer

pytestmark = pytest.mark.usefixtures("prefect_server")

LOVELY = {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}


def _stored(summary: RunSummary) -> dict[str, Any]:
    """The run's summary.json: every run leaves one, whatever went wrong."""
    return json.loads(Path(summary.storage_uri, "summary.json").read_text())


def _planning_fails(llm: Any, reply: str, *expected: str) -> RunSummary:
    """The LLM answers ``reply`` twice (the plan is sent back once with the reason): the request fails with it."""
    llm.set(plan=reply)
    summary = run_request("Rate 'what a lovely day', then do the rest")
    assert summary.status == "failed"
    # nodes that started while the plan streamed, before it turned out invalid, keep their results; the plan's
    # invalid task and those after it never ran
    try:
        planned = len(json.loads(reply)["tasks"])
    except (ValueError, KeyError, TypeError):  # not a plan at all: nothing could start
        planned = 1
    assert len(summary.results) < planned and all(r.status == "completed" for r in summary.results)
    assert "the LLM's plan was invalid twice" in summary.error
    for text in expected:
        assert text in summary.error, summary.error
    assert llm.calls["plan"] == 2
    resent = llm.stage_requests("plan")[1]["messages"][-1]["content"]
    assert resent.startswith("That plan is invalid:") and expected[0] in resent
    assert _stored(summary)["error"] == summary.error
    return summary


# --- the request --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("request_text", ["", "   \n\t "], ids=["empty", "whitespace"])
def test_empty_request(env: Path, llm: Any, request_text: str) -> None:
    summary = run_request(request_text)
    assert summary.status == "failed" and "the request is empty" in summary.error
    assert dict(llm.calls) == {}  # refused before any LLM call
    assert _stored(summary)["error"] == summary.error


def test_request_over_the_size_limit(env: Path, llm: Any) -> None:
    summary = run_request("x" * (MAX_REQUEST_CHARS + 1))
    assert summary.status == "failed"
    assert f"the request is {MAX_REQUEST_CHARS + 1} characters long; the limit is {MAX_REQUEST_CHARS}" in summary.error
    assert dict(llm.calls) == {}


# --- the plan -----------------------------------------------------------------------------------------------------


def test_plan_that_is_not_json(env: Path, llm: Any) -> None:
    _planning_fails(llm, "Sure! First I would caption the photo, then read it aloud.", "the plan is not JSON")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"steps": [{"do": "caption"}]}', "the plan is a JSON object without a 'tasks' list (keys: steps)"),
        ('{"tasks": "caption, then speak"}', "the plan is a JSON object without a 'tasks' list (keys: tasks)"),
        ("[[0, 1]]", "task at position 0 is not a JSON object (list)"),
        ('{"tasks": [1, 2]}', "task at position 0 is not a JSON object (int)"),
        (plan_json({**LOVELY, "id": "first"}), "task at position 0 has an invalid id 'first'"),
        (plan_json({**LOVELY, "args": "what a lovely day"}), "task 0: 'args' must be an object, not str"),
        (plan_json({**LOVELY, "args": {"text": ["a", "b"]}}), "task 0: argument 'text' must be a string, not list"),
        (plan_json({**LOVELY, "task": None}), "task 0 has no task type"),
        (plan_json(LOVELY, {**LOVELY, "args": {"text": "again"}}), "task id 0 is used twice"),
    ],
    ids=[
        "no-tasks-list",
        "tasks-not-a-list",
        "node-not-an-object",
        "node-a-list",
        "bad-id",
        "args-not-object",
        "arg-not-string",
        "no-task-type",
        "duplicate-id",
    ],
)
def test_plan_json_of_the_wrong_shape(env: Path, llm: Any, reply: str, expected: str) -> None:
    _planning_fails(llm, reply, expected)


def test_unknown_task_type(env: Path, llm: Any) -> None:
    _planning_fails(llm, plan_json({**LOVELY, "task": "make-coffee"}), "task 0: unknown task type 'make-coffee'")


def test_dependency_on_a_missing_id(env: Path, llm: Any) -> None:
    _planning_fails(
        llm,
        plan_json(LOVELY, {"id": 1, "task": "summarization", "dep": [7], "args": {"text": "a long story"}}),
        "task 1 (summarization) depends on task 7, which is not in the plan",
    )


def test_cycle(env: Path, llm: Any) -> None:
    _planning_fails(
        llm,
        plan_json(
            {"id": 0, "task": "summarization", "dep": [1], "args": {"text": "<GENERATED>-1"}},
            {"id": 1, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        ),
        "the dependencies form a cycle among tasks 0, 1",
    )


def test_generated_reference_to_a_task_that_is_not_a_dependency(env: Path, llm: Any) -> None:
    """A ``<GENERATED>-k`` whose k is in the plan but not in ``dep`` is repaired (k is added), and says so; one whose
    k is not in the plan, or is the node itself, is refused."""
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat"}},
            {"id": 1, "task": "text-classification", "dep": [-1], "args": {"text": "<GENERATED>-0"}},
        )
    )
    summary = run_request("Summarize the cat story, then rate the summary")
    assert summary.status == "completed", summary.error
    assert summary.plan[1].dep == [0]
    assert summary.plan_repairs == ["task 1 (text-classification): added task 0 to dep, since it uses <GENERATED>-0"]
    assert _stored(summary)["plan_repairs"] == summary.plan_repairs

    llm.reset()
    _planning_fails(
        llm,
        plan_json(LOVELY, {"id": 1, "task": "summarization", "dep": [0], "args": {"text": "<GENERATED>-5"}}),
        "task 1 (summarization): argument 'text' uses <GENERATED>-5, but there is no task 5",
    )
    llm.reset()
    _planning_fails(
        llm,
        plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "<GENERATED>-0"}}),
        "task 0 (summarization): argument 'text' uses <GENERATED>-0, its own output",
    )


def test_generated_reference_of_the_wrong_modality(env: Path, llm: Any) -> None:
    _planning_fails(
        llm,
        plan_json(LOVELY, {"id": 1, "task": "image-classification", "dep": [0], "args": {"image": "<GENERATED>-0"}}),
        "task 1 (image-classification): argument 'image' needs image but task 0 (text-classification) produces",
    )


# --- input files --------------------------------------------------------------------------------------------------


def _one_bad_input(llm: Any, task: str, arg: str, ref: str) -> RunSummary:
    """A request with a healthy node beside one that reads ``ref``: the healthy one's result is kept."""
    llm.set(
        plan=plan_json(LOVELY, {"id": 1, "task": task, "dep": [-1], "args": {arg: ref}}),
        respond=lambda body: "One task could not read its input.",
    )
    summary = run_request(RequestSpec(request=f"Rate 'what a lovely day' and run {task} on {ref}", inputs=[ref]))
    assert summary.status == "failed"
    ok, bad = summary.results
    assert ok.status == "completed" and ok.outputs["text"]
    assert bad.status == "failed"
    stored = _stored(summary)
    assert stored["results"][0]["outputs"] == ok.outputs and stored["results"][1]["error"] == bad.error
    assert Path(summary.storage_uri, "nodes", "0-text-classification", "node.json").is_file()
    assert summary.answer == "One task could not read its input."  # the response stage still ran
    return summary


def test_input_file_missing(env: Path, llm: Any, tmp_path: Path) -> None:
    missing = str(tmp_path / "gone.png")
    summary = _one_bad_input(llm, "image-classification", "image", missing)
    assert summary.results[1].error == f"input file {missing} does not exist"


@pytest.mark.parametrize(
    ("kind", "task", "arg", "content", "expected"),
    [
        ("text-as-image", "image-classification", "image", b"just some words, not pixels", "is not a readable image"),
        ("corrupt-image", "image-classification", "image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not a readable image"),
        ("corrupt-audio", "automatic-speech-recognition", "audio", b"RIFF\x00\x00\x00\x00WAVEjunk", "readable audio"),
        ("text-as-audio", "automatic-speech-recognition", "audio", b"hello there", "is not readable audio"),
    ],
    ids=["text-as-image", "corrupt-image", "corrupt-audio", "text-as-audio"],
)
def test_input_of_the_wrong_kind(
    env: Path, llm: Any, tmp_path: Path, kind: str, task: str, arg: str, content: bytes, expected: str
) -> None:
    path = tmp_path / f"{kind}.{'png' if arg == 'image' else 'wav'}"
    path.write_bytes(content)
    summary = _one_bad_input(llm, task, arg, str(path))
    assert summary.results[1].error.startswith(f"input {path} ") and expected in summary.results[1].error


def test_input_over_the_size_limit(
    env: Path, llm: Any, sample_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUGGINGGPT_MAX_INPUT_BYTES", "100")
    photo = str(sample_files["photo"])
    summary = _one_bad_input(llm, "image-classification", "image", photo)
    assert summary.results[1].error == f"input {photo} is larger than 100 bytes (HUGGINGGPT_MAX_INPUT_BYTES)"


def test_url_that_times_out(env: Path, llm: Any, web: WebServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_INPUT_TIMEOUT", "0.5")
    url = web.silent("/slow.png", seconds=60)  # answers nothing for a minute: only the timeout ends the fetch
    summary = _one_bad_input(llm, "image-classification", "image", url)
    assert summary.results[1].error == f"input {url} could not be fetched within 0.5 s (HUGGINGGPT_INPUT_TIMEOUT)"


def test_url_that_returns_404(env: Path, llm: Any, web: WebServer) -> None:
    url = web.url("/nowhere.png")
    summary = _one_bad_input(llm, "image-classification", "image", url)
    assert summary.results[1].error == f"input {url} could not be fetched: HTTP 404 Not Found"


# --- the catalog and the models -----------------------------------------------------------------------------------


def test_catalog_file_with_a_broken_line(env: Path, llm: Any, tiny_catalog: Path, tmp_path: Path) -> None:
    broken = tmp_path / "catalog.jsonl"
    lines = tiny_catalog.read_text().splitlines()
    broken.write_text("\n".join([lines[0], '{"id": "acme/half-written", "task": ', *lines[1:]]) + "\n")
    llm.set(plan=plan_json(LOVELY))
    summary = run_request(RequestSpec(request="Rate 'what a lovely day'"), RunOptions(catalog=str(broken)))
    assert summary.status == "failed"
    assert f"{broken}:2: not valid JSON" in summary.error
    assert _stored(summary)["error"] == summary.error

    missing_field = tmp_path / "catalog-2.jsonl"
    missing_field.write_text(lines[0] + "\n" + json.dumps({"id": "acme/no-task"}) + "\n")
    summary = run_request(RequestSpec(request="Rate 'what a lovely day'"), RunOptions(catalog=str(missing_field)))
    assert f"{missing_field}:2: not a catalog entry (task: Field required)" in summary.error


def test_model_id_not_in_the_catalog(env: Path, llm: Any) -> None:
    llm.set(plan=plan_json(LOVELY))
    summary = run_request(
        RequestSpec(request="Rate 'what a lovely day'", models={"text-classification": "acme/not-in-catalog"})
    )
    assert summary.status == "failed"
    assert "text-classification=acme/not-in-catalog: not in the catalog for task 'text-classification'" in summary.error
    assert "distilbert" in summary.error  # it says what the catalog has
    assert llm.calls["plan"] == 0  # refused before the planning call


def test_model_pin_for_a_task_not_in_the_plan(env: Path, llm: Any, capsys: pytest.CaptureFixture[str]) -> None:
    llm.set(plan=plan_json(LOVELY))
    summary = run_request(
        RequestSpec(request="Rate 'what a lovely day'", models={"image-classification": "tiny/image-classification"})
    )
    assert summary.status == "failed"
    assert (
        "--model pins task(s) image-classification that the plan does not use (plan tasks: text-classification)"
        in summary.error
    )
    assert json.loads(Path(summary.storage_uri, "plan.json").read_text())  # the plan is kept

    calls = dict(llm.calls)
    assert main(["run", "Rate 'what a lovely day'", "--model", "image-classification"]) == 2
    assert "--model 'image-classification' is not of the form TASK=MODEL_ID" in capsys.readouterr().err
    assert dict(llm.calls) == calls  # refused before anything ran
