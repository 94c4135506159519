"""The classifiers the batch benchmarks share: one random text classifier of 14M parameters (55 MB), its folder
hard-linked six times (three in a quick run), so six models to the cache, and a catalog naming them. Built once per
bench run and kept in :attr:`bench.harness.Bench.shared`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from bench.harness import Bench, catalog_record, log, write_catalog

TASK = "text-classification"
MODELS = 6
BOUND = 2
#: 6 layers of 384 over an 8000-token vocabulary: 14M parameters, most of them touched by every forward pass.
MODEL_SIZE: dict[str, int] = {
    "vocab_size": 8000,
    "hidden_size": 384,
    "num_hidden_layers": 6,
    "num_attention_heads": 6,
    "intermediate_size": 1536,
}
QUICK_MODEL_SIZE: dict[str, int] = {
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
}


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


def models(bench: Bench) -> dict[str, Any]:
    """The six classifiers (built once per bench run) and a catalog naming them."""
    if "models" in bench.shared:
        return bench.shared["models"]
    from bench.reuse import build_model

    count = 3 if bench.quick else MODELS
    source = bench.fresh_dir("classifier")
    log(f"batch: building one random classifier, linked {count} times")
    params = build_model(source, QUICK_MODEL_SIZE if bench.quick else MODEL_SIZE)
    folders = linked_copies(source, bench.fresh_dir("classifiers"), count)
    ids = [f"bench/classifier-{k}" for k in range(count)]
    catalog = write_catalog(
        bench.root / "classifiers.jsonl", [catalog_record(i, TASK, f) for i, f in zip(ids, folders, strict=True)]
    )
    weights = sum(f.stat().st_size for f in source.iterdir() if f.suffix == ".safetensors")
    bench.shared["models"] = {
        "ids": ids,
        "catalog": catalog,
        "parameters": params,
        "model_mb": round(weights / 1e6, 1),
        "bound": 1 if bench.quick else BOUND,
    }
    return bench.shared["models"]
