"""Prefetch: the plan's models download and load while upstream nodes run, and each node waits only for its own.

The chain tests synchronise on events: an upstream node's compute lasts until the later nodes' models are loaded
(or a generous timeout, which fails the test), so the recorded times show the overlap without any sleep.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tasks.experts.base import ModelSpec
from tasks.experts.cache import ModelCache, track_model_wait
from tasks.prefetch import PrefetchPlan, plan_prefetch, start_prefetch
from tasks.schemas import Assignment, RequestSpec

TIMEOUT = 30.0


def assignment(node_id: int, task: str, model: str, *, backend: str = "local", local: bool = True) -> Assignment:
    spec = ModelSpec(id=model, task=task, local_path=f"/models/{model}" if local else None)
    return Assignment(node_id=node_id, task=task, model=model, backend=backend, reason="test", spec=spec)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# the pure core
# ---------------------------------------------------------------------------
def test_plan_loads_each_local_model_once_in_node_order_up_to_the_cache_size() -> None:
    plan = plan_prefetch(
        [
            assignment(0, "text-generation", "a", local=False),
            assignment(1, "summarization", "b"),
            assignment(2, "text-generation", "a", local=False),  # the same model again
            assignment(3, "image-to-text", "r", backend="remote", local=False),
            assignment(4, "text-classification", "c", local=False),
            assignment(5, "translation", "d", local=False),
        ],
        max_models=3,
    )
    assert [(t, s.id) for t, s in plan.load] == [
        ("text-generation", "a"),
        ("summarization", "b"),
        ("text-classification", "c"),
    ]
    # every local Hub model downloads, beyond the cache size too; a local folder and a remote model need none
    assert [s.id for s in plan.download] == ["a", "c", "d"]


def test_plan_keeps_loads_within_the_parameter_budget() -> None:
    sizes = {"a": 600, "b": 300, "c": 200}
    plan = plan_prefetch(
        [assignment(0, "text-generation", "a"), assignment(1, "summarization", "b"), assignment(2, "translation", "c")],
        max_models=4,
        max_params=800,
        sizes=lambda spec: sizes[spec.id],
    )
    assert [s.id for _, s in plan.load] == ["a", "c"]  # b would take the total to 900


def test_plan_without_loading_only_downloads() -> None:
    plan = plan_prefetch([assignment(0, "summarization", "a", local=False)], max_models=4, load=False)
    assert plan == PrefetchPlan(load=[], download=[plan.download[0]]) and plan.download[0].id == "a"


# ---------------------------------------------------------------------------
# the cache: announced loads
# ---------------------------------------------------------------------------
class StubBackend:
    """A local backend whose loads record their spans and set an event per model when done."""

    device = "cpu"

    def __init__(self, gate: Callable[[str], None] = lambda model: None) -> None:
        self.cache = ModelCache(max_models=4)
        self.spans: dict[str, tuple[float, float]] = {}
        self.loaded: dict[str, threading.Event] = {}
        self.load_threads: list[str] = []
        self._gate = gate
        self._lock = threading.Lock()

    def event(self, model: str) -> threading.Event:
        with self._lock:
            return self.loaded.setdefault(model, threading.Event())

    def load(self, task: str, model: ModelSpec) -> Any:
        def loader() -> str:
            self._gate(model.id)  # what holds the load back (a download under way)
            start = time.perf_counter()
            with self._lock:
                self.load_threads.append(threading.current_thread().name)
            self.spans[model.id] = (start, time.perf_counter())
            return f"loaded {model.id}"

        entry = self.cache.get_or_load((task, model.source, model.revision, self.device), loader)
        self.event(model.id).set()
        return entry


def test_a_chain_finds_its_later_models_loaded_during_its_first_node() -> None:
    """Node 0 computes until the models of nodes 1 and 2 are loaded: they load during its compute, and nodes 1
    and 2 then wait 0 s for their models."""
    computing = threading.Event()  # node 0 has its model and computes: the later loads may start
    backend = StubBackend(gate=lambda m: computing.wait(TIMEOUT) if m != "m0" else None)
    chain = [assignment(i, task, f"m{i}") for i, task in enumerate(("text-generation", "summarization", "translation"))]
    start_prefetch(plan_prefetch(chain, max_models=4), backend)

    spans: dict[int, tuple[float, float]] = {}
    waits: dict[int, float] = {}
    overlapped: dict[int, bool] = {}

    def node(i: int) -> None:
        wait = track_model_wait()
        backend.load(chain[i].task, chain[i].spec)
        waits[i] = wait.seconds
        start = time.perf_counter()
        if i == 0:  # node 0's compute lasts until the models of its dependents are loaded
            computing.set()
            overlapped[i] = backend.event("m1").wait(TIMEOUT) and backend.event("m2").wait(TIMEOUT)
        spans[i] = (start, time.perf_counter())

    runner = threading.Thread(target=lambda: [node(i) for i in range(3)])
    runner.start()
    runner.join(TIMEOUT)
    assert not runner.is_alive()

    assert overlapped == {0: True}
    node0_start, node0_end = spans[0]
    for model in ("m1", "m2"):
        load_start, load_end = backend.spans[model]
        assert node0_start <= load_start <= load_end <= node0_end, f"{model} did not load during node 0's compute"
    assert waits[1] == 0 and waits[2] == 0
    # every model was loaded once, by the prefetch, in node order
    assert backend.cache.stats()["loads"] == 3
    assert backend.load_threads and all(t.startswith("prefetch-load") for t in backend.load_threads)
    assert list(backend.spans) == ["m0", "m1", "m2"]


def test_a_node_waits_for_its_own_model_only() -> None:
    """The slow model's load is held back; a node of the other model gets its model without waiting for it, and a
    node of the slow model waits for that load (counted as its wait) instead of loading it again."""
    release = threading.Event()
    backend = StubBackend(gate=lambda m: release.wait(TIMEOUT) if m == "slow" else None)
    chain = [assignment(0, "summarization", "slow"), assignment(1, "translation", "fast")]
    backend.load("translation", chain[1].spec)  # already loaded before the prefetch
    start_prefetch(plan_prefetch(chain, max_models=4), backend)
    wait = track_model_wait()
    backend.load("translation", chain[1].spec)
    assert wait.seconds == 0 and not release.is_set()
    waited = threading.Thread(target=lambda: (track_model_wait(), backend.load("summarization", chain[0].spec)))
    release.set()
    waited.start()
    waited.join(TIMEOUT)
    assert backend.cache.stats()["loads"] == 2 and backend.load_threads[-1].startswith("prefetch-load")


def test_a_prefetch_evicts_nothing() -> None:
    """The cache is full of models other requests use: the prefetch leaves them, the node loads its own."""
    backend = StubBackend()
    backend.cache.max_models = 2
    for model in ("x", "y"):
        backend.load("summarization", ModelSpec(id=model, task="summarization", local_path=f"/models/{model}"))
    chain = [assignment(0, "translation", "m")]
    start_prefetch(plan_prefetch(chain, max_models=2), backend).wait(TIMEOUT)
    held = backend.cache.keys()
    assert [k[1] for k in held] == ["/models/x", "/models/y"] and backend.cache.stats()["evictions"] == 0


def test_a_failed_prefetch_leaves_the_load_to_the_node() -> None:
    calls: list[str] = []

    def gate(model: str) -> None:
        calls.append(model)
        if len(calls) == 1:
            raise OSError("disk full")

    backend = StubBackend(gate=gate)
    chain = [assignment(0, "summarization", "m")]
    start_prefetch(plan_prefetch(chain, max_models=4), backend).wait(TIMEOUT)
    entry = backend.load("summarization", chain[0].spec)
    assert entry.value == "loaded m" and calls == ["m", "m"]


# ---------------------------------------------------------------------------
# downloads through the Hub's own client, from the fake Hub
# ---------------------------------------------------------------------------
@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The bench's fake Hub serving two tiny models, with huggingface_hub pointed at it and a fresh cache."""
    from huggingface_hub import constants

    from bench.fake_hub import FakeHub
    from tests.tiny_models import build_tiny_models

    root = tmp_path / "hub"
    build_tiny_models(root / "tiny-hub", ("text-classification", "summarization"))
    with FakeHub(root) as hub:
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(
            constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        )
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        yield hub


def test_candidates_download_during_selection_into_the_hub_cache(fake_hub: Any, tmp_path: Path) -> None:
    from tasks.prefetch import start_candidate_downloads
    from tasks.schemas import PlanNode
    from tasks.services import services_for
    from tasks.settings import load_settings

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(
        "".join(
            json.dumps(
                {"id": f"tiny-hub/{task}", "task": task, "tier": "recommended", "architecture": kind, "params": 10**5}
            )
            + "\n"
            for task, kind in (("text-classification", "bert"), ("summarization", "bart"))
        )
    )
    settings = load_settings(catalog=str(catalog)).with_overrides(inference_mode="local")
    nodes = [
        PlanNode(id=0, task="summarization", args={"text": "x"}),
        PlanNode(id=1, task="text-classification", dep=[0]),
    ]
    start_candidate_downloads(settings, services_for(settings).availability, nodes, {}).wait(TIMEOUT)
    assert set(fake_hub.downloads) == {"tiny-hub/text-classification", "tiny-hub/summarization"}
    assert (tmp_path / "hf-cache" / "models--tiny-hub--summarization").is_dir()


def test_prefetch_of_the_flow_loads_into_the_nodes_backend_and_never_fails_the_run() -> None:
    from tasks.prefetch import prefetch_models
    from tasks.settings import load_settings

    chain = [assignment(0, "summarization", "m0"), assignment(1, "translation", "m1")]
    backend = StubBackend()
    prefetch_models(load_settings(), chain, lambda: backend).wait(TIMEOUT)
    loaded = backend.cache.keys()
    assert [k[1] for k in loaded] == ["/models/m0", "/models/m1"]
    # on a Dask pool the models are the workers': the flow's process loads none
    other = StubBackend()
    prefetch_models(load_settings().with_overrides(task_runner="dask"), chain, lambda: other).wait(TIMEOUT)
    assert other.cache.keys() == []
    # a backend that keeps no models (a stand-in), or one that cannot be built: the nodes load their own
    assert prefetch_models(load_settings(), chain, object).loads == {}

    def broken() -> Any:
        raise RuntimeError("no device")

    assert prefetch_models(load_settings(), chain, broken).loads == {}


@pytest.mark.usefixtures("prefect_server")
def test_no_model_is_fetched_ahead_for_nodes_the_cache_or_a_resume_answers(
    env: Path, llm: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second identical request is answered by the result cache, a resume by its earlier attempt: the
    prefetch is handed only the nodes that will run a model."""
    import flows.request as request_flow
    from flows import streaming
    from flows.request import run_request
    from tasks.experts.base import ExpertError
    from tasks.experts.local import LocalBackend
    from tests.llm_server import plan_json

    fetched: list[list[int]] = []
    real_prefetch = request_flow.prefetch_models

    def spy(settings: Any, assignments: Any, backend: Any, flow_run_id: Any = None) -> Any:
        fetched.append([a.node_id for a in assignments])
        return real_prefetch(settings, assignments, backend, flow_run_id)

    monkeypatch.setattr(request_flow, "prefetch_models", spy)
    monkeypatch.setattr(streaming, "prefetch_models", spy)  # a streamed plan prefetches as its nodes arrive
    real_run = LocalBackend.run
    failures = {"summarization": 1}

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        if failures.get(task):
            failures[task] -= 1
            raise ExpertError(f"model {model.id!r} failed on {task}: a fault")
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "so lovely"}},
            {"id": 1, "task": "summarization", "dep": [-1], "args": {"text": "a long story about a cat"}},
            {"id": 2, "task": "translation", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        ),
        respond="ok",
    )
    first = run_request("Rate, summarize, translate")
    assert [r.status for r in first.results] == ["completed", "failed", "completed"]
    by_first, fetched[:] = list(fetched), []
    resumed = run_request(RequestSpec(request="Rate, summarize, translate", resume_from=first.flow_run_id))
    assert [(r.status, r.cached) for r in resumed.results] == [
        ("completed", True),
        ("completed", False),
        ("completed", True),
    ]
    from flows import events as progress_events

    events: list[Any] = []
    with progress_events.subscribe(events.append):
        again = run_request("Rate, summarize, translate")
    assert all(r.cached for r in again.results)
    # a streamed plan prefetches each node once the nodes it depends on have their models: the first run, every
    # node (in the order the plan and the choice of models gave them); the resume, the failed node; then nothing
    assert sorted(i for ids in by_first for i in ids) == [0, 1, 2]
    assert fetched == [[1]]
    # the board hears each node run then end cached, under the node's own name: no model load, nothing after
    shown: dict[str, list[str]] = {}
    for e in events:
        if isinstance(e, progress_events.NodeEvent):
            shown.setdefault(e.node, []).append(e.state)
    assert shown == {n: ["running", "cached"] for n in ("text-classification#0", "summarization#1", "translation#2")}
