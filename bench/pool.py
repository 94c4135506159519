"""Warm across flow runs: deployed requests through a real Prefect worker, with and without a Dask pool, and batch
throughput on a pool of two workers against one.

A deployment's worker starts every flow run in a new process, which loads every model again. With
``HUGGINGGPT_TASK_RUNNER=dask`` and ``HUGGINGGPT_DASK_ADDRESS``, the nodes run on a long-lived Dask cluster whose
worker processes keep their models loaded from one flow run to the next (:mod:`flows.runners`).

1. Deployed requests: a process work pool, a ``prefect worker start`` subprocess, and two deployments of
   :func:`pooled_request` (the request flow with its task runner built inside the flow run, from the settings of the
   worker's environment): one running nodes in the flow-run process (the baseline), one on a Dask pool of one worker
   process. Each is triggered twice with ``run_deployment``; figures: the nodes' model-load time (their waits for
   their models) and the trigger-to-result time of each request.
2. Dispatch: the time to run an empty task on a long-lived pool and get its result, one after another: on the Dask
   pool (``submit`` from a flow run with the Dask task runner) against a Prefect task worker (``task.delay()`` served
   by ``prefect task serve``), the other engine that keeps a process (and its models) alive across flow runs.
3. Throughput: ``count`` requests, ``IN_FLIGHT`` at a time, each one text-classification node on a long text, on a
   pool of two single-threaded workers against one, each pool warmed first (its workers hold the model).
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow, task

ROOT = Path(__file__).resolve().parents[1]
IN_FLIGHT = 4
#: how often the worker asks for runs (Prefect's default is 10 s, which a trigger waits half of on average)
WORKER_POLL_SECONDS = 2
CHAIN_TASKS = ("summarization", "text-classification")
LONG_TEXT = " ".join(["The battery lasted two days and the screen was bright, but the speaker crackled."] * 24)


@flow(name="bench-pooled-request", persist_result=True, result_serializer="json")
def pooled_request(
    request: str, plan: list[dict[str, Any]], models: dict[str, str], storage: str, catalog: str
) -> dict[str, Any]:
    """The request flow as a deployment runs it (it builds its task runner from the settings), timed from inside
    the deployed run."""
    start = time.perf_counter()
    from flows.request import hugginggpt_request, summary_of
    from tasks.schemas import PlanNode, RequestSpec
    from tasks.settings import RunOptions

    state = hugginggpt_request(
        RequestSpec(request=request, plan=[PlanNode.model_validate(n) for n in plan], models=models),
        RunOptions(storage=storage, catalog=catalog),
        return_state=True,
    )
    summary = summary_of(state)
    if summary is None:
        raise RuntimeError(f"the request ended {state.name} without a summary")
    return {
        "status": summary.status,
        "error": summary.error,
        "pid": os.getpid(),
        "model_wait_seconds": [r.model_wait_seconds or 0.0 for r in summary.results],
        "node_seconds": [r.seconds for r in summary.results],
        "in_run_seconds": time.perf_counter() - start,
    }


@task(name="bench-noop", persist_result=True)
def noop(i: int) -> int:
    """An empty task: what dispatching a node costs, without the node."""
    return i


@flow(name="bench-dispatch")
def dispatch_on_runner(count: int) -> list[float]:
    """Submit :func:`noop` ``count`` times, one after another, on this flow run's task runner; each round trip."""
    times = []
    for i in range(count):
        t0 = time.perf_counter()
        noop.submit(i).result()
        times.append(time.perf_counter() - t0)
    return times


def dispatch(bench: Any, scheduler: str, count: int) -> dict[str, Any]:
    """Round trips of an empty task: Dask pool against a Prefect task worker (both warm)."""
    import statistics

    from prefect.settings import PREFECT_API_URL

    from bench.harness import env_vars
    from flows.runners import task_runner_for
    from tasks.settings import load_settings

    with env_vars(HUGGINGGPT_TASK_RUNNER="dask", HUGGINGGPT_DASK_ADDRESS=scheduler):
        runner = task_runner_for(load_settings())
    dask_times = dispatch_on_runner.with_options(task_runner=runner)(count + 1)[1:]
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": str(PREFECT_API_URL.value()),
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "task", "serve", "bench/pool.py:noop"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    try:
        noop.delay(-1).result(timeout=180)  # the task worker is up and subscribed
        worker_times = []
        for i in range(count):
            t0 = time.perf_counter()
            noop.delay(i).result(timeout=60)
            worker_times.append(time.perf_counter() - t0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return {
        "count": count,
        "dask_pool_seconds": statistics.median(dask_times),
        "task_worker_seconds": statistics.median(worker_times),
    }


def _models(bench: Any) -> tuple[Path, dict[str, str]]:
    """A catalog of a tiny summarizer and a BERT classifier (random weights, built here)."""
    from bench.harness import catalog_record, write_catalog
    from bench.reuse import FULL_SIZE, QUICK_SIZE, build_model
    from tests.tiny_models import build_tiny_models

    folder = bench.fresh_dir("pool-models")
    paths = build_tiny_models(folder, ("summarization",))
    build_model(folder / "classifier", QUICK_SIZE if bench.quick else FULL_SIZE)
    paths["text-classification"] = folder / "classifier"
    records = [catalog_record(f"bench/pool-{task}", task, paths[task]) for task in CHAIN_TASKS]
    catalog = write_catalog(bench.root / "pool-catalog.jsonl", records)
    return catalog, {task: f"bench/pool-{task}" for task in CHAIN_TASKS}


def _chain() -> list[dict[str, Any]]:
    return [
        {"id": 0, "task": "summarization", "dep": [-1], "args": {"text": LONG_TEXT[:300]}},
        {"id": 1, "task": "text-classification", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]


def deployed_requests(bench: Any, catalog: Path, pins: dict[str, str], scheduler: str) -> dict[str, Any]:
    """Two requests through each of two deployments, one worker process serving both."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL

    from bench.harness import log

    api = str(PREFECT_API_URL.value())
    pool_name = f"bench-pool-{os.getpid()}"
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=pool_name, type="process"), overwrite=True)
    modes = {"flow_process": {"HUGGINGGPT_TASK_RUNNER": "threads"}, "dask_pool": {"HUGGINGGPT_TASK_RUNNER": "dask"}}
    modes["dask_pool"]["HUGGINGGPT_DASK_ADDRESS"] = scheduler
    source = pooled_request.from_source(source=str(ROOT), entrypoint="bench/pool.py:pooled_request")
    for mode, env in modes.items():
        source.deploy(name=mode, work_pool_name=pool_name, job_variables={"env": env}, print_next_steps=False)
    env = dict(os.environ)
    env.update(
        {
            "PREFECT_API_URL": api,
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
            "HUGGINGGPT_CACHE": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PREFECT_WORKER_QUERY_SECONDS": str(WORKER_POLL_SECONDS),
        }
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool_name, "--type", "process"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    results: dict[str, Any] = {}
    try:
        for mode in modes:
            runs = []
            for attempt in (1, 2):
                log(f"pool: deployed request {attempt} of 2 ({mode.replace('_', ' ')})")
                parameters = {
                    "request": "Summarize this review, then say whether the summary is positive.",
                    "plan": _chain(),
                    "models": pins,
                    "storage": bench.storage(f"pool-{mode}"),
                    "catalog": str(catalog),
                }
                t0 = time.perf_counter()
                run = run_deployment(f"bench-pooled-request/{mode}", parameters=parameters, timeout=600)
                wall = time.perf_counter() - t0
                if run.state is None or not run.state.is_completed():
                    raise RuntimeError(f"deployed request ({mode}) ended {run.state.name if run.state else None}")
                value = run.state.result()
                if value["status"] != "completed":
                    raise RuntimeError(f"deployed request ({mode}) failed: {value['error']}")
                runs.append(
                    {**value, "trigger_to_result_seconds": wall, "model_load_seconds": sum(value["model_wait_seconds"])}
                )
            results[mode] = runs
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return results


def throughput(bench: Any, catalog: Path, pins: dict[str, str], workers: int, count: int) -> dict[str, Any]:
    """``count`` one-node requests, ``IN_FLIGHT`` at a time, on a fresh pool of ``workers`` single-threaded workers."""
    from distributed import Client, LocalCluster

    from bench.harness import env_vars
    from flows.request import hugginggpt_request, summary_of
    from flows.runners import warm_workers
    from tasks.schemas import PlanNode, RequestSpec
    from tasks.settings import RunOptions, load_settings

    plan = [PlanNode(id=0, task="text-classification", dep=[], args={"text": LONG_TEXT})]
    model = {"text-classification": pins["text-classification"]}
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
        env_vars(HUGGINGGPT_TASK_RUNNER="dask", HUGGINGGPT_DASK_ADDRESS=cluster.scheduler_address),
    ):
        storage = bench.storage(f"pool-throughput-{workers}")
        settings = load_settings(storage=storage, catalog=str(catalog))
        from models_catalog.catalog import load_catalog

        entry = load_catalog(settings.catalog).get("text-classification", model["text-classification"])
        assert entry is not None
        warm_workers(client, settings, [("text-classification", entry.spec())])

        def one(i: int) -> bool:
            state = hugginggpt_request(
                RequestSpec(request=f"Is review {i} positive?", plan=plan, models=model),
                RunOptions(storage=storage, catalog=str(catalog)),
                return_state=True,
            )
            summary = summary_of(state)
            return summary is not None and summary.status == "completed"

        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(max_workers=IN_FLIGHT) as pool:
            ok = list(pool.map(one, range(count)))
        wall = time.perf_counter() - t0
    if not all(ok):
        raise RuntimeError(f"{ok.count(False)} of {count} requests on {workers} worker(s) did not complete")
    return {"workers": workers, "requests": count, "seconds": wall, "requests_per_second": count / wall}


def run(bench: Any, *, count: int | None = None) -> dict[str, Any]:
    from distributed import LocalCluster

    from bench.harness import env_vars, log

    count = count or (4 if bench.quick else 16)
    catalog, pins = _models(bench)
    with (
        env_vars(HUGGINGGPT_CACHE="false"),
        LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=":0") as cluster,
    ):
        deployed = deployed_requests(bench, catalog, pins, cluster.scheduler_address)
        log("pool: dispatch of an empty task, Dask pool against a Prefect task worker")
        dispatched = dispatch(bench, cluster.scheduler_address, 5 if bench.quick else 20)
    rates = {}
    with env_vars(HUGGINGGPT_CACHE="false"):
        for workers in (1, 2):
            log(f"pool: {count} requests, {IN_FLIGHT} in flight, on {workers} pool worker(s)")
            rates[workers] = throughput(bench, catalog, pins, workers, count)
    pool_second = deployed["dask_pool"][1]
    return {
        "deployed": deployed,
        "dispatch": dispatched,
        "throughput": {str(k): v for k, v in rates.items()},
        "speedup_two_workers": rates[2]["requests_per_second"] / rates[1]["requests_per_second"],
        "met": pool_second["model_load_seconds"] == 0.0,
    }


def rows(r: dict[str, Any]) -> list[dict[str, str]]:
    """The table rows of :func:`run`'s figures."""
    d = r["deployed"]
    pool, base = d["dask_pool"], d["flow_process"]
    t = r["throughput"]
    return [
        {
            "benchmark": "pool: second deployed request, real process worker, Dask pool of 1 worker",
            "figure": "model-load time, request 2 (request 1)",
            "value": f"{pool[1]['model_load_seconds']:.2f} s ({pool[0]['model_load_seconds']:.2f} s)",
            "baseline (same run)": f"nodes in the flow-run process: {base[1]['model_load_seconds']:.2f} s "
            f"({base[0]['model_load_seconds']:.2f} s)",
            "target": "0 s: " + ("met" if r["met"] else "MISSED"),
        },
        {
            "benchmark": "pool: second deployed request, real process worker, Dask pool of 1 worker",
            "figure": "trigger-to-result time, request 2 (request 1)",
            "value": f"{pool[1]['trigger_to_result_seconds']:.2f} s ({pool[0]['trigger_to_result_seconds']:.2f} s)",
            "baseline (same run)": f"nodes in the flow-run process: {base[1]['trigger_to_result_seconds']:.2f} s "
            f"({base[0]['trigger_to_result_seconds']:.2f} s)",
            "target": "request 2 < request 1",
        },
        {
            "benchmark": "pool: second deployed request, real process worker, Dask pool of 1 worker",
            "figure": "of which inside the flow run, request 2 (request 1); the rest: worker poll, new process",
            "value": f"{pool[1]['in_run_seconds']:.2f} s ({pool[0]['in_run_seconds']:.2f} s)",
            "baseline (same run)": f"nodes in the flow-run process: {base[1]['in_run_seconds']:.2f} s "
            f"({base[0]['in_run_seconds']:.2f} s)",
            "target": "",
        },
        {
            "benchmark": "pool: dispatch of an empty task to a warm long-lived process, one after another",
            "figure": "round trip (median), Dask pool",
            "value": f"{r['dispatch']['dask_pool_seconds'] * 1e3:.0f} ms",
            "baseline (same run)": f"Prefect task worker (task.delay, prefect task serve): "
            f"{r['dispatch']['task_worker_seconds'] * 1e3:.0f} ms",
            "target": "the faster engine carries the pool",
        },
        {
            "benchmark": f"pool: {t['2']['requests']} one-node requests, {IN_FLIGHT} in flight",
            "figure": "throughput on 2 pool workers",
            "value": f"{t['2']['requests_per_second']:.2f} req/s",
            "baseline (same run)": f"1 pool worker: {t['1']['requests_per_second']:.2f} req/s",
            "target": f"x{r['speedup_two_workers']:.2f} (at most x2; bounded by the machine's cores)",
        },
    ]
