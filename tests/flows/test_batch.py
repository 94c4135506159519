"""Batches of requests, the plan cache, explicit plans without an LLM, ``hugginggpt plan``, and Dask."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, FlowRunFilter, FlowRunFilterId

from flows.batch import BatchFailed, hugginggpt_batch, run_batch
from flows.cli import main
from flows.prefect_setup import prefect_run_settings
from flows.request import hugginggpt_request, summary_of
from flows.runners import task_runner_for
from tasks.batch_lines import parse_line
from tasks.batch_plans import abstract_inputs, adapt_plan
from tasks.schemas import PlanNode, RequestSpec, RunSummary
from tasks.settings import RunOptions, load_settings
from tests.llm_server import plan_json
from tests.prefect_api import read_until

pytestmark = pytest.mark.usefixtures("prefect_server")


def _request_of(body: dict[str, Any]) -> tuple[str, list[str]]:
    """The request and inputs of a planning call (its last user message)."""
    last = body["messages"][-1]["content"]
    request = re.search(r"^Request: (.*)$", last, re.M)
    given = re.search(r"^Inputs: (.*)$", last, re.M)
    inputs = [] if given is None or given.group(1) == "none" else given.group(1).split(", ")
    return (request.group(1) if request else ""), inputs


def planner(body: dict[str, Any]) -> str:
    """Plans by request text: reviews are classified, photos classified, texts summarized."""
    request, inputs = _request_of(body)
    quoted = re.search(r"'([^']*)'", request)
    if request.startswith("Is review") and quoted:
        return plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": quoted.group(1)}})
    if inputs:
        name = Path(inputs[0]).name
        return plan_json({"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": name}})
    return plan_json({"id": 0, "task": "summarization", "dep": [-1], "args": {"text": request}})


def _write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


async def _flow_run(flow_run_id: str) -> Any:
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def _parents(flow_run_ids: list[str]) -> dict[str, str]:
    """Child flow run id -> the flow run id of the task run that is its parent."""
    out = {}
    async with get_client() as client:
        runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))
        for run in runs:
            assert run.parent_task_run_id is not None, run.name
            parent = await client.read_task_run(run.parent_task_run_id)
            out[str(run.id)] = str(parent.flow_run_id)
    return out


async def _artifacts(flow_run_id: str, done: Callable[[list[Any]], bool]) -> list[Any]:
    """The flow run's artifacts, once ``done`` holds for them (read again until then, with a bound)."""
    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    return await read_until(
        lambda client: client.read_artifacts(artifact_filter=by_run), done, what=f"the artifacts of {flow_run_id}"
    )


SUMMARIZE = [{"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "the cat sat on the mat all day"}}]


@pytest.mark.slow
def test_batch_of_many_requests_one_record_per_line(env: Path, llm, tmp_path: Path) -> None:
    llm.set(plan=planner, respond="Done.")
    lines: list[Any] = []
    expected: list[str] = []

    def add(line: Any, status: str) -> None:
        lines.append(line)
        expected.append(status)

    for i in range(18):  # distinct texts: each child plans for itself
        add({"id": f"review-{i}", "request": f"Is review {i} positive: 'I liked item {i} a lot'"}, "completed")
        if i == 5:
            add("not json at all {", "invalid")
            add({"id": "no-request", "inputs": []}, "invalid")
        if i == 9:
            add({"id": "wrong-types", "request": "Caption x.png", "inputs": "x.png"}, "invalid")
            add('["a", "list"]', "invalid")
            lines.append("   ")  # blank: skipped, no record
        if i == 12:
            add({"id": "typo", "request": "Summarize it", "input": ["a.txt"]}, "invalid")
            add({"id": "bad-plan", "request": "Do it", "plan": [{"id": 0, "task": "no-such-task"}]}, "invalid")
    for i, plan in enumerate(
        [SUMMARIZE, {"tasks": SUMMARIZE}, json.dumps(SUMMARIZE), yaml.safe_dump(SUMMARIZE), SUMMARIZE, SUMMARIZE]
    ):
        add({"id": f"explicit-{i}", "request": f"Summarize the cat story ({i})", "plan": plan}, "completed")
    for i in range(3):  # one shared text, files that do not exist: planned once, the node fails
        add(
            {"id": f"missing-{i}", "request": "Classify the photo", "inputs": [str(tmp_path / f"gone-{i}.png")]},
            "failed",
        )
    add(
        {"id": "bad-pin", "request": "Is review 99 positive: 'fine'", "models": {"text-classification": "no/such"}},
        "failed",
    )
    requests = _write_jsonl(tmp_path / "requests.jsonl", lines)
    assert len(expected) >= 30

    with prefect_run_settings():
        state = hugginggpt_batch(str(requests), max_in_flight=2, options=RunOptions(max_workers=2), return_state=True)
    failure = state.result(raise_on_failure=False)
    assert isinstance(failure, BatchFailed), failure
    summary = failure.summary
    assert state.is_failed() and "4 failed and 6 invalid of 34 line(s)" in state.message

    # the results file: exactly one record per non-blank line, in input order, with the right status
    assert summary.results_uri == str(env / "batches" / summary.flow_run_id / "results.jsonl")
    records = [json.loads(x) for x in Path(summary.results_uri).read_text().splitlines()]
    assert [r["status"] for r in records] == expected
    numbers = [n for n, raw in enumerate(requests.read_text().splitlines(), start=1) if raw.strip()]
    assert [r["line"] for r in records] == numbers
    assert (summary.lines, summary.completed, summary.failed, summary.invalid) == (len(expected), 24, 4, 6)
    by_id = {r["id"]: r for r in records if r["id"]}
    invalid = [r for r in records if r["status"] == "invalid"]
    assert "not JSON" in invalid[0]["error"] and invalid[0]["id"] is None
    assert "request: Field required" in by_id["no-request"]["error"]
    assert "inputs: Input should be a valid list" in by_id["wrong-types"]["error"]
    assert "expected a JSON object, got list" in invalid[3]["error"]
    assert "input: unknown field" in by_id["typo"]["error"]
    assert "unknown task type 'no-such-task'" in by_id["bad-plan"]["error"]
    for i in range(3):
        failed = by_id[f"missing-{i}"]
        assert "image-classification#0 failed" in failed["error"] and failed["flow_run_id"]
    assert by_id["missing-0"]["plan_source"] == "llm" and not by_id["missing-0"]["plan_cached"]
    assert by_id["missing-2"]["plan_source"] == f"batch plan cache of line {by_id['missing-0']['line']}"
    assert "no/such" in by_id["bad-pin"]["error"]
    assert {by_id[f"explicit-{i}"]["plan_source"] for i in range(6)} == {"explicit"}
    assert by_id["review-3"]["answer"] == "Done." and by_id["review-3"]["tasks"] == ["text-classification#0"]
    # 18 reviews planned in their own runs, the three missing photos once, explicit plans and the bad pin never
    assert llm.calls["plan"] == 19 and summary.planning_calls == 1 and summary.plans_cached == 2
    stored = json.loads((env / "batches" / summary.flow_run_id / "summary.json").read_text())
    assert stored["completed"] == 24

    # every request ran as a child flow run of the batch, named after its line
    child_ids = [r["flow_run_id"] for r in records if r["flow_run_id"]]
    assert len(child_ids) == 28
    assert set(asyncio.run(_parents(child_ids)).values()) == {summary.flow_run_id}
    child = asyncio.run(_flow_run(by_id["review-3"]["flow_run_id"]))
    assert child.name.startswith(f"line-{by_id['review-3']['line']}-review-3: Is review 3")
    assert json.loads(Path(by_id["review-3"]["storage_uri"], "summary.json").read_text())["status"] == "completed"

    # the batch's artifacts: progress at 100 %, a table with a row per line, a summary
    def final(found: list[Any]) -> bool:
        progress = [a for a in found if a.type == "progress"]
        return {"table", "markdown"} <= {a.type for a in found} and bool(progress) and float(progress[0].data) == 100.0

    arts = {a.type: a for a in asyncio.run(_artifacts(summary.flow_run_id, final))}
    assert {"progress", "table", "markdown"} <= set(arts)
    assert float(arts["progress"].data) == 100.0
    table = json.loads(arts["table"].data) if isinstance(arts["table"].data, str) else arts["table"].data
    assert [row["status"] for row in table] == expected


def test_batch_plans_a_shared_request_once(env: Path, llm, sample_files, tmp_path: Path, caplog) -> None:
    llm.set(plan=planner, respond="A photo.")
    photos = []
    for i in range(10):
        photos.append(tmp_path / f"photo-{i}.png")
        shutil.copy(sample_files["photo"], photos[-1])
    lines = [{"id": f"p{i}", "request": f"What is in photo-{i}.png?", "inputs": [str(p)]} for i, p in enumerate(photos)]
    requests = _write_jsonl(tmp_path / "photos.jsonl", lines)

    summary = run_batch(str(requests), max_in_flight=2)

    assert llm.calls["plan"] == 1  # counted at the server
    assert summary.status == "completed" and summary.completed == 10
    started = [r.getMessage() for r in caplog.records if "in flight" in r.getMessage()]
    assert len(started) == 1 and started[0].startswith("10 line(s); batch ")  # no "0 with a record"
    assert (summary.plan_groups, summary.planning_calls, summary.plans_cached) == (1, 1, 9)
    assert summary.records[0].plan_source == "llm" and not summary.records[0].plan_cached
    for record in summary.records[1:]:
        assert record.plan_cached and record.plan_source == "batch plan cache of line 1"
    for i, record in enumerate(summary.records):
        run = RunSummary.model_validate_json(Path(record.storage_uri, "summary.json").read_text())
        assert run.plan[0].args == {"image": str(photos[i])}  # each line's own input
        assert run.results[0].status == "completed" and run.llm.calls == 1  # only its answer
        assert run.plan_source == record.plan_source  # the run's own summary says where its plan came from
    assert llm.calls["respond"] == 10


def test_plan_cache_key_and_adaptation() -> None:
    assert abstract_inputs("Caption /data/a.jpg, then a.jpg again", ["/data/a.jpg"]) == (
        "Caption <INPUT-0>, then <INPUT-0> again"
    )
    nodes = [
        PlanNode(id=0, task="image-to-text", dep=[], args={"image": "/data/a.jpg"}),
        PlanNode(id=1, task="text-classification", dep=[0], args={"text": "<GENERATED>-0"}),
    ]
    adapted = adapt_plan(nodes, ["/data/a.jpg"], ["s3://b/x/b.png"], "Caption b.png")
    assert adapted[0].args == {"image": "s3://b/x/b.png"} and adapted[1].dep == [0]
    assert parse_line(3, '{"request": "x", "id": 7}').spec.id == "7"
    assert "line 4 is not JSON" in parse_line(4, "{").error


def test_explicit_plan_with_no_llm_configured_at_all(
    tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(tiny_catalog))
    monkeypatch.setenv("HUGGINGGPT_STORAGE", str(tmp_path / "runs"))
    import tasks.llm

    def no_llm(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an LLM client was created")

    monkeypatch.setattr(tasks.llm.LLMClient, "__init__", no_llm)
    assert not load_settings().llm_configured

    plan = tmp_path / "plan.yaml"
    plan.write_text(
        yaml.safe_dump(
            [*SUMMARIZE, {"id": 1, "task": "text-classification", "dep": [0], "args": {"text": "<GENERATED>-0"}}]
        )
    )
    assert main(["run", "Summarize the cat story, then rate it", "--plan", str(plan), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "completed" and [r["status"] for r in out["results"]] == ["completed", "completed"]
    assert out["llm"]["calls"] == 0 and out["answer_source"] == "fallback"
    assert "summarization#0" in out["answer"]

    # a batch: lines with plans complete, a line that needs planning fails with what to set
    requests = _write_jsonl(
        tmp_path / "requests.jsonl",
        [
            {"id": "a", "request": "Summarize the cat story", "plan": SUMMARIZE},
            {"id": "b", "request": "Plan this yourself"},
        ],
    )
    summary = run_batch(str(requests))
    assert [r.status for r in summary.records] == ["completed", "failed"]
    assert "Set OPENAI_API_KEY" in summary.records[1].error and summary.records[1].flow_run_id is None


def test_plan_command_prints_the_plan_for_review(env: Path, llm, sample_files, tmp_path: Path, capsys) -> None:
    llm.set(plan=planner)
    photo = str(sample_files["photo"])
    assert main(["plan", "What is in photo.png?", "--input", photo, "--yaml"]) == 0
    out = capsys.readouterr().out
    nodes = yaml.safe_load(out)
    assert nodes == [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": photo}}]
    assert dict(llm.calls) == {"plan": 1}  # planned, nothing run

    # the reviewed plan runs as is, with no planning call
    saved = tmp_path / "plan.yaml"
    saved.write_text(out)
    assert main(["run", "What is in photo.png?", "--input", photo, "--plan", str(saved), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "completed"
    assert llm.calls["plan"] == 1

    assert main(["plan", "What is in photo.png?", "-i", photo, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["task"] == "image-classification"


def test_plan_command_without_llm_says_what_to_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["plan", "Caption photo.jpg"]) == 2
    err = capsys.readouterr().err
    assert "Set OPENAI_API_KEY" in err and "Traceback" not in err


def test_batch_command(env: Path, llm, tmp_path: Path, capsys) -> None:
    llm.set(plan=planner)
    requests = _write_jsonl(
        tmp_path / "r.jsonl",
        [{"id": "one", "request": "Summarize the cat story", "plan": SUMMARIZE}, "{broken"],
    )
    results = tmp_path / "out" / "results.jsonl"
    assert main(["batch", str(requests), "--results", str(results), "--max-in-flight", "2", "--json"]) == 1
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    # progress: plain lines on stderr, each finished line with the count, a rate and the time left
    assert re.search(r"line 1 \(one\) completed; lines 2/2 done · [0-9.]+/s · about 0 s left", captured.err), (
        captured.err
    )
    assert summary["results_uri"] == str(results) and (summary["completed"], summary["invalid"]) == (1, 1)
    assert [json.loads(x)["status"] for x in results.read_text().splitlines()] == ["completed", "invalid"]
    assert main(["batch", str(tmp_path / "nope.jsonl")]) == 2


@pytest.mark.llm_http  # nodes run on Dask workers
def test_request_runs_on_a_dask_cluster_with_a_model_cache_per_worker(
    env: Path, llm, sample_files, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("prefect_dask")
    from distributed import Client, LocalCluster
    from prefect_dask import DaskTaskRunner

    llm.set(respond="Done.")
    monkeypatch.setenv("HUGGINGGPT_CACHE", "false")  # run the models every time
    photo, missing = str(sample_files["photo"]), str(tmp_path / "missing.png")
    plan = [
        PlanNode(id=0, task="image-to-text", dep=[], args={"image": photo}),
        PlanNode(id=1, task="text-classification", dep=[0], args={"text": "<GENERATED>-0"}),
        PlanNode(id=2, task="image-to-text", dep=[], args={"image": missing}),
        PlanNode(id=3, task="text-classification", dep=[2], args={"text": "<GENERATED>-2"}),
    ]

    def cache_stats(settings: Any) -> dict[str, Any]:  # runs in the worker process: its own backend and cache
        from tasks.services import local_backend_for

        return local_backend_for(settings).cache.stats()

    with (
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        monkeypatch.setenv("HUGGINGGPT_TASK_RUNNER", "dask")
        monkeypatch.setenv("HUGGINGGPT_DASK_ADDRESS", cluster.scheduler_address)
        settings = load_settings()
        runner = task_runner_for(settings)
        assert isinstance(runner, DaskTaskRunner) and runner.address == cluster.scheduler_address
        stats = []
        for _ in range(2):
            with prefect_run_settings():
                spec = RequestSpec(request="Caption both photos, rate the captions", inputs=[photo, missing], plan=plan)
                state = hugginggpt_request(spec, return_state=True)
            summary = summary_of(state)
            assert isinstance(summary, RunSummary), summary
            # nodes ran on the cluster; a failed node's dependent still started there, and ended skipped
            assert [r.status for r in summary.results] == ["completed", "completed", "failed", "skipped"]
            assert summary.results[1].outputs["json"] and "missing.png" in summary.results[2].error
            assert "upstream task 2 (image-to-text) failed" in summary.results[3].error
            (worker_stats,) = client.run(cache_stats, settings).values()  # the worker process's own cache
            stats.append(worker_stats)
    assert stats[0]["loads"] == stats[1]["loads"] >= 2  # models loaded once, on the first run, in the worker
    assert stats[1]["hits"] >= stats[0]["hits"] + 2  # the second run used the worker's cached models


def test_warns_before_concurrent_requests_on_the_embedded_sqlite_server() -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_DATABASE_CONNECTION_URL, temporary_settings

    from flows.batch import sqlite_concurrency_warning

    sqlite = "sqlite+aiosqlite:////tmp/prefect.db"
    postgres = "postgresql+asyncpg://prefect:secret@db:5432/prefect"
    with temporary_settings(
        updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: sqlite}, restore_defaults={PREFECT_API_URL}
    ):
        warning = sqlite_concurrency_warning(4)
        assert warning and "SQLite" in warning and "PREFECT_API_URL" in warning and "--max-in-flight 1" in warning
        assert sqlite_concurrency_warning(1) is None
    with temporary_settings(
        updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: postgres}, restore_defaults={PREFECT_API_URL}
    ):
        assert sqlite_concurrency_warning(4) is None
    with temporary_settings(updates={PREFECT_API_URL: "http://prefect:4200/api"}):
        assert sqlite_concurrency_warning(4) is None  # a server of one's own: its database is not visible
    with temporary_settings(
        updates={PREFECT_API_URL: "http://127.0.0.1:4200/api", PREFECT_SERVER_DATABASE_CONNECTION_URL: sqlite}
    ):
        warning = sqlite_concurrency_warning(4)  # `prefect server start` here, on this profile's SQLite
        assert warning and "http://127.0.0.1:4200/api" in warning and "SQLite" in warning


def test_independent_lines_have_no_edge_between_them(
    env: Path, llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One line after the other (one in flight): the second line's task run names no upstream task run, though
    the first returned a record holding the same values (its plan source, its storage) as the second's parameters.

    No task run of the batch or of its lines asks the API for a concurrency slot (no tag of theirs has a limit),
    yet the line task runs and the lines' flow runs carry the batch's tag."""
    from tests.prefect_api import api_until, record_slot_requests, task_runs

    acquired = record_slot_requests(monkeypatch)

    rate = [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}]
    requests = _write_jsonl(
        tmp_path / "two.jsonl",
        [
            {"id": "a", "request": "Summarize the cat story", "plan": SUMMARIZE},
            {"id": "b", "request": "Rate my day", "plan": rate},
        ],
    )
    summary = run_batch(str(requests), max_in_flight=1)
    assert [r.status for r in summary.records] == ["completed", "completed"]
    runs = task_runs(summary.flow_run_id, {"line-1-a", "line-2-b"})
    upstream = [str(getattr(ref, "id", "")) for refs in (runs["line-2-b"].task_inputs or {}).values() for ref in refs]
    assert str(runs["line-1-a"].id) not in upstream, runs["line-2-b"].task_inputs

    assert acquired == []
    batch_tag = f"batch-{summary.flow_run_id}"
    assert all(batch_tag in runs[name].tags for name in ("line-1-a", "line-2-b")), runs
    children = [r.flow_run_id for r in summary.records]
    lines = api_until(
        lambda client: client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=children))),
        lambda found: len(found) == 2,
        what="the lines' flow runs",
    )
    assert all({"hugginggpt", batch_tag} <= set(run.tags) for run in lines), [run.tags for run in lines]
