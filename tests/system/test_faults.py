"""Injected faults: the LLM, remote endpoints, models and storage fail in the ways they do in production.

Each is retried where retrying may help (with backoff, a bounded number of times), falls back where another
candidate may work, and otherwise fails alone with a message that says what happened, while independent work goes
on. No wait is unbounded: each is bounded by a setting.
"""

from __future__ import annotations

import errno
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fsspec.implementations.local import LocalFileSystem

from flows.request import run_request
from tasks.experts.base import CannotRunHereError, ExpertError, ModelSpec
from tasks.experts.cache import ModelCache
from tasks.experts.local import LocalBackend
from tasks.experts.local import loading as local_loading
from tasks.schemas import RequestSpec
from tasks.settings import Settings
from tests.llm_server import HTTPFault, plan_json
from tests.tasks.experts.test_experts_remote import InferenceServer, Reply
from tests.web_server import WebServer

# the OpenAI client over HTTP: its timeouts, retries and backoff are what these tests check
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.llm_http]

LOVELY = {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}
STORY = {"id": 1, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat and a dog"}}


def _catalog(tmp_path: Path, tiny_catalog: Path, *extra: dict[str, Any]) -> Path:
    path = tmp_path / "catalog.jsonl"
    path.write_text(tiny_catalog.read_text() + "".join(json.dumps(e) + "\n" for e in extra))
    return path


@pytest.fixture
def endpoint() -> Iterator[InferenceServer]:
    server = InferenceServer().start()
    yield server
    server.stop()


# --- the LLM ------------------------------------------------------------------------------------------------------


def test_llm_returns_garbage(env: Path, llm: Any) -> None:
    """A garbage plan is sent back once, then fails the request with the reason (see also test_bad_inputs); a
    garbage selection falls back to the top-ranked candidate; an empty answer to a built one."""
    llm.set(plan="!!! %% not a plan %% !!!")
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "failed" and "the plan is not JSON" in summary.error and llm.calls["plan"] == 2

    llm.reset()
    llm.set(plan=plan_json(LOVELY), select="<<garbage>> {'choices': oops", respond="")
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed", summary.error
    (assignment,) = summary.assignments
    assert assignment.reason.startswith("selection by the LLM failed (no JSON object or list found in the reply")
    assert assignment.reason.endswith("took the top-ranked candidate")
    assert summary.answer_source == "fallback" and summary.answer_error == "the LLM returned an empty answer"
    assert "text-classification#0 with tiny/text-classification" in summary.answer


def test_llm_timeout_is_bounded_by_the_setting(env: Path, llm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_LLM_TIMEOUT", "0.5")
    # the server answers only a minute later: only the timeout can end each call
    llm.set(plan=HTTPFault(200, delay=60))
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "failed"
    assert "did not answer within 0.5 s; check OPENAI_BASE_URL or raise HUGGINGGPT_LLM_TIMEOUT" in summary.error

    llm.reset()
    llm.set(plan=plan_json(LOVELY), respond=HTTPFault(200, delay=60))
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed" and summary.answer_source == "fallback"
    assert "did not answer within 0.5 s" in summary.answer_error and summary.results[0].outputs["text"]


def _arrivals(llm: Any, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When each planning call reached the LLM server."""
    times: list[float] = []
    real = llm._answer

    def answer(body: dict[str, Any], stage: str) -> Any:
        if stage == "plan":
            times.append(time.monotonic())
        return real(body, stage)

    monkeypatch.setattr(llm, "_answer", answer)
    return times


def test_llm_429_and_5xx_are_retried_with_backoff(env: Path, llm: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "2")
    times = _arrivals(llm, monkeypatch)
    llm.set(plan=[HTTPFault(429, "slow down"), HTTPFault(503, "overloaded"), plan_json(LOVELY)])
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed", summary.error
    assert llm.calls["plan"] == 3 and len(times) == 3
    first_wait, second_wait = times[1] - times[0], times[2] - times[1]
    assert first_wait >= 0.35 and second_wait >= 0.7  # about 0.5 s then 1 s: exponential backoff


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (HTTPFault(429, "slow down"), "is rate limiting requests (429) after retries"),
        (HTTPFault(503, "overloaded"), "answered HTTP 503"),
    ],
)
def test_llm_failing_after_every_retry_fails_clearly(
    env: Path, llm: Any, monkeypatch: pytest.MonkeyPatch, fault: HTTPFault, expected: str
) -> None:
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "1")
    llm.set(plan=fault)
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "failed" and expected in summary.error
    assert llm.calls["plan"] == 2  # the call and one retry
    assert json.loads(Path(summary.storage_uri, "summary.json").read_text())["error"] == summary.error


# --- remote endpoints ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fault", ["5xx", "timeout"])
def test_remote_endpoint_fault_is_retried_then_falls_back(
    env: Path,
    llm: Any,
    endpoint: InferenceServer,
    tiny_catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    # a timeout: the endpoint answers only a minute later
    reply = Reply({"error": "upstream overloaded"}, status=500) if fault == "5xx" else Reply([], delay=60)
    url = endpoint.add("/sentiment", reply)
    remote = {"id": "acme/remote-sentiment", "task": "text-classification", "endpoint": url, "downloads": 10**9}
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(_catalog(tmp_path, tiny_catalog, remote)))
    monkeypatch.setenv("HUGGINGGPT_REMOTE_RETRIES", "2")
    monkeypatch.setenv("HUGGINGGPT_REMOTE_RETRY_WAIT", "0.05")
    monkeypatch.setenv("HUGGINGGPT_REMOTE_TIMEOUT", "0.5")
    llm.set(
        plan=plan_json(LOVELY),
        select=json.dumps({"choices": [{"id": 0, "model": "acme/remote-sentiment", "reason": "the best one"}]}),
    )
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed", summary.error
    (result,) = summary.results
    assert result.backend == "local" and result.model.startswith("tiny/text-classification")
    first, second = result.attempts
    assert (first.model, first.backend, first.ok) == ("acme/remote-sentiment", "remote", False)
    if fault == "5xx":
        assert "failed on text-classification with HTTP 500 (tried 3 times)" in first.error
        assert len(endpoint.received("/sentiment")) == 3
    else:
        assert "timed out after 0.5 s on text-classification" in first.error
        assert len(endpoint.received("/sentiment")) == 1  # a timeout is not asked again
    assert second.ok


# --- models -------------------------------------------------------------------------------------------------------


@pytest.fixture
def faulty_models(
    tiny_models: dict[str, Path], tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """Two more sentiment models ranked above the tiny ones: one whose weights do not load, one that loads but
    raises at inference."""
    broken = tmp_path / "broken-at-load"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "bert"}')  # a proven architecture, no weights
    raises = tmp_path / "raises-at-inference"
    shutil.copytree(tiny_models["text-classification"], raises)
    real = local_loading.load_pipeline

    def pipeline(self: LocalBackend, task: str, model: ModelSpec) -> Any:
        loaded = real(self, task, model)
        if "raises-at-inference" not in model.source:
            return loaded

        def run(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("injected failure at inference")

        return run

    monkeypatch.setattr(local_loading, "load_pipeline", pipeline)
    catalog = _catalog(
        tmp_path,
        tiny_catalog,
        {"id": "acme/broken-at-load", "task": "text-classification", "downloads": 10**9, "local_path": str(broken)},
        {
            "id": "acme/raises-at-inference",
            "task": "text-classification",
            "downloads": 10**8,
            "local_path": str(raises),
        },
    )
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(catalog))
    return catalog


def test_model_raising_at_load_and_at_inference_falls_back(env: Path, llm: Any, faulty_models: Path) -> None:
    llm.set(plan=plan_json(LOVELY))
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed", summary.error
    (result,) = summary.results
    broken, raises, works = result.attempts
    assert broken.model == "acme/broken-at-load" and "could not load model 'acme/broken-at-load'" in broken.error
    assert raises.model == "acme/raises-at-inference"
    assert "failed on text-classification: RuntimeError: injected failure at inference" in raises.error
    assert works.ok and result.model == works.model and works.model.startswith("tiny/")


def test_model_failures_with_no_candidate_left_fail_the_node_alone(
    env: Path, llm: Any, faulty_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUGGINGGPT_MAX_FALLBACKS", "1")
    llm.set(plan=plan_json(LOVELY, STORY))
    summary = run_request("Rate 'what a lovely day' and summarize the story")
    assert summary.status == "failed"
    rated, summarized = summary.results
    assert rated.status == "failed" and rated.error.startswith("every model candidate for text-classification failed")
    assert "1) acme/broken-at-load" in rated.error and "2) acme/raises-at-inference" in rated.error
    assert summarized.status == "completed" and summarized.outputs["text"] is not None


@pytest.mark.parametrize(
    "oom",
    [
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        MemoryError(),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    ],
    ids=["torch", "python", "mps"],
)
def test_out_of_memory_at_load_means_cannot_run_here(
    env: Path,
    llm: Any,
    tiny_models: dict[str, Path],
    tiny_catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oom: BaseException,
) -> None:
    big = tmp_path / "too-big"
    shutil.copytree(tiny_models["text-classification"], big)
    real = local_loading.load_pipeline

    def pipeline(self: LocalBackend, task: str, model: ModelSpec) -> Any:
        if model.source == str(big):
            raise oom
        return real(self, task, model)

    monkeypatch.setattr(local_loading, "load_pipeline", pipeline)
    entry = {"id": "acme/too-big", "task": "text-classification", "downloads": 10**9, "local_path": str(big)}
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(_catalog(tmp_path, tiny_catalog, entry)))
    monkeypatch.setenv("HUGGINGGPT_MAX_FALLBACKS", "1")
    llm.set(plan=plan_json(LOVELY))
    summary = run_request("Rate 'what a lovely day'")
    assert summary.status == "completed", summary.error
    (result,) = summary.results
    skipped, ran = result.attempts
    assert skipped.model == "acme/too-big" and skipped.skipped and not skipped.ok
    assert skipped.error.startswith("cannot run here: model 'acme/too-big'") and "out of memory" in skipped.error
    assert ran.ok and result.model == ran.model != "acme/too-big"


def test_out_of_memory_at_load_is_its_own_error(tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    def pipeline(self: LocalBackend, task: str, model: ModelSpec) -> Any:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(local_loading, "load_pipeline", pipeline)
    backend = LocalBackend(cache=ModelCache(1))
    spec = ModelSpec(id="acme/x", task="text-classification", local_path=str(tiny_models["text-classification"]))
    with pytest.raises(CannotRunHereError, match="does not fit on cpu: out of memory while loading"):
        backend.run("text-classification", spec, {"text": "hi"})
    assert len(backend.cache) == 0  # nothing half-loaded is kept
    monkeypatch.setattr(
        local_loading, "load_pipeline", lambda self, task, model: (_ for _ in ()).throw(ValueError("x"))
    )
    with pytest.raises(ExpertError) as caught:
        backend.run("text-classification", spec, {"text": "hi"})
    assert not isinstance(caught.value, CannotRunHereError)


# --- storage ------------------------------------------------------------------------------------------------------


@pytest.fixture
def failing_writes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Writes into a folder whose path contains ``fault["where"]`` fail (``fault["times"]`` times, or always)."""
    fault: dict[str, Any] = {"where": None, "times": None, "failed": 0}
    lock = threading.Lock()
    real = LocalFileSystem.mv

    def mv(self: LocalFileSystem, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        with lock:
            hit = fault["where"] is not None and fault["where"] in str(path2)
            if hit and (fault["times"] is None or fault["failed"] < fault["times"]):
                fault["failed"] += 1
                raise OSError(errno.EIO, "injected I/O error")
        return real(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", mv)
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRIES", "2")
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRY_WAIT", "0.01")
    return fault


DETECT = {"id": 1, "task": "object-detection", "dep": [-1], "args": {"image": "photo.png"}}
CLASSIFY_DRAWING = {"id": 2, "task": "image-classification", "dep": [1], "args": {"image": "<GENERATED>-1"}}


def test_storage_write_failing_once_is_retried(
    env: Path, llm: Any, sample_files: dict[str, Path], failing_writes: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    failing_writes.update(where="/nodes/1-object-detection/", times=1)
    llm.set(plan=plan_json(LOVELY, DETECT, CLASSIFY_DRAWING))
    summary = run_request(
        RequestSpec(request="Rate my words, find the objects in photo.png", inputs=[str(sample_files["photo"])])
    )
    assert summary.status == "completed", summary.error
    assert failing_writes["failed"] == 1
    assert Path(summary.results[1].outputs["image"]).is_file()
    assert any("failed (OSError: [Errno 5] injected I/O error); retrying" in r.getMessage() for r in caplog.records)


def test_storage_write_failing_for_good_fails_the_node_alone(
    env: Path, llm: Any, sample_files: dict[str, Path], failing_writes: dict[str, Any]
) -> None:
    failing_writes.update(where="/nodes/1-object-detection/")
    llm.set(plan=plan_json(LOVELY, DETECT, CLASSIFY_DRAWING, {**STORY, "id": 3}))
    summary = run_request(
        RequestSpec(request="Rate my words, find the objects in photo.png", inputs=[str(sample_files["photo"])])
    )
    assert summary.status == "failed"
    rated, detected, classified, summarized = summary.results
    assert detected.status == "failed"
    assert detected.error.startswith(f"could not write {summary.storage_uri}/nodes/1-object-detection/")
    assert detected.error.endswith("OSError: [Errno 5] injected I/O error")
    assert failing_writes["failed"] == 3  # the write and two retries
    assert classified.status == "skipped" and "upstream task 1 (object-detection) failed" in classified.error
    assert rated.status == summarized.status == "completed"
    stored = json.loads(Path(summary.storage_uri, "summary.json").read_text())
    assert [r["status"] for r in stored["results"]] == ["completed", "failed", "skipped", "completed"]


# --- no hang ------------------------------------------------------------------------------------------------------


def test_every_wait_is_bounded_by_a_setting() -> None:
    fields = Settings.model_fields
    for name in ("llm_timeout", "remote_timeout", "input_timeout"):
        assert any(getattr(m, "gt", None) == 0 for m in fields[name].metadata), f"{name} may not be 0 or less"
    defaults = Settings(openai_base_url="http://x")
    assert defaults.llm_timeout and defaults.remote_timeout and defaults.input_timeout
    for name in ("llm_max_retries", "remote_retries", "storage_retries", "max_fallbacks"):
        assert isinstance(getattr(defaults, name), int), name


def test_silent_parties_cannot_hang_a_request(
    env: Path,
    llm: Any,
    endpoint: InferenceServer,
    tiny_catalog: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A remote endpoint, an input server and the LLM (for the answer) that answer nothing for a minute: the request
    still ends, and each failure names the setting that bounded it (a limit that did not fire shows as another
    outcome)."""
    painter = endpoint.add("/paint", Reply(b"", delay=60, content_type="image/png"))
    monkeypatch.setenv(
        "HUGGINGGPT_CATALOG",
        str(_catalog(tmp_path, tiny_catalog, {"id": "acme/painter", "task": "text-to-image", "endpoint": painter})),
    )
    for name in ("HUGGINGGPT_REMOTE_TIMEOUT", "HUGGINGGPT_INPUT_TIMEOUT", "HUGGINGGPT_LLM_TIMEOUT"):
        monkeypatch.setenv(name, "1")
    web = WebServer(tmp_path)
    try:
        silent = web.silent("/photo.png", seconds=60)
        llm.set(
            plan=plan_json(
                LOVELY,
                {"id": 1, "task": "text-to-image", "dep": [-1], "args": {"text": "a red house"}},
                {"id": 2, "task": "image-classification", "dep": [-1], "args": {"image": silent}},
            ),
            respond=HTTPFault(200, delay=60),
        )
        summary = run_request(
            RequestSpec(request="Rate my words, paint a red house, classify the photo", inputs=[silent])
        )
    finally:
        web.stop()
    rated, painted, classified = summary.results
    assert rated.status == "completed"
    assert painted.status == "failed" and "timed out after 1 s" in painted.error
    assert classified.status == "failed" and "within 1 s (HUGGINGGPT_INPUT_TIMEOUT)" in classified.error
    assert summary.answer_source == "fallback" and "HUGGINGGPT_LLM_TIMEOUT" in summary.answer_error
