"""Batch throughput against the LLM-concurrency bound: 4, 8 and 16 lines in flight.

Every line is a request the LLM plans (one text-classification node on the review quoted in it), whose model the LLM
selects among the catalog's classifiers, and whose answer the LLM writes: three LLM round trips per line, each taking
:data:`LLM_LATENCY` seconds at the scripted server, and a node that sleeps :data:`NODE_SECONDS` (releasing the GIL, as a
model on an accelerator or a remote endpoint would). With ``n`` lines in flight and nothing else in the way, a
batch completes at most ``n / (3 x LLM_LATENCY)`` lines a second: the bound each figure is set against. Each figure
also gives the CPU seconds per line of the batch's own process and of the Prefect API server's process (with its
children), which is where the machine's two cores go when the batch stays below the bound.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from bench.api import api_retries, prefect_api
from bench.classifiers import models
from bench.harness import Bench, env_vars, log, reset_local_backends, sleeping_experts

IN_FLIGHT: tuple[int, ...] = (4, 8, 16)
LLM_LATENCY = 0.5
NODE_SECONDS = 0.05
LLM_ROUND_TRIPS = 3
LINES_PER_SLOT = 6  # lines per line in flight: each slot runs this many lines one after another
TASK = "text-classification"


def bound_per_minute(in_flight: int, latency: float = LLM_LATENCY) -> float:
    return 60.0 * in_flight / (LLM_ROUND_TRIPS * latency)


def _planner(body: dict[str, Any]) -> str:
    from tests.llm_server import plan_json

    last = str(body["messages"][-1]["content"])
    text = last.split("says:", 1)[-1].split("\n", 1)[0].strip() or "fine"
    return plan_json({"id": 0, "task": TASK, "dep": [-1], "args": {"text": text}})


def _api_processes() -> list[Any]:
    """This process's children (the Prefect API server started for the bench, and what it started)."""
    import psutil

    return psutil.Process().children(recursive=True)


def _cpu(processes: list[Any]) -> float:
    total = 0.0
    for p in processes:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except Exception:  # gone
            continue
    return total


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(bench: Bench, in_flight: int, lines: int, catalog: Path, latency: float) -> dict[str, Any]:
    from flows.batch import run_batch

    requests = bench.root / f"scaling-{in_flight}.jsonl"
    requests.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"s{in_flight}-{i}",
                    "request": f"Is review {i} of batch {in_flight} positive? It says: "
                    f"great value number {i}, would buy again",
                }
            )
            + "\n"
            for i in range(lines)
        )
    )
    bench.llm.reset()
    bench.llm.set(plan=_planner, respond="The review is positive.")
    bench.llm.latency = latency
    storage = bench.storage(f"scaling-{in_flight}")
    others = _api_processes()
    cpu_api0, cpu_own0 = _cpu(others), _own_cpu()
    with api_retries() as retried, sleeping_experts(NODE_SECONDS):
        t0 = time.perf_counter()
        summary = run_batch(str(requests), storage=storage, catalog=str(catalog), max_in_flight=in_flight)
        seconds = time.perf_counter() - t0
    cpu_own, cpu_api = _own_cpu() - cpu_own0, _cpu(others) - cpu_api0
    reset_local_backends()
    per_minute = 60.0 * summary.completed / seconds
    bound = bound_per_minute(in_flight, latency)
    return {
        "in_flight": in_flight,
        "lines": lines,
        "completed": summary.completed,
        "seconds": seconds,
        "lines_per_minute": per_minute,
        "bound_per_minute": bound,
        "of_bound": per_minute / bound,
        "llm_calls": dict(bench.llm.calls),
        "cpu_seconds_per_line": cpu_own / max(lines, 1),
        "api_cpu_seconds_per_line": cpu_api / max(lines, 1),
        "api_503_retries": dict(retried),
        "slowest_line_seconds": max((r.seconds for r in summary.records), default=0.0),
    }


def run(bench: Bench) -> dict[str, Any]:
    m = models(bench)  # several classifiers: the LLM selects among them
    latency = 0.1 if bench.quick else LLM_LATENCY
    url = bench.postgres_api()
    api = "postgresql" if url is not None else "sqlite"
    rows = []
    with prefect_api(url), env_vars(HUGGINGGPT_DEVICE="cpu", HUGGINGGPT_CACHE="false"):
        for in_flight in (4,) if bench.quick else IN_FLIGHT:
            lines = (2 if bench.quick else LINES_PER_SLOT) * in_flight
            if not rows:
                log("batch scaling: warm-up batch")
                measure(bench, 2, 2, m["catalog"], latency)
            log(f"batch scaling: {lines} LLM-planned lines, {in_flight} in flight, {latency:g} s per LLM answer, {api}")
            rows.append(measure(bench, in_flight, lines, m["catalog"], latency))
            log(
                f"batch scaling: {rows[-1]['lines_per_minute']:.0f} lines/min against a bound of "
                f"{rows[-1]['bound_per_minute']:.0f} ({100 * rows[-1]['of_bound']:.0f} %)"
            )
    return {
        "api": api,
        "llm_latency_seconds": latency,
        "node_seconds": NODE_SECONDS,
        "llm_round_trips_per_line": LLM_ROUND_TRIPS,
        "runs": rows,
        "postgresql": bench.postgres_error or "measured",
    }
