"""Item 5, memory: peak RSS of a 50-request batch with the model cache bound set, beside a cache that holds all.

The batch is the one of :mod:`bench.throughput` (six classifiers, line i pinned to model i mod 6, cache bound
``HUGGINGGPT_MAX_MODELS=2``): its figures are taken from that benchmark's batch run when it ran in this process
(against the last Prefect API it used), else the batch runs here. The baseline, in the same process: the batch's
first twelve lines (every model twice) with a bound that holds all six models. Figures: RSS before, peak RSS and
peak growth during each run (a thread samples every 20 ms), the most models the cache held at any sample, loads
and evictions.

Weights are memory-mapped safetensors: a model's RSS is the pages its forward passes touched.
"""

from __future__ import annotations

from typing import Any

from bench.api import prefect_api
from bench.classifiers import models
from bench.harness import Bench, log
from bench.throughput import IN_FLIGHT, apis, run_mode, warm_up, write_requests


def run(bench: Bench, *, count: int | None = None) -> dict[str, Any]:
    count = count or (6 if bench.quick else 50)
    m = models(bench)
    measured = bench.shared.get("batch")
    if measured is not None:
        api_name = measured[-1]["api"]
        url = dict(apis(bench)).get(api_name)
        bounded = measured[-1]["modes"][-1]
    else:
        api_name, url = apis(bench)[-1]
    baseline_count = min(count, 2 * len(m["ids"]))
    with prefect_api(url):
        if measured is None:
            warm_up(bench)
            log(f"memory: {count} requests through hugginggpt-batch, cache bound {m['bound']}, API on {api_name}")
            requests = write_requests(bench.root / "memory-requests.jsonl", count, m["ids"])
            bounded = run_mode(bench, "batch", count, m["bound"], requests)
        log(f"memory: baseline, {baseline_count} requests with a cache that holds all {len(m['ids'])} models")
        requests = write_requests(bench.root / "memory-baseline.jsonl", baseline_count, m["ids"])
        holds_all = run_mode(bench, "batch", baseline_count, len(m["ids"]), requests)
    bounded = {**bounded, "cache": f"bound {m['bound']}"}
    holds_all = {**holds_all, "cache": f"bound {len(m['ids'])} (holds all)"}
    return {
        "api": api_name,
        "from_batch_benchmark": measured is not None,
        "in_flight": IN_FLIGHT,
        "models": len(m["ids"]),
        "model_parameters": m["parameters"],
        "model_mb": m["model_mb"],
        "runs": [bounded, holds_all],
        "target": {
            "bound": m["bound"],
            "met": bounded["most_models_held"] <= m["bound"] and bounded["completed"] == bounded["requests"],
        },
    }
