"""The services a run uses, built from settings in one place and swapped by ``override``: a whole flow run with an
in-process chat model and an in-process expert backend, no environment variable and no HTTP server."""

from __future__ import annotations

import contextvars
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tasks.experts.base import ExpertOutput, ModelSpec
from tasks.llm import ChatCall, FunctionModel, LLMClient, scripted
from tasks.schemas import RequestSpec
from tasks.services import Services, in_use, overridden, override, services_for
from tasks.settings import RunOptions, Settings
from tasks.storage import store_for


class RecordingBackend:
    """An expert backend in process: answers from its input, and records the thread each call ran in."""

    name = "local"

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.threads: list[str] = []
        self._lock = threading.Lock()

    def run(self, task: str, model: ModelSpec, inputs: dict[str, Any]) -> ExpertOutput:
        with self._lock:
            self.threads.append(threading.current_thread().name)
        text = str(inputs.get("text", ""))
        return ExpertOutput(text=f"{self.marker}:{task}:{text}", json={"label": self.marker, "text": text})


def _plan(*texts: str) -> str:
    return json.dumps(
        {
            "tasks": [
                {"id": i, "task": "text-classification", "dep": [-1], "args": {"text": t}} for i, t in enumerate(texts)
            ]
        }
    )


def test_services_are_built_from_settings_once_each_and_given_ones_win() -> None:
    settings = Settings()
    services = Services.from_settings(settings)
    assert services.local_backend is services.local_backend  # built once, then kept
    assert services.local_backend is Services.from_settings(settings).local_backend  # shared by the process
    assert services.backends() == {"local": services.local_backend, "remote": services.remote_backend}
    assert services.availability.remote is services.remote_backend
    given = FunctionModel(scripted())
    assert Services(settings, chat_model=given).chat_model is given
    assert services.replace(chat_model=given).chat_model is given and services.replace().chat_model_given is False
    configured = Settings(openai_base_url="http://127.0.0.1:9/v1")
    assert isinstance(Services.from_settings(configured).chat_model, LLMClient)
    with pytest.raises(TypeError, match=r"unknown service.*chat"):
        Services(settings, chat=given)


def test_a_run_s_store_is_made_once_and_shared_by_its_nodes(tmp_path: Path) -> None:
    made: list[str] = []

    def factory(run_id: str) -> Any:
        made.append(run_id)
        return store_for(Settings(storage=str(tmp_path)), run_id)

    services = Services(Settings(storage=str(tmp_path)), store_factory=factory)
    stores: list[Any] = []
    threads = [threading.Thread(target=lambda: stores.append(services.store("run-a"))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == ["run-a"] and all(s is stores[0] for s in stores)  # eight nodes of one run: one store
    other = services.store("run-b")
    assert made == ["run-a", "run-b"] and other.run_path != stores[0].run_path
    for n in range(100):  # a long-lived service keeps a bounded number of them
        services.store(f"run-{n}")
    assert len(services._stores) <= 64
    assert services.store("run-99") is services.store("run-99")


def test_override_swaps_within_its_block_nests_and_restores() -> None:
    settings = Settings()
    first, second = FunctionModel(scripted(), model="first"), FunctionModel(scripted(), model="second")
    backend = RecordingBackend("x")
    built = services_for(settings).local_backend
    assert overridden() == {}
    with override(chat_model=first):
        assert services_for(settings).chat_model is first
        with override(chat_model=second, local_backend=backend):
            assert services_for(settings).chat_model is second
            assert services_for(settings).local_backend is backend
        assert services_for(settings).chat_model is first
        assert services_for(settings).local_backend is built
    assert overridden() == {}
    assert services_for(settings).local_backend is built
    with pytest.raises(TypeError, match="unknown service"), override(llm=first):
        pass


def test_override_reaches_threads_that_run_in_the_callers_context() -> None:
    """What Prefect's thread-pool task runner does for each task run (``copy_context().run``); a bare thread started
    outside the block does not see it."""
    import contextvars

    settings = Settings()
    model = FunctionModel(scripted(), model="in-thread")
    seen: dict[str, Any] = {}

    def look(name: str) -> None:
        seen[name] = services_for(settings).chat_model

    with override(chat_model=model):
        context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(look, "copied"))
    thread.start()
    thread.join(timeout=30)
    assert seen["copied"] is model
    look("outside")
    assert seen["outside"] is not model


def test_services_in_use_are_shared_for_their_settings_only() -> None:
    settings, other = Settings(), Settings()
    assert services_for(settings) is not services_for(settings)  # outside a run: built per call
    running = services_for(settings)
    with in_use(running):
        assert services_for(settings) is running
        assert services_for(other) is not running  # other settings: their own services
        seen: list[Services] = []
        context = contextvars.copy_context()
        thread = threading.Thread(target=lambda: context.run(lambda: seen.append(services_for(settings))))
        thread.start()
        thread.join()
        assert seen == [running]  # a task run's thread, in the caller's context
        backend = RecordingBackend("inner")
        with override(local_backend=backend):  # an override inside the block wins
            inner = services_for(settings)
            assert inner is not running and inner.local_backend is backend
        assert services_for(settings) is running
    assert services_for(settings) is not running


@pytest.mark.usefixtures("prefect_server")
def test_override_runs_a_whole_flow_in_process_nodes_in_worker_threads_included(
    tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plan, selection and the answer come from a FunctionModel; both nodes run on an in-process backend in the task
    runner's worker threads; no LLM is configured in the environment (the embedded controller cannot load offline)
    and no server answers."""
    from flows.prefect_setup import prefect_run_settings
    from flows.request import hugginggpt_request, summary_of

    assert not Settings().llm_configured
    answers: list[str] = []

    def reply(call: ChatCall) -> str:
        if call.stage == "plan":
            return _plan("a sunny day", "a rainy night")
        if call.stage == "respond":
            digest = call.messages[-1]["content"]
            answers.append(digest)
            return "Both texts were classified."
        return '{"choices": []}'

    model = FunctionModel(reply, model="in-process")
    backend = RecordingBackend("recorded")
    import tasks.execute

    resolved: list[Services] = []

    def recorded_services_for(settings: Settings) -> Services:
        services = services_for(settings)
        resolved.append(services)
        return services

    monkeypatch.setattr(tasks.execute, "services_for", recorded_services_for)
    with override(chat_model=model, local_backend=backend), prefect_run_settings():
        state = hugginggpt_request(
            RequestSpec(request="Classify two texts"),
            RunOptions(storage=str(tmp_path / "runs"), catalog=str(tiny_catalog)),
            return_state=True,
        )
    summary = summary_of(state)
    assert summary is not None and summary.status == "completed", summary
    stages = [c.stage for c in model.calls]
    assert stages[:2] == ["plan", "select"] and stages[-1] == "respond"
    assert summary.answer == "Both texts were classified." and summary.llm.calls == len(model.calls)
    outputs = {r.id: r.outputs["text"] for r in summary.results}
    assert outputs == {0: "recorded:text-classification:a sunny day", 1: "recorded:text-classification:a rainy night"}
    assert "recorded:text-classification:a rainy night" in answers[0]  # the answer saw the backend's outputs
    assert len(backend.threads) == 2
    assert threading.main_thread().name not in backend.threads  # the nodes ran in the task runner's threads
    assert all(r.model.startswith("tiny/text-classification") and r.backend == "local" for r in summary.results)
    assert len(resolved) == 2 and resolved[0] is resolved[1]  # both nodes used the run's services, built once


def test_the_llm_fixture_answers_in_process_with_no_environment_and_no_server(llm: Any) -> None:
    """The suite's ``llm`` fixture gives its script to every run through ``override``: nothing in the environment,
    no URL; the calls are recorded as the bodies the OpenAI client would send, faults become the client's errors."""
    import os

    from tasks.llm import LLMError
    from tasks.settings import load_settings
    from tests.llm_server import HTTPFault, pieces

    assert not {"OPENAI_BASE_URL", "OPENAI_API_KEY", "HUGGINGGPT_LLM_MODEL"} & set(os.environ)
    with pytest.raises(RuntimeError, match="llm_http"):
        llm.base_url  # noqa: B018
    model = services_for(load_settings()).chat_model
    llm.set(respond=["Hello there, how are you today?", "Second answer."], select=HTTPFault(503, "overloaded"))
    assert model.chat([{"role": "user", "content": "hi"}], stage="respond")[0] == "Hello there, how are you today?"
    streamed: list[str] = []
    reply, usage = model.stream([{"role": "user", "content": "again"}], on_text=streamed.append, stage="respond")
    assert reply == "Second answer." and streamed == pieces("Second answer.") and usage.completion_tokens == 2
    with pytest.raises(LLMError, match="answered HTTP 503: overloaded"):
        model.chat([{"role": "user", "content": "pick"}], stage="select", schema={"type": "object"})
    assert llm.calls == {"respond": 2, "select": 1} and llm.streamed == {"respond": 1}
    first, second, third = llm.requests
    assert first["messages"] == [{"role": "user", "content": "hi"}] and "stream" not in first
    assert second["stream"] is True and third["response_format"]["json_schema"]["name"] == "select"


@pytest.mark.llm_http
def test_the_llm_fixture_marked_llm_http_is_the_server_reached_through_the_environment(llm: Any) -> None:
    import os

    from tasks.settings import load_settings

    assert os.environ["OPENAI_BASE_URL"] == llm.base_url and not overridden()
    model = services_for(load_settings()).chat_model
    assert isinstance(model, LLMClient)
    llm.set(respond="Over the wire.")
    assert model.chat([{"role": "user", "content": "hi"}], stage="respond")[0] == "Over the wire."
    assert llm.calls == {"respond": 1}
