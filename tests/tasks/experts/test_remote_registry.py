"""The remote backend's registry (``tasks/experts/remote/registry.py``): one entry per task type, the backend looks
every call up there, and a task it has no entry for is a clear error naming it.

Each registered call against an inference server on 127.0.0.1 is tested in ``test_experts_remote.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from tasks.experts.base import CannotRunHereError, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.remote import MODALITIES, SUPPORTED_TASKS, RemoteBackend
from tasks.experts.remote.registry import REGISTRY, RemoteOptions, RemoteTask, remote_task
from tasks.task_types import NOT_SERVED_REMOTELY, TASK_TYPES

ENDPOINT = "http://127.0.0.1:9/model"  # never reached: the calls below send nothing


def test_the_registry_covers_every_task_the_backend_offers() -> None:
    assert set(REGISTRY) | set(NOT_SERVED_REMOTELY) == set(TASK_TYPES), "every task type: a call, or why not"
    assert not set(REGISTRY) & set(NOT_SERVED_REMOTELY)
    assert tuple(t for t in TASK_TYPES if t in REGISTRY) == SUPPORTED_TASKS, "in the task table's order"
    assert RemoteBackend().tasks == frozenset(REGISTRY) == frozenset(SUPPORTED_TASKS)
    assert all(entry.name == task for task, entry in REGISTRY.items())
    registered_by = {entry.call.__module__ for entry in REGISTRY.values()}
    assert registered_by == {m.__name__ for m in MODALITIES}, "the modality modules fill the registry, nothing else"
    assert [t for t, e in REGISTRY.items() if e.not_by_endpoints] == ["text-to-video"]
    assert [t for t, e in REGISTRY.items() if e.refuse is not None] == ["translation"]


def test_registry_refuses_a_second_call_and_tasks_not_served_remotely() -> None:
    existing = REGISTRY["translation"]
    with pytest.raises(ValueError, match="'translation' is registered twice"):
        remote_task("translation")(existing.call)
    assert REGISTRY["translation"] is existing
    with pytest.raises(ValueError, match=r"'depth-estimation' is not served remotely: .*no depth-estimation call"):
        remote_task("depth-estimation")
    with pytest.raises(ValueError, match="'no-such-task' is not a task type"):
        remote_task("no-such-task")


def test_an_unknown_task_is_a_clear_error_naming_it() -> None:
    backend = RemoteBackend(timeout=1.0)
    spec = ModelSpec(id="acme/x", task="no-such-task", endpoint=ENDPOINT)
    with pytest.raises(ExpertError) as caught:
        backend.run("no-such-task", spec, {"text": "x"})
    message = str(caught.value)
    assert message.startswith("the remote backend cannot run task 'no-such-task' (model 'acme/x'); supported tasks: ")
    assert message.endswith(", ".join(SUPPORTED_TASKS))
    with pytest.raises(ExpertError, match=r"cannot run task 'depth-estimation': .*no depth-estimation call"):
        backend.entry("depth-estimation")
    assert backend.entry("Text_Classification") is REGISTRY["text-classification"], "spellings are normalized"
    assert not backend.supports("no-such-task") and backend.supports("image to text")


def test_the_backend_runs_the_call_the_registry_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Swapping one entry changes what the backend does for that task, and for no other: the backend keeps no list
    of its own. The entry's refusal is asked before anything is sent."""
    seen: list[tuple[int, str, str]] = []

    def shout(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        seen.append((options.top_k, str(inputs["text"]), model.id))
        return ExpertOutput(text=str(inputs["text"]).upper())

    def refuse_secrets(inputs: ExpertInputs, model: ModelSpec) -> str | None:
        return "it does not read secrets" if "secret" in str(inputs["text"]) else None

    monkeypatch.setitem(REGISTRY, "summarization", RemoteTask(name="summarization", call=shout, refuse=refuse_secrets))
    backend = RemoteBackend(timeout=1.0, top_k=3)
    spec = ModelSpec(id="acme/loud", task="summarization", endpoint=ENDPOINT)
    first = backend.run("summarization", spec, {"text": "a quiet day"})
    second = backend.run("summarization", spec, {"text": "a long night"})
    assert (first.text, second.text) == ("A QUIET DAY", "A LONG NIGHT")
    assert seen == [(3, "a quiet day", "acme/loud"), (3, "a long night", "acme/loud")]
    assert (first.extra["backend"], first.extra["endpoint"], first.extra["model"]) == ("remote", ENDPOINT, "acme/loud")
    with pytest.raises(CannotRunHereError, match=r"cannot run summarization: it does not read secrets"):
        backend.run("summarization", spec, {"text": "the secret plan"})
    assert len(seen) == 2, "refused before the call"
    assert REGISTRY["translation"].call is not shout
