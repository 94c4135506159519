"""The request flow under Prefect's test server, with the scripted LLM and tiny models."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

import fsspec
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.context import FlowRunContext

import flows.request
from flows.prefect_setup import prefect_run_settings
from flows.request import hugginggpt_request, run_request, summary_of
from flows.result_links import VerifiedResultLinks, verified_result_links
from tasks.experts.local import LocalBackend
from tasks.schemas import RequestSpec, RunSummary
from tasks.settings import RunOptions
from tests.llm_server import HTTPFault, plan_json
from tests.prefect_api import read_until, task_runs

pytestmark = pytest.mark.usefixtures("prefect_server")


def _run(request: str, **fields: Any) -> tuple[Any, RunSummary]:
    options = RunOptions(**{k: fields.pop(k) for k in ("storage", "catalog") if k in fields})
    with prefect_run_settings():
        state = hugginggpt_request(RequestSpec(request=request, **fields), options, return_state=True)
    summary = summary_of(state)
    assert isinstance(summary, RunSummary), summary
    return state, summary


async def _artifacts(flow_run_id: str, keys: Collection[str]) -> list[Any]:
    """The flow run's artifacts, once those with ``keys`` are there (read again until then, with a bound)."""
    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    return await read_until(
        lambda client: client.read_artifacts(artifact_filter=by_run),
        lambda found: set(keys) <= {a.key for a in found},
        what=f"the artifacts {sorted(keys)} of {flow_run_id}",
    )


def _upstream_ids(task_run: Any) -> set[str]:
    ids: set[str] = set()
    for inputs in task_run.task_inputs.values():
        for ref in inputs:
            if getattr(ref, "input_type", None) == "task_run":
                ids.add(str(ref.id))
    return ids


@pytest.fixture
def slow_image_models(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[float, float]]]:
    """The two image tasks wait for each other to be running: independent branches that do not run at the same
    time break the barrier (after 60 s) and fail."""
    spans: dict[str, list[tuple[float, float]]] = {}
    real_run = LocalBackend.run
    lock = threading.Lock()
    both_running = threading.Barrier(2, timeout=60)

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        start = time.perf_counter()
        if task in {"image-to-text", "image-classification"}:
            both_running.wait()
        out = real_run(self, task, model, inputs)
        with lock:
            spans.setdefault(task, []).append((start, time.perf_counter()))
        return out

    monkeypatch.setattr(LocalBackend, "run", run)
    return spans


def test_graph_runs_as_task_runs_with_planned_edges(
    env: Path, llm, sample_files, slow_image_models, monkeypatch: pytest.MonkeyPatch
) -> None:
    links: list[Any] = []

    def verified_links_seen() -> None:  # the flow run keeps only verifiable links, so no edge comes from a stale id
        verified_result_links()
        links.append(FlowRunContext.get().run_results)

    monkeypatch.setattr(flows.request, "verified_result_links", verified_links_seen)
    photo = str(sample_files["photo"])
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.png"}},
            {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
            {"id": 2, "task": "image-classification", "dep": [-1], "args": {"image": photo}},
            {"id": 3, "task": "text-classification", "dep": [-1], "args": {"text": "I love this photo"}},
        ),
        select=json.dumps({"choices": [{"id": 3, "model": "tiny/text-classification-b", "reason": "fits reviews"}]}),
        respond="It is a photo; I read its caption aloud.",
    )
    state, summary = _run("Caption photo.png and read it aloud; also classify it and rate my comment", inputs=[photo])

    assert state.is_completed(), summary.error
    assert summary.status == "completed"
    assert [r.status for r in summary.results] == ["completed"] * 4
    assert summary.answer == "It is a photo; I read its caption aloud." and summary.answer_source == "llm"
    assert summary.plan_repairs == [
        f"task 0 (image-to-text): argument 'image' 'photo.png' read as the given input {photo!r}"
    ]
    # one call per stage, whatever the plan size
    assert dict(llm.calls) == {"plan": 1, "select": 1, "respond": 1}
    assert summary.llm.calls == 3 and summary.llm.prompt_tokens > 0
    chosen = {a.node_id: (a.model, a.reason) for a in summary.assignments}
    assert chosen[3] == ("tiny/text-classification-b", "fits reviews")
    assert chosen[0] == ("tiny/image-to-text", "the only runnable candidate")

    # the Prefect API has one task run per node, named after it, with the planned edges
    names = {"image-to-text#0", "text-to-speech#1", "image-classification#2", "text-classification#3"}
    runs = task_runs(summary.flow_run_id, names)
    assert _upstream_ids(runs["text-to-speech#1"]) == {str(runs["image-to-text#0"].id)}
    for name in ("image-to-text#0", "image-classification#2", "text-classification#3"):
        assert _upstream_ids(runs[name]) == set()
    assert all(runs[n].state.is_completed() for n in names)
    assert len(links) == 1 and isinstance(links[0], VerifiedResultLinks)

    # the two image branches overlapped in time
    (a0, a1), (b0, b1) = slow_image_models["image-to-text"][0], slow_image_models["image-classification"][0]
    assert a0 < b1 and b0 < a1, "independent nodes ran one after the other"
    r0, r2 = runs["image-to-text#0"], runs["image-classification#2"]
    assert r0.start_time < r2.end_time and r2.start_time < r0.end_time

    # outputs and summary.json are in storage
    speech = summary.results[1].outputs["audio"]
    assert speech.startswith(str(env)) and speech.endswith(".wav")
    for result in summary.results:
        for modality, value in result.outputs.items():
            if modality != "text":
                assert Path(value).is_file(), value
    stored = json.loads(Path(summary.storage_uri, "summary.json").read_text())
    assert stored["answer"] == summary.answer and len(stored["results"]) == 4
    assert json.loads(Path(summary.storage_uri, "plan.json").read_text())[1]["dep"] == [0]

    # summary artifacts: markdown and table
    expected = {"hugginggpt-request-summary", "hugginggpt-request-nodes", "hugginggpt-request-text-to-speech-audio"}
    arts = asyncio.run(_artifacts(summary.flow_run_id, expected))
    kinds = {a.type: a for a in arts}
    assert {"markdown", "table"} <= set(kinds)
    # keys are stable across runs (the UI keeps their history); the run is in the description
    by_key = {a.key: a for a in arts}
    assert {"hugginggpt-request-summary", "hugginggpt-request-nodes", "hugginggpt-request-text-to-speech-audio"} <= set(
        by_key
    )
    kinds = {"markdown": by_key["hugginggpt-request-summary"], "table": by_key["hugginggpt-request-nodes"]}
    assert summary.flow_run_id in kinds["markdown"].description
    # a local file is no link (browsers refuse file:// from a page): its path, as code to copy
    assert "file://" not in kinds["markdown"].data and "](/" not in kinds["markdown"].data
    assert f"- text-to-speech#1 audio: `{speech}`" in kinds["markdown"].data
    assert by_key["hugginggpt-request-text-to-speech-audio"].data == f"`{speech}`"
    # node task runs are tagged with their task type, model and backend (for tag-based concurrency limits)
    assert {"hugginggpt", "task:image-to-text", "model:tiny/image-to-text", "backend:local"} <= set(
        runs["image-to-text#0"].tags
    )
    assert "text-to-speech#1" in kinds["markdown"].data and "tiny/image-to-text" in kinds["markdown"].data
    table = json.loads(kinds["table"].data) if isinstance(kinds["table"].data, str) else kinds["table"].data
    assert [row["node"] for row in table] == [
        "image-to-text#0",
        "text-to-speech#1",
        "image-classification#2",
        "text-classification#3",
    ]


def test_failed_node_skips_dependents_and_spares_siblings(
    env: Path, llm, sample_files, tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = tmp_path / "broken-weights"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "blip"}')  # a proven architecture, no weights
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(
        tiny_catalog.read_text()
        + json.dumps({"id": "tiny/broken-captioner", "task": "image-to-text", "local_path": str(broken)})
        + "\n"
    )
    photo = str(sample_files["photo"])
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": photo}},
            {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
            {"id": 2, "task": "image-classification", "dep": [-1], "args": {"image": photo}},
        ),
        respond=lambda body: "Captioning failed: " + ("could not load" in body["messages"][-1]["content"]) * "yes",
    )
    from flows import events as progress_events

    events: list[Any] = []
    with progress_events.subscribe(events.append):
        state, summary = _run(
            "Caption and classify the photo, read the caption aloud",
            inputs=[photo],
            models={"image-to-text": "tiny/broken-captioner"},
            catalog=str(catalog),
        )
    assert state.is_failed()
    assert "2 of 3 task(s) did not complete" in state.message
    shown = [e.state for e in events if isinstance(e, progress_events.NodeEvent) and e.node == "text-to-speech#1"]
    assert shown == ["skipped"]  # never shown running: it does not run
    by_id = {r.id: r for r in summary.results}
    assert by_id[0].status == "failed" and "tiny/broken-captioner" in by_id[0].error
    assert by_id[1].status == "skipped" and "upstream task 0 (image-to-text) failed" in by_id[1].error
    assert by_id[2].status == "completed" and Path(by_id[2].outputs["json"]).is_file()
    assert summary.answer == "Captioning failed: yes"  # the responder was told why

    runs = task_runs(summary.flow_run_id, {"image-to-text#0", "text-to-speech#1", "image-classification#2"})
    assert runs["image-to-text#0"].state.is_failed()
    assert runs["text-to-speech#1"].state.name == "Skipped"
    assert runs["text-to-speech#1"].state.is_cancelled()  # never ran: not shown as completed (green) in the UI
    assert _upstream_ids(runs["text-to-speech#1"]) == {str(runs["image-to-text#0"].id)}
    assert runs["image-classification#2"].state.is_completed()
    assert json.loads(Path(summary.storage_uri, "summary.json").read_text())["status"] == "failed"


def test_empty_plan_answers_directly(env: Path, llm) -> None:
    llm.set(plan='{"tasks": []}', respond="Hello! How can I help?")
    state, summary = _run("Hi there")
    assert state.is_completed()
    assert summary.plan == [] and summary.results == []
    assert summary.answer == "Hello! How can I help?" and summary.answer_source == "direct"
    assert dict(llm.calls) == {"plan": 1, "respond": 1}


def test_planning_failure_fails_the_run_with_the_reason(env: Path, llm) -> None:
    llm.set(plan="I cannot help with that.")
    state, summary = _run("Do something impossible")
    assert state.is_failed()
    assert "plan was invalid twice" in summary.error
    assert summary.llm.calls == 2 == llm.calls["plan"]  # the refused replies count
    assert json.loads(Path(summary.storage_uri, "summary.json").read_text())["error"] == summary.error


def test_response_fallback_when_llm_errors(env: Path, llm) -> None:
    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "lovely"}}),
        select=HTTPFault(500),
        respond=HTTPFault(500),
    )
    summary = run_request("Is 'lovely' positive?")
    assert summary.status == "completed"
    assert summary.answer_source == "fallback" and "HTTP 500" in summary.answer_error
    assert "text-classification#0 with tiny/text-classification" in summary.answer
    assert "selection by the LLM failed" in summary.assignments[0].reason
    assert summary.llm.calls == 3 == sum(llm.calls.values())  # the failed calls count


def test_storage_on_an_fsspec_url(env: Path, llm) -> None:
    llm.set(plan=plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "a b c d e f"}}))
    summary = run_request(
        RequestSpec(request="Summarize 'a b c d e f'"), RunOptions(storage="memory://hugginggpt-test")
    )
    assert summary.storage_uri.startswith("memory://") and "/hugginggpt-test/" in summary.storage_uri
    fs = fsspec.filesystem("memory")
    stored = json.loads(fs.cat(summary.storage_uri + "/summary.json"))
    assert stored["results"][0]["status"] == "completed"


def test_stage_task_runs_take_a_concurrency_slot_only_under_a_limit_on_a_tag_of_theirs(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planning, selection and answering task runs carry the run's tags (the UI's filters find them) without a
    concurrency round trip each; once one of those tags has a limit, they take its slot as Prefect does."""
    from prefect import tags
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tests.prefect_api import api_until, record_slot_requests

    acquired = record_slot_requests(monkeypatch)

    async def limit(create: bool) -> None:
        async with get_client() as client:
            if create:
                await client.create_concurrency_limit(tag="nightly-stages", concurrency_limit=5)
            else:
                await client.delete_concurrency_limit_by_tag(tag="nightly-stages")

    stages = {"plan", "select", "respond"}
    tagged: dict[bool, list[list[str]]] = {}
    for limited in (False, True):
        acquired.clear()
        text = f"a lovely day ({'limited' if limited else 'free'})"
        llm.set(plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": text}}))
        if limited:
            asyncio.run(limit(create=True))
        try:
            with prefect_run_settings(), tags("nightly-stages"):
                summary = run_request(f"Rate: {text}")
        finally:
            if limited:
                asyncio.run(limit(create=False))
        assert summary.error is None and [r.status for r in summary.results] == ["completed"]
        tagged[limited] = list(acquired)

        def stage_runs(runs: list[Any]) -> dict[str, Any]:
            return {r.name.split("-")[0]: r for r in runs if r.name.split("-")[0] in stages}

        runs = api_until(
            lambda client, run_id=summary.flow_run_id: client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            ),
            lambda found: (
                set(stage_runs(found)) == stages
                and all(
                    r.state and r.state.is_completed() and "nightly-stages" in r.tags
                    for r in stage_runs(found).values()
                )
            ),
            what="the stage task runs, completed, with the run's tags",
        )
        assert {"hugginggpt", "nightly-stages"} <= set(stage_runs(runs)["plan"].tags)
    assert tagged[False] == [], "no tag has a limit: no task run asks for a slot"
    with_limit = [names for names in tagged[True] if "tag:nightly-stages" in names]
    assert len(with_limit) >= len(stages) + 1, tagged[True]  # the three stages and the node


def test_a_tag_concurrency_limit_bounds_the_nodes_that_carry_the_tag(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two independent text-classification nodes, room for both at once. Each node's model call holds on until the
    other node is in its own call (they overlap) or the Prefect API has refused the other node a slot (a 423 from
    the limit's increment). Under a limit of 1 on ``task:text-classification`` they run one at a time; under a
    limit on a tag they do not carry they overlap. Either way every node's task run keeps all its tags."""
    import httpx
    from prefect.client.orchestration import PrefectClient

    state = {"inside": 0, "peak": 0, "refused": 0}
    changed = threading.Condition()
    real_run = LocalBackend.run
    real_increment = PrefectClient.increment_concurrency_slots_with_lease

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        with changed:
            state["inside"] += 1
            state["peak"] = max(state["peak"], state["inside"])
            changed.notify_all()
            changed.wait_for(lambda: state["inside"] >= 2 or state["refused"] > 0, timeout=60)
        try:
            return real_run(self, task, model, inputs)
        finally:
            with changed:
                state["inside"] -= 1

    async def increment(self: PrefectClient, *args: Any, **kwargs: Any) -> Any:
        try:
            return await real_increment(self, *args, **kwargs)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 423:  # no slot free: Prefect waits and asks again
                with changed:
                    state["refused"] += 1
                    changed.notify_all()
            raise

    monkeypatch.setattr(LocalBackend, "run", run)
    monkeypatch.setattr(PrefectClient, "increment_concurrency_slots_with_lease", increment)
    names = {"text-classification#0", "text-classification#1"}

    async def limit(tag: str, create: bool) -> None:
        async with get_client() as client:
            if create:
                await client.create_concurrency_limit(tag=tag, concurrency_limit=1)
            else:
                await client.delete_concurrency_limit_by_tag(tag=tag)

    seen: dict[str, tuple[dict[str, int], dict[str, Any]]] = {}
    for limited_tag in ("task:image-classification", "task:text-classification"):
        state.update(inside=0, peak=0, refused=0)
        texts = [f"{t} under a limit on {limited_tag}" for t in "ab"]  # new inputs: no output is reused
        nodes = [{"id": i, "task": "text-classification", "dep": [-1], "args": {"text": texts[i]}} for i in (0, 1)]
        llm.set(plan=plan_json(*nodes), respond="Done.")
        asyncio.run(limit(limited_tag, create=True))
        try:
            with prefect_run_settings():
                summary = run_request(f"Classify a and b ({limited_tag})", RunOptions(max_workers=4))
        finally:
            asyncio.run(limit(limited_tag, create=False))
        assert [r.status for r in summary.results] == ["completed", "completed"], summary.results
        seen[limited_tag] = (dict(state), task_runs(summary.flow_run_id, names))

    unrelated, bounded = seen["task:image-classification"], seen["task:text-classification"]
    assert unrelated[0]["peak"] == 2 and unrelated[0]["refused"] == 0  # not limited: the nodes overlapped
    assert bounded[0]["peak"] == 1 and bounded[0]["refused"] >= 1  # limited: the second waited for the slot
    for _, runs in (unrelated, bounded):
        for name in names:
            assert {"task:text-classification", "backend:local"} <= set(runs[name].tags), runs[name].tags
            assert any(t.startswith("model:tiny/text-classification") for t in runs[name].tags)
