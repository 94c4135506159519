"""Item 4, batch throughput: the same requests through the batch flow and one by one, with the model cache bound set.

Fifty requests, each asking whether one review (quoted in the request) is positive. Each line carries its plan
(one text-classification node on the review, in HuggingGPT's format) and pins its model: line i runs classifier
i mod 6. The six classifiers are one random model of 14M parameters (55 MB), its folder hard-linked six times, so
six models to the cache; with the cache bound ``HUGGINGGPT_MAX_MODELS=2``, consecutive requests change model and
the cache evicts and loads as it would serving many models. The LLM writes each answer (one call per request).

Modes: the requests file through ``hugginggpt-batch`` (4 in flight), and the baseline, the same requests one after
another with ``run_request``, the documented Python entry point. Each mode starts with an empty model cache and its
own storage folder, after one warm-up request. Measured against the bench's Prefect API (SQLite) and, when
PostgreSQL is installed here, a PostgreSQL-backed one (:mod:`bench.servers`); the API's 503 answers, which its
client retries after 2, 4, 8... seconds, are counted. The scripted LLM answers at once, so those requests are all
CPU; then both modes again against the last API with every LLM answer taking :data:`LLM_LATENCY` seconds, as a
hosted model's does, which is where requests in flight overlap. A thread samples the process RSS and the cache's size
during each mode: :mod:`bench.memory` reports them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.api import api_retries, prefect_api
from bench.classifiers import TASK, models
from bench.harness import Bench, Sampler, env_vars, log, reset_local_backends
from tasks.schemas import RequestSpec
from tasks.settings import RunOptions

IN_FLIGHT = 4
#: seconds per LLM answer in the second measurement: a short answer from a hosted model
LLM_LATENCY = 0.5
QUICK_LLM_LATENCY = 0.1
REVIEWS: tuple[str, ...] = (
    "The battery died after two days and Alice at the shop would not help.",
    "Great little camera, Bob in Paris says it survived the rain.",
    "Slow delivery from London, but the blender works well.",
    "The hotel near the station was clean and quiet.",
    "I returned the headphones; the left side crackled.",
)
ANSWER = "The review is mostly negative."


def request_text(i: int) -> str:
    return f'Is this review positive? Review #{i} says: "{REVIEWS[i % len(REVIEWS)]}"'


def plan_for(i: int) -> list[dict[str, Any]]:
    return [{"id": 0, "task": TASK, "dep": [-1], "args": {"text": f"Review #{i}: {REVIEWS[i % len(REVIEWS)]}"}}]


def pins_for(ids: Sequence[str], i: int) -> dict[str, str]:
    return {TASK: ids[i % len(ids)]}


def write_requests(path: Path, count: int, ids: Sequence[str]) -> Path:
    """``count`` lines of ``{"id", "request", "models", "plan"}``."""
    lines = [
        json.dumps({"id": f"r{i}", "request": request_text(i), "models": pins_for(ids, i), "plan": plan_for(i)})
        for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_by_one(count: int, storage: str, catalog: Path, ids: Sequence[str]) -> tuple[float, int]:
    """The requests one after another through ``run_request``; (seconds, completed)."""
    from flows.request import run_request
    from tasks.schemas import PlanNode

    t0 = time.perf_counter()
    completed = 0
    for i in range(count):
        plan = [PlanNode.model_validate(n) for n in plan_for(i)]
        summary = run_request(
            RequestSpec(request=request_text(i), models=pins_for(ids, i), plan=plan),
            RunOptions(storage=storage, catalog=str(catalog)),
        )
        completed += summary.status == "completed"
    return time.perf_counter() - t0, completed


def batch(requests: Path, storage: str, catalog: Path, max_in_flight: int) -> tuple[float, Any]:
    """The requests file through the batch flow; (seconds, BatchSummary)."""
    from flows.batch import run_batch

    t0 = time.perf_counter()
    summary = run_batch(str(requests), storage=storage, catalog=str(catalog), max_in_flight=max_in_flight)
    return time.perf_counter() - t0, summary


def apis(bench: Bench) -> list[tuple[str, str | None]]:
    """The Prefect APIs to measure against: the bench's own (SQLite), and one on PostgreSQL when installed here."""
    found: list[tuple[str, str | None]] = [("sqlite", None)]
    url = bench.postgres_api()
    if url is not None:
        found.append(("postgresql", url))
    return found


def run_mode(
    bench: Bench, mode: str, count: int, max_models: int, requests: Path | None = None, *, llm_latency: float = 0.0
) -> dict[str, Any]:
    """One mode (``one by one`` or ``batch``) from an empty model cache, sampled; against the current API, with
    every LLM answer taking ``llm_latency`` seconds."""
    from tasks.services import local_backend_for
    from tasks.settings import load_settings

    m = models(bench)
    reset_local_backends()
    bench.llm.reset()
    bench.llm.set(respond=ANSWER)
    bench.llm.latency = llm_latency
    storage = bench.storage(mode.replace(" ", "-"))
    with env_vars(HUGGINGGPT_MAX_MODELS=str(max_models), HUGGINGGPT_DEVICE="cpu"):
        cache = local_backend_for(load_settings(storage=storage, catalog=str(m["catalog"]))).cache
        with api_retries() as retried, Sampler(lambda: len(cache)) as sampler:
            if mode == "batch":
                assert requests is not None
                seconds, summary = batch(requests, storage, m["catalog"], IN_FLIGHT)
                done, slowest = summary.completed, max((r.seconds for r in summary.records), default=0.0)
            else:
                seconds, done = one_by_one(count, storage, m["catalog"], m["ids"])
                slowest = None
        stats = cache.stats()
    reset_local_backends()
    return {
        "mode": f"batch flow, {IN_FLIGHT} in flight" if mode == "batch" else "one by one (run_request)",
        "llm_latency_seconds": llm_latency,
        "requests": count,
        "completed": done,
        "seconds": seconds,
        "requests_per_minute": 60.0 * count / seconds,
        "llm_calls": sum(bench.llm.calls.values()),
        "api_503_retries": dict(retried),
        "slowest_request_seconds": slowest,
        "max_models": max_models,
        "rss_before_mb": sampler.start_rss / 1e6,
        "peak_rss_mb": sampler.peak_rss / 1e6,
        "peak_growth_mb": (sampler.peak_rss - sampler.start_rss) / 1e6,
        "most_models_held": sampler.peak_probe,
        "loads": stats["loads"],
        "evictions": stats["evictions"],
        "load_seconds": stats["load_seconds"],
    }


def warm_up(bench: Bench) -> None:
    """One request, so that neither mode pays the process's first-run costs (imports, clients)."""
    m = models(bench)
    bench.llm.reset()
    bench.llm.set(respond=ANSWER)
    one_by_one(1, bench.storage("warm-up"), m["catalog"], m["ids"])
    reset_local_backends()


def run(bench: Bench, *, count: int | None = None) -> dict[str, Any]:
    from bench import batch_scaling

    count = count or (6 if bench.quick else 50)
    m = models(bench)
    scaling = batch_scaling.run(bench)
    requests = write_requests(bench.root / "requests.jsonl", count, m["ids"])
    results = []
    for name, url in apis(bench):
        with prefect_api(url):
            log(f"batch: against the Prefect API on {name}: warm-up")
            warm_up(bench)
            log(f"batch: {count} requests one by one (run_request), API on {name}")
            baseline = run_mode(bench, "one by one", count, m["bound"])
            log(f"batch: {count} requests through hugginggpt-batch, {IN_FLIGHT} in flight, API on {name}")
            batched = run_mode(bench, "batch", count, m["bound"], requests)
        for row in (baseline, batched):
            row["speedup"] = row["requests_per_minute"] / baseline["requests_per_minute"]
        results.append({"api": name, "modes": [baseline, batched]})
    bench.shared["batch"] = results
    # the same against the last API, with an LLM that takes its time to answer, as a hosted one does
    latency = QUICK_LLM_LATENCY if bench.quick else LLM_LATENCY
    name, url = apis(bench)[-1]
    with prefect_api(url):
        log(f"batch: again with {latency:g} s per LLM answer, API on {name}: one by one, then the batch flow")
        warm_up(bench)
        slow = [
            run_mode(bench, mode, count, m["bound"], requests, llm_latency=latency) for mode in ("one by one", "batch")
        ]
    for row in slow:
        row["speedup"] = row["requests_per_minute"] / slow[0]["requests_per_minute"]
    return {
        "requests": count,
        "nodes_per_request": 1,
        "llm_calls_per_request": 1,
        "models": len(m["ids"]),
        "model_parameters": m["parameters"],
        "model_mb": m["model_mb"],
        "max_models": m["bound"],
        "apis": results,
        "with_llm_latency": {"api": name, "llm_latency_seconds": latency, "modes": slow},
        "postgresql": bench.postgres_error or "measured",
        "in_flight_scaling": scaling,
    }
