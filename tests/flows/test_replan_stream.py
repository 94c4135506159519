"""Replanning after a failed node, and nodes that start while the plan streams, through the request flow and the
command, with the scripted OpenAI-compatible server and tiny models."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from flows.cli import main
from tasks.experts.local import LocalBackend
from tests.llm_server import plan_json
from tests.prefect_api import task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")

CAPTION_AND_SPEAK = plan_json(
    {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.png"}},
    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
)
#: the replan: rate the caption instead of reading it aloud (uses node 0's output)
RATE_THE_CAPTION = plan_json(
    {"id": 2, "task": "text-classification", "dep": [0], "args": {"text": "<GENERATED>-0"}},
)


def _upstream_ids(task_run: Any) -> set[str]:
    return {
        str(ref.id)
        for inputs in task_run.task_inputs.values()
        for ref in inputs
        if getattr(ref, "input_type", None) == "task_run"
    }


@pytest.fixture
def speech_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every text-to-speech model fails when it runs."""
    real_run = LocalBackend.run

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        if task == "text-to-speech":
            raise RuntimeError("injected failure of the speech model")
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)


def _summary(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    return json.loads(capsys.readouterr().out)


def test_a_failed_node_is_replanned_and_the_request_completes(
    env: Path, llm, sample_files, speech_fails, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(sample_files["photo"])
    llm.set(plan=CAPTION_AND_SPEAK, replan=RATE_THE_CAPTION, respond="The caption reads as positive.")

    code = main(["run", "Caption photo.png and read it aloud", "--input", photo, "--json", "--quiet"])

    summary = _summary(capsys)
    assert code == 0, summary["error"]
    assert summary["status"] == "completed"
    rounds = {r["id"]: (r["task"], r["status"], r["round"]) for r in summary["results"]}
    assert rounds == {
        0: ("image-to-text", "completed", 0),
        1: ("text-to-speech", "failed", 0),
        2: ("text-classification", "completed", 1),
    }
    assert "injected failure of the speech model" in next(r for r in summary["results"] if r["id"] == 1)["error"]
    assert [(r["round"], r["after"], r["tasks"], r["error"]) for r in summary["replans"]] == [(1, [1], [2], None)]
    assert [n["id"] for n in summary["plan"]] == [0, 1, 2]
    assert llm.calls["replan"] == 1 and summary["llm"]["calls"] == sum(llm.calls.values())

    # the replanning call was told what completed (with its output) and what failed (with its error)
    (asked,) = llm.stage_requests("replan")
    told = asked["messages"][-1]["content"]
    caption = next(r for r in summary["results"] if r["id"] == 0)["outputs"]["text"]
    assert caption in told and "injected failure of the speech model" in told and "from id 2 on" in told
    # the answer saw both rounds
    (answered,) = llm.stage_requests("respond")
    digest = answered["messages"][-1]["content"]
    assert '"round": 1' in digest and "text-to-speech" in digest

    # both rounds are task runs of the same flow run; the new node's edge goes to the node whose output it uses
    runs = task_runs(summary["flow_run_id"], {"image-to-text#0", "text-to-speech#1", "text-classification#2"})
    assert runs["text-to-speech#1"].state.is_failed()
    assert runs["text-classification#2"].state.is_completed()
    assert _upstream_ids(runs["text-classification#2"]) == {str(runs["image-to-text#0"].id)}
    stored = json.loads(Path(summary["storage_uri"], "summary.json").read_text())
    assert stored["status"] == "completed" and len(stored["replans"]) == 1


def test_without_replans_the_same_run_fails(
    env: Path, llm, sample_files, speech_fails, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(sample_files["photo"])
    llm.set(plan=CAPTION_AND_SPEAK, replan=RATE_THE_CAPTION, respond="Reading aloud failed.")

    code = main(["run", "Caption photo.png and read it aloud", "-i", photo, "--json", "-q", "--max-replans", "0"])

    summary = _summary(capsys)
    assert code == 1
    assert summary["status"] == "failed" and summary["replans"] == []
    assert [(r["id"], r["status"]) for r in summary["results"]] == [(0, "completed"), (1, "failed")]
    assert llm.calls["replan"] == 0


def test_a_replan_with_no_new_task_keeps_the_failure(
    env: Path, llm, sample_files, speech_fails, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = str(sample_files["photo"])
    llm.set(plan=CAPTION_AND_SPEAK, replan='{"tasks": []}', respond="Reading aloud failed.")

    code = main(["run", "Caption photo.png and read it aloud", "-i", photo, "--json", "-q"])

    summary = _summary(capsys)
    assert code == 1 and summary["status"] == "failed"
    assert [(r["tasks"], r["error"]) for r in summary["replans"]] == [([], None)]
    assert llm.calls["replan"] == 1


def test_the_first_node_starts_before_the_last_piece_of_the_plan_is_sent(
    env: Path, llm, sample_files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server holds the plan's last piece until the first node is running (bounded: it sends it anyway after
    60 s, and the test then fails)."""
    photo = str(sample_files["photo"])
    first_running = threading.Event()
    held: list[bool] = []
    real_run = LocalBackend.run

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        first_running.set()
        return real_run(self, task, model, inputs)

    def on_piece(stage: str, index: int, count: int) -> None:
        if stage == "plan" and index == count - 1:
            held.append(first_running.wait(60))

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(plan=CAPTION_AND_SPEAK, respond="A photo, read aloud.")
    llm.on_piece = on_piece

    code = main(["run", "Caption photo.png and read it aloud", "-i", photo, "--json", "-q"])

    summary = _summary(capsys)
    assert code == 0, summary["error"]
    assert held == [True], "no node started before the plan's last piece was sent"
    assert llm.streamed["plan"] == 1
    assert summary["plan_streamed"] is True
    assert [(r["id"], r["status"]) for r in summary["results"]] == [(0, "completed"), (1, "completed")]
    assert [n["id"] for n in summary["plan"]] == [0, 1]  # the whole plan, in the summary and in plan.json
    assert [n["task"] for n in json.loads(Path(summary["storage_uri"], "plan.json").read_text())] == [
        "image-to-text",
        "text-to-speech",
    ]
    assert summary["plan_repairs"] == [
        f"task 0 (image-to-text): argument 'image' 'photo.png' read as the given input {photo!r}"
    ]
    runs = task_runs(summary["flow_run_id"], {"image-to-text#0", "text-to-speech#1"})
    assert _upstream_ids(runs["text-to-speech#1"]) == {str(runs["image-to-text#0"].id)}


def test_a_plan_found_invalid_late_stops_what_has_not_started_and_is_sent_back_once(
    env: Path, llm, sample_files, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    photo = str(sample_files["photo"])
    caption = {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": photo}}
    speak = {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}}
    late_error = plan_json(caption, speak, {"id": 2, "task": "no-such-task", "dep": [1], "args": {"text": "x"}})
    first_done = threading.Event()
    ran: list[str] = []
    real_run = LocalBackend.run

    def on_piece(stage: str, index: int, count: int) -> None:  # the bad task arrives once node 0 has run
        if stage == "plan" and index == count - 12:
            first_done.wait(60)

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        try:
            ran.append(task)
            return real_run(self, task, model, inputs)
        finally:
            first_done.set()

    llm.on_piece = on_piece
    monkeypatch.setattr(LocalBackend, "run", run)

    # sent back, and invalid again: the request fails as without streaming, with what had started kept
    llm.set(plan=late_error, respond="unused")
    code = main(["run", "Caption photo.png", "-i", photo, "--json", "-q"])
    summary = _summary(capsys)
    assert code == 1 and summary["status"] == "failed"
    assert "the LLM's plan was invalid twice" in summary["error"] and "no-such-task" in summary["error"]
    started = {r["id"]: r["status"] for r in summary["results"]}
    assert started.get(0) == "completed" and 2 not in started  # what had started finished; nothing else ran
    assert llm.calls["plan"] == 2 and llm.streamed["plan"] == 1 and llm.calls["respond"] == 0
    assert "That plan is invalid" in llm.stage_requests("plan")[1]["messages"][-1]["content"]

    # sent back, and corrected: the corrected plan runs whole, the caption it repeats reused from the first try
    from PIL import Image

    other = env.parent / "other.png"  # a photo not seen before: the first try's caption is not in the cache
    Image.new("RGB", (32, 24), (10, 200, 90)).save(other)
    photo = str(other)
    caption = {**caption, "args": {"image": photo}}
    late_error = plan_json(caption, speak, {"id": 2, "task": "no-such-task", "dep": [1], "args": {"text": "x"}})
    llm.reset()
    llm.on_piece = on_piece
    first_done.clear()
    ran.clear()
    llm.set(plan=[late_error, plan_json(caption, speak)], respond="Read aloud.")
    code = main(["run", "Caption photo.png and read it aloud", "-i", photo, "--json", "-q"])
    summary = _summary(capsys)
    assert code == 0, summary["error"]
    assert [(r["id"], r["status"]) for r in summary["results"]] == [(0, "completed"), (1, "completed")]
    assert summary["results"][0]["cached"] is True and ran.count("image-to-text") == 1
    assert llm.calls["plan"] == 2 and summary["llm"]["calls"] == sum(llm.calls.values())
