"""Item 4, batch throughput: the same requests through the batch flow and one by one.

Each request asks about one review (its text is in the request): the scripted LLM plans two independent nodes,
text-classification and token-classification, on that text (tiny random models, pinned, so no selection call
is needed); the response is one more LLM call. The requests file is a JSONL read by ``hugginggpt-batch``; the
baseline runs the same requests one after another with ``run_request``, the documented Python entry point.
Both use their own storage folder (the output cache never answers across them) after one warm-up request
that loads the two models, so both find the models loaded.
"""

from __future__ import annotations

import functools
import json
import re
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, api_retries, catalog_record, log, prefect_api, write_catalog

TASKS: tuple[str, ...] = ("text-classification", "token-classification")
REVIEWS: tuple[str, ...] = (
    "The battery died after two days and Alice at the shop would not help.",
    "Great little camera, Bob in Paris says it survived the rain.",
    "Slow delivery from London, but the blender works well.",
    "The hotel near the station was clean and quiet.",
    "I returned the headphones; the left side crackled.",
)
_REVIEW_RE = re.compile(r'Review #(\d+) says: "(.*?)"')


def request_text(i: int) -> str:
    review = REVIEWS[i % len(REVIEWS)]
    return f'Is this review positive, and who or where does it name? Review #{i} says: "{review}"'


def plan_reply(body: dict[str, Any], tasks: tuple[str, ...] = TASKS) -> str:
    """The scripted planner: one node per task of ``tasks``, independent, on the review quoted in the request."""
    user = body["messages"][-1]["content"]
    match = _REVIEW_RE.search(user)
    text = f"Review #{match.group(1)}: {match.group(2)}" if match else user[-200:]
    nodes = [{"id": k, "task": task, "dep": [-1], "args": {"text": text}} for k, task in enumerate(tasks)]
    return json.dumps({"tasks": nodes})


def script_llm(bench: Bench, tasks: tuple[str, ...] = TASKS) -> None:
    bench.llm.reset()
    bench.llm.set(
        plan=functools.partial(plan_reply, tasks=tasks), respond="The review is mixed; it names a person and a place."
    )


def tiny_catalog(bench: Bench) -> tuple[Path, dict[str, str]]:
    """Tiny random models for the two tasks, in a catalog; and the pins that name them."""
    from tests.tiny_models import build_tiny_models

    paths = build_tiny_models(bench.root / "tiny-models", TASKS)
    records = [catalog_record(f"bench/tiny-{task}", task, path) for task, path in paths.items()]
    catalog = write_catalog(bench.root / "throughput-catalog.jsonl", records)
    return catalog, {task: f"bench/tiny-{task}" for task in TASKS}


def write_requests(path: Path, count: int, pins_for: Any) -> Path:
    """``count`` lines of ``{"request", "models", "id"}``; ``pins_for(i)`` gives line i's pinned models."""
    lines = [json.dumps({"id": f"r{i}", "request": request_text(i), "models": pins_for(i)}) for i in range(count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def one_by_one(count: int, storage: str, catalog: Path, pins_for: Any) -> tuple[float, int]:
    """The requests one after another through ``run_request``; (seconds, completed)."""
    from flows.request import run_request

    t0 = time.perf_counter()
    completed = 0
    for i in range(count):
        summary = run_request(request_text(i), models=pins_for(i), storage=storage, catalog=str(catalog))
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


def measure(bench: Bench, count: int, catalog: Path, pins: dict[str, str], requests: Path) -> list[dict[str, Any]]:
    """One by one, then through the batch flow, against the current Prefect API."""
    from flows.request import run_request

    script_llm(bench)
    warm = run_request(request_text(0), models=pins, storage=bench.storage("warm"), catalog=str(catalog))
    if warm.status != "completed":
        raise RuntimeError(f"warm-up request failed: {warm.error or [r.error for r in warm.results]}")
    rows: list[dict[str, Any]] = []
    log(f"batch: {count} requests one by one (run_request)")
    script_llm(bench)
    with api_retries() as retried:
        seconds, done = one_by_one(count, bench.storage("one-by-one"), catalog, lambda i: pins)
    rows.append(
        {
            "mode": "one by one (run_request)",
            "requests": count,
            "completed": done,
            "seconds": seconds,
            "requests_per_minute": 60.0 * count / seconds,
            "llm_calls": sum(bench.llm.calls.values()),
            "api_503_retries": dict(retried),
        }
    )
    for in_flight in (4,):
        log(f"batch: {count} requests through hugginggpt-batch, {in_flight} in flight")
        script_llm(bench)
        with api_retries() as retried:
            seconds, summary = batch(requests, bench.storage("batch"), catalog, in_flight)
        rows.append(
            {
                "mode": f"batch flow, {in_flight} in flight",
                "requests": count,
                "completed": summary.completed,
                "seconds": seconds,
                "requests_per_minute": 60.0 * count / seconds,
                "llm_calls": sum(bench.llm.calls.values()),
                "api_503_retries": dict(retried),
                "slowest_line_seconds": max((r.seconds for r in summary.records), default=0.0),
            }
        )
    base = rows[0]["requests_per_minute"]
    for row in rows:
        row["speedup"] = row["requests_per_minute"] / base
    return rows


def run(bench: Bench, *, count: int | None = None) -> dict[str, Any]:
    count = count or (6 if bench.quick else 50)
    catalog, pins = tiny_catalog(bench)
    requests = write_requests(bench.root / "requests.jsonl", count, lambda i: pins)
    results = []
    for name, url in apis(bench):
        log(f"batch: against the Prefect API on {name}")
        with prefect_api(url):
            results.append({"api": name, "modes": measure(bench, count, catalog, pins, requests)})
    return {
        "requests": count,
        "nodes_per_request": len(TASKS),
        "llm_calls_per_request": 2,
        "apis": results,
        "postgresql": bench.postgres_error or "measured",
    }
