"""Item 5, memory: peak RSS of a batch whose requests use more models than the model cache may hold.

Six text classifiers of the same architecture (about 28M parameters, 0.11 GB each; one random model built
locally, its folder linked six times, so each is a different model to the cache) serve a batch of requests,
line i pinned to model i mod 6, so consecutive lines change model. The batch runs with the cache bound set
(``HUGGINGGPT_MAX_MODELS=2``); the baseline, in the same process, runs its first twelve lines (every model
twice) with a bound that holds all six. A sampler thread reads the process RSS and the cache's size every
20 ms. Figures: RSS before, peak RSS and peak growth of each run, the most models the cache held at any
sample, loads and evictions. The batch runs against the PostgreSQL-backed Prefect API when there is one (see
:mod:`bench.servers`), so that it does not wait on SQLite's lock.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, catalog_record, env_vars, log, prefect_api, reset_local_backends, write_catalog
from bench.reuse import build_model
from bench.throughput import apis, batch, script_llm, write_requests

TASK = "text-classification"
MODELS = 6
BOUND = 2
MID_SIZE: dict[str, int] = {
    "vocab_size": 30522,
    "hidden_size": 512,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "intermediate_size": 2048,
}
QUICK_SIZE: dict[str, int] = {
    "vocab_size": 4000,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
}


class Sampler:
    """Samples this process's RSS (and a callable's value) every ``every`` seconds in a thread."""

    def __init__(self, probe: Any, every: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._probe = probe
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss-sampler", daemon=True)
        self.samples: list[tuple[float, int, int]] = []

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss(), int(self._probe())))
            self._stop.wait(self._every)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.rss(), int(self._probe())))

    @property
    def peak_rss(self) -> int:
        return max(s[1] for s in self.samples)

    @property
    def peak_probe(self) -> int:
        return max(s[2] for s in self.samples)


def linked_copies(source: Path, root: Path, count: int) -> list[Path]:
    """``count`` folders holding ``source``'s files as hard links (copies where links are not possible)."""
    folders = []
    for k in range(count):
        folder = root / f"model-{k}"
        try:
            shutil.copytree(source, folder, copy_function=os.link)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(source, folder)
        folders.append(folder)
    return folders


def run(bench: Bench, *, count: int | None = None) -> dict[str, Any]:
    import tasks.execute as execute
    from tasks.settings import load_settings

    count = count or (6 if bench.quick else 50)
    models, bound = (3, 1) if bench.quick else (MODELS, BOUND)
    source = bench.fresh_dir("memory-source")
    log(f"memory: building one model, linked {models} times")
    params = build_model(source, QUICK_SIZE if bench.quick else MID_SIZE)
    folders = linked_copies(source, bench.fresh_dir("memory-models"), models)
    ids = [f"bench/classifier-{k}" for k in range(models)]
    catalog = write_catalog(
        bench.root / "memory-catalog.jsonl", [catalog_record(i, TASK, f) for i, f in zip(ids, folders, strict=True)]
    )
    # one node per request (text-classification), pinned to model i mod N

    def pins(i: int) -> dict[str, str]:
        return {TASK: ids[i % models]}

    requests = write_requests(bench.root / "memory-requests.jsonl", count, pins)
    # the baseline needs only enough lines to load every model (twice each): its peak is reached by then
    baseline_count = min(count, 2 * models)
    baseline_requests = write_requests(bench.root / "memory-baseline.jsonl", baseline_count, pins)
    api_name, url = apis(bench)[-1]  # PostgreSQL when there is one: the runs do not wait on SQLite's lock
    rows = []
    for label, max_models, lines, path in (
        (f"bound {bound}", bound, count, requests),
        (f"bound {models} (holds all)", models, baseline_count, baseline_requests),
    ):
        reset_local_backends()
        storage = bench.storage("memory")
        with env_vars(HUGGINGGPT_MAX_MODELS=str(max_models), HUGGINGGPT_CACHE="false", HUGGINGGPT_DEVICE="cpu"):
            settings = load_settings(storage=storage, catalog=str(catalog))
            cache = execute.backend_for(settings).cache
            script_llm(bench, (TASK,))
            log(f"memory: {lines} requests, {models} models, cache {label}")
            with prefect_api(url), Sampler(lambda cache=cache: len(cache)) as sampler:
                before = sampler.rss()
                seconds, summary = batch(path, storage, catalog, max_in_flight=4)
            stats = cache.stats()
        rows.append(
            {
                "cache": label,
                "max_models": max_models,
                "requests": lines,
                "completed": summary.completed,
                "seconds": seconds,
                "rss_before_mb": before / 1e6,
                "peak_rss_mb": sampler.peak_rss / 1e6,
                "peak_growth_mb": (sampler.peak_rss - before) / 1e6,
                "most_models_held": sampler.peak_probe,
                "loads": stats["loads"],
                "evictions": stats["evictions"],
                "load_seconds": stats["load_seconds"],
            }
        )
    reset_local_backends()
    model_mb = sum(f.stat().st_size for f in source.iterdir() if f.suffix == ".safetensors") / 1e6
    bounded = rows[0]
    return {
        "api": api_name,
        "models": models,
        "model_parameters": params,
        "model_mb": round(model_mb, 1),
        "runs": rows,
        "target": {
            "bound": bound,
            "met": bounded["most_models_held"] <= bound and bounded["completed"] == count,
        },
    }
