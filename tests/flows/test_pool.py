"""The warm pool: a long-lived Dask cluster keeps models loaded from one flow run to the next, and each node goes
to a worker that already holds its model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flows.prefect_setup import prefect_run_settings
from flows.request import hugginggpt_request, summary_of
from flows.runners import node_model, workers_holding
from tasks.experts.base import ModelSpec
from tasks.schemas import Assignment, PlanNode, RequestSpec, RunSummary
from tasks.settings import load_settings


def test_affinity_prefers_the_workers_holding_the_model() -> None:
    spec = ModelSpec(id="tiny/a", task="summarization", local_path="/models/a")
    local = Assignment(node_id=0, task="summarization", model="tiny/a", reason="r", spec=spec)
    model = node_model({"assignment": local})
    assert model == ("summarization", "/models/a", None)
    holders = {"tcp://w2": [model, ("translation", "x", None)], "tcp://w1": [model], "tcp://w3": []}
    assert workers_holding(model, holders) == ["tcp://w1", "tcp://w2"]
    assert workers_holding(("translation", "other", None), holders) == []
    remote = local.model_copy(update={"backend": "remote"})
    assert node_model({"assignment": remote}) is None and node_model({"assignment": None}) is None


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.llm_http  # nodes run on Dask workers
def test_second_run_on_the_pool_loads_nothing(env: Path, llm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flow runs of a two-node chain on a pool of two worker processes: the first loads both models, the second
    loads nothing, on any worker. Then the models move to the other worker (dropped from the first, loaded on the
    second): the third run follows them there (model affinity) and loads nothing either, where the scheduler alone
    would have sent it back to the first worker."""
    pytest.importorskip("prefect_dask")
    from distributed import Client, LocalCluster

    from flows.runners import held_models, load_models

    llm.set(respond="Done.")
    monkeypatch.setenv("HUGGINGGPT_CACHE", "false")  # run the models every time
    plan = [
        PlanNode(id=0, task="summarization", dep=[], args={"text": "The cat sat on the mat all day long."}),
        PlanNode(id=1, task="text-classification", dep=[0], args={"text": "<GENERATED>-0"}),
    ]
    pins = {"text-classification": "tiny/text-classification"}

    def cache_stats(settings: Any) -> dict[str, Any]:  # runs in a worker process: its own backend and cache
        from tasks.services import local_backend_for

        return local_backend_for(settings).cache.stats()

    def drop_models(settings: Any) -> None:
        from tasks.services import local_backend_for

        local_backend_for(settings).cache.clear()

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        monkeypatch.setenv("HUGGINGGPT_TASK_RUNNER", "dask")
        monkeypatch.setenv("HUGGINGGPT_DASK_ADDRESS", cluster.scheduler_address)
        settings = load_settings()

        def run() -> tuple[RunSummary, int]:
            # each run builds its own runner, as a deployment's new flow-run process does
            with prefect_run_settings():
                spec = RequestSpec(request="Summarize, then rate the summary", plan=plan, models=pins)
                state = hugginggpt_request(spec, return_state=True)
            summary = summary_of(state)
            assert isinstance(summary, RunSummary) and summary.status == "completed", summary
            return summary, sum(s["loads"] for s in client.run(cache_stats, settings).values())

        first, loads_first = run()
        second, loads_second = run()
        (holder,) = [w for w, models in client.run(held_models).items() if models]
        (other,) = [w for w in client.scheduler_info()["workers"] if w != holder]
        models = [(a.task, a.spec) for a in first.assignments]
        client.run(drop_models, settings, workers=[holder])
        client.run(load_models, settings, models, workers=[other])
        loads_moved = sum(s["loads"] for s in client.run(cache_stats, settings).values())
        third, loads_third = run()
    assert loads_first == 2 and loads_second == 2  # both models loaded by the first run, none by the second
    assert all(r.model_wait_seconds and r.model_wait_seconds > 0 for r in first.results)
    assert [r.model_wait_seconds for r in second.results] == [0.0, 0.0]
    assert loads_third == loads_moved  # the third run went where the models are now
    assert [r.model_wait_seconds for r in third.results] == [0.0, 0.0]
