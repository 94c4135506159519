"""The server's own cost: a request through ``hugginggpt serve`` (the official ``openai`` client, HTTP on
127.0.0.1, the server's checks, a flow run in the server's thread pool, the reply with signed links) against the same
request given to ``run_request`` in the process.

Both run the same one-node explicit plan with the sleeping expert at 0 s (no model: what is left is orchestration)
and the scripted LLM's answer over HTTP; requests alternate between the two ways so the machine's drift falls on both.
Figures: the median wall time of a request each way and their difference (the server's overhead per request); the
time to the first streamed chunk; and 50 requests sent at once through the server: how many came back completed,
each its own flow run, and the wall time of the lot.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import (
    Bench,
    SleepBackend,
    catalog_record,
    env_vars,
    log,
    median,
    sleeping_experts,
    write_catalog,
)

PLAN = [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "The battery died after two days."}}]
MODELS = {"text-classification": "bench/sleeping-text-classification"}
KEY = "bench-key-0123456789"
TARGET_OVERHEAD = 0.1  # seconds per request


def run(bench: Bench, *, rounds: int | None = None, concurrent: int | None = None) -> dict[str, Any]:
    import openai

    from flows.request import run_request
    from flows.serve import Server, serving_in_background
    from tasks.schemas import PlanNode, RequestSpec
    from tasks.services import Services
    from tasks.serving.config import ServeSettings
    from tasks.settings import load_settings

    rounds = rounds or (4 if bench.quick else 20)
    concurrent = concurrent or (10 if bench.quick else 50)
    storage = bench.storage("serve")
    bench.llm.set(respond="The review is negative.")
    plan = [PlanNode.model_validate(n) for n in PLAN]
    model_dir = bench.fresh_dir("serve-model")
    catalog = write_catalog(
        bench.root / "serve-catalog.jsonl", [catalog_record(MODELS[PLAN[0]["task"]], PLAN[0]["task"], model_dir)]
    )
    with env_vars(
        HUGGINGGPT_STORAGE=storage,
        HUGGINGGPT_CATALOG=str(catalog),
        HUGGINGGPT_PREFETCH="false",
        HUGGINGGPT_CACHE="false",
    ):
        settings = load_settings()
        backend = SleepBackend(0.0)
        services = Services(settings, local_backend=backend)
        server = Server(
            settings,
            ServeSettings(api_keys=[KEY], serve_max_in_flight=concurrent, serve_max_runs=4),
            services=services,
        )
        with serving_in_background(server) as url, sleeping_experts(0.0):
            api = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=300)

            def served(i: int) -> tuple[float, Any]:
                t0 = time.perf_counter()
                reply = api.chat.completions.create(
                    model="hugginggpt",
                    messages=[{"role": "user", "content": f"Is this review positive? ({i})"}],
                    extra_body={"plan": PLAN, "models": MODELS},
                )
                return time.perf_counter() - t0, reply.model_extra["hugginggpt"]

            def direct(i: int) -> tuple[float, Any]:
                t0 = time.perf_counter()
                summary = run_request(RequestSpec(request=f"Is this review positive? ({i})", models=MODELS, plan=plan))
                return time.perf_counter() - t0, summary

            served(-1), direct(-1)  # warm-up: imports, the first flow run, the HTTP connection
            server_walls, direct_walls, first_chunk = [], [], []
            for i in range(rounds):
                wall, info = served(i)
                assert info["status"] == "completed", info
                server_walls.append(wall)
                wall, summary = direct(i)
                assert summary.status == "completed", summary.error
                direct_walls.append(wall)
                t0 = time.perf_counter()
                stream = api.chat.completions.create(
                    model="hugginggpt",
                    messages=[{"role": "user", "content": f"Is this review positive? (stream {i})"}],
                    extra_body={"plan": PLAN, "models": MODELS},
                    stream=True,
                )
                for n, _ in enumerate(stream):
                    if n == 0:
                        first_chunk.append(time.perf_counter() - t0)
            log(f"serve: {rounds} rounds; {concurrent} requests at once")
            t0 = time.perf_counter()
            with ThreadPoolExecutor(concurrent) as pool:
                results = list(pool.map(served, range(1000, 1000 + concurrent)))
            burst_wall = time.perf_counter() - t0
    completed = sum(info["status"] == "completed" for _, info in results)
    runs = len({info["flow_run_id"] for _, info in results})
    overhead = median(server_walls) - median(direct_walls)
    return {
        "rounds": rounds,
        "server_median": median(server_walls),
        "direct_median": median(direct_walls),
        "overhead": overhead,
        "first_chunk_median": median(first_chunk),
        "concurrent": concurrent,
        "concurrent_completed": completed,
        "concurrent_runs": runs,
        "concurrent_wall": burst_wall,
        "max_runs": 4,
        "target": {"max_overhead": TARGET_OVERHEAD, "met": overhead <= TARGET_OVERHEAD and completed == concurrent},
    }


def rows(r: dict[str, Any]) -> list[dict[str, str]]:
    target = f"<= {r['target']['max_overhead']:g} s, none lost: {'met' if r['target']['met'] else 'NOT met'}"
    return [
        {
            "benchmark": "serve: one-node explicit plan, 0 s expert, sequential",
            "figure": "wall per request through the server (median); the server's overhead",
            "value": f"{r['server_median']:.3f} s; overhead {r['overhead'] * 1000:+.0f} ms",
            "baseline (same run)": f"run_request in the process {r['direct_median']:.3f} s",
            "target": target,
        },
        {
            "benchmark": "serve: same, streamed",
            "figure": "time to the first chunk (median)",
            "value": f"{r['first_chunk_median'] * 1000:.0f} ms",
            "baseline (same run)": f"whole request {r['server_median']:.3f} s",
            "target": "",
        },
        {
            "benchmark": f"serve: {r['concurrent']} requests at once, {r['max_runs']} runs at a time",
            "figure": "completed, distinct flow runs (wall of the lot)",
            "value": f"{r['concurrent_completed']}/{r['concurrent']}, {r['concurrent_runs']} runs "
            f"({r['concurrent_wall']:.1f} s)",
            "baseline (same run)": f"{r['concurrent']} x {r['direct_median']:.3f} s one by one in the process "
            f"= {r['concurrent'] * r['direct_median']:.1f} s",
            "target": "",
        },
    ]
