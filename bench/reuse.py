"""Item 3, model reuse: the same request twice in one process, with a model of realistic size.

A BERT-base sized text classifier (about 110M parameters, random weights, built and saved locally: nothing is
downloaded) is registered in a catalog with its folder. The request (one text-classification node pinned to
it) runs twice through the real flow and the real local backend; the output cache is off so that the model
really runs both times. Figures: model-load seconds of each run (from the backend's model cache), the node's
seconds, the run's wall time; and as a baseline, a fresh load of the same model in a new cache (its files
are in the OS page cache by then, so this is the cost the model cache saves, not a cold disk read).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.harness import Bench, catalog_record, env_vars, log, reset_local_backends, run_flow, write_catalog

TASK = "text-classification"
MODEL_ID = "bench/bert-base-random"

#: BERT-base: 12 layers of 768, vocabulary 30522 -> about 110M parameters (0.44 GB of float32 weights).
FULL_SIZE: dict[str, int] = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
QUICK_SIZE: dict[str, int] = {
    "vocab_size": 4000,
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
}


def build_model(folder: Path, size: dict[str, int]) -> int:
    """A random BERT sentiment classifier of ``size`` saved to ``folder`` with a small trained tokenizer;
    returns its parameter count."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from tests.tiny_models import SENTIMENT_LABELS, _bert_tokenizer

    torch.manual_seed(0)
    tokenizer = _bert_tokenizer(folder)
    tokenizer.model_max_length = 128
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        **size,
        max_position_embeddings=512,
        id2label=SENTIMENT_LABELS,
        label2id={v: k for k, v in SENTIMENT_LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertForSequenceClassification(config)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(folder)
    return params


def fresh_load_seconds(folder: Path) -> float:
    """Load the model once more, in a new cache (what every request would pay without model reuse)."""
    from tasks.experts.base import ModelSpec
    from tasks.experts.cache import ModelCache
    from tasks.experts.local import LocalBackend

    backend = LocalBackend(cache=ModelCache(max_models=1), device="cpu")
    spec = ModelSpec(id=MODEL_ID, task=TASK, local_path=str(folder))
    t0 = time.perf_counter()
    backend.load(TASK, spec)
    elapsed = time.perf_counter() - t0
    backend.cache.clear()
    return elapsed


def run(bench: Bench, *, size: dict[str, int] | None = None) -> dict[str, Any]:
    from tasks.settings import load_settings

    size = size or (QUICK_SIZE if bench.quick else FULL_SIZE)
    folder = bench.fresh_dir("reuse-model")
    log(f"reuse: building a random BERT classifier ({size['num_hidden_layers']} layers of {size['hidden_size']})")
    t0 = time.perf_counter()
    params = build_model(folder, size)
    build_seconds = time.perf_counter() - t0
    weights_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6
    catalog = write_catalog(bench.root / "reuse-catalog.jsonl", [catalog_record(MODEL_ID, TASK, folder)])
    plan = [{"id": 0, "task": TASK, "dep": [-1], "args": {"text": "The battery died after two days."}}]
    reset_local_backends()
    runs = []
    with env_vars(HUGGINGGPT_CACHE="false", HUGGINGGPT_DEVICE="cpu"):
        storage = bench.storage("reuse")
        for attempt in (1, 2):
            log(f"reuse: request {attempt} of 2")
            before = _cache_stats(load_settings(storage=storage, catalog=str(catalog)))
            result = run_flow(
                "Is this review positive: 'The battery died after two days.'",
                storage=storage,
                catalog=catalog,
                plan=plan,
                models={TASK: MODEL_ID},
            )
            if not result.ok:
                raise RuntimeError(f"reuse run {attempt} ended {result.state_name}: {result.summary.error}")
            after = _cache_stats(load_settings(storage=storage, catalog=str(catalog)))
            runs.append(
                {
                    "load_seconds": after["load_seconds"] - before["load_seconds"],
                    "loads": after["loads"] - before["loads"],
                    "hits": after["hits"] - before["hits"],
                    "node_seconds": result.summary.results[0].seconds,
                    "wall_seconds": result.wall,
                }
            )
    log("reuse: baseline, a fresh load of the same model")
    fresh = fresh_load_seconds(folder)
    reset_local_backends()
    first, second = runs
    load_ratio = first["load_seconds"] / second["load_seconds"] if second["load_seconds"] > 0 else None
    return {
        "model": MODEL_ID,
        "parameters": params,
        "weights_mb": round(weights_mb, 1),
        "build_seconds": build_seconds,
        "first": first,
        "second": second,
        "fresh_load_seconds": fresh,
        "load_ratio": load_ratio,
        "node_ratio": first["node_seconds"] / second["node_seconds"] if second["node_seconds"] else None,
        "target": {
            "min_ratio": 10.0,
            "met": second["loads"] == 0 and second["load_seconds"] * 10 <= first["load_seconds"],
        },
    }


def _cache_stats(settings: Any) -> dict[str, Any]:
    from tasks.services import local_backend_for

    backend = local_backend_for(settings)
    return backend.cache.stats()
