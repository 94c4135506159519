"""Cold starts, measured honestly: a 3-node chain whose models download from a fake Hub at a set bandwidth, with
prefetch against without.

Three tiny random models (summarization -> translation -> text-classification, each node reading the previous
node's text) are saved under a folder that :class:`bench.fake_hub.FakeHub` serves on 127.0.0.1 at
``bytes_per_second`` per connection, chosen so that each model's weights take ``download_seconds`` to arrive. Each
measurement runs in a new Python process with a fresh, empty ``HF_HOME`` and ``HF_ENDPOINT`` pointing at the fake
Hub, so huggingface_hub and transformers download exactly as they do for a user, and nothing is loaded before.
The process imports torch, transformers and the flow before the clock starts (a worker has them imported).

Figures, side by side in the same run:

- the chain's makespan (from the start of model selection, when prefetch starts, to the end of the last node)
  and the run's wall time, without prefetch (the baseline: each node downloads and loads its model once its
  upstream is done) and with it;
- the goal: one model's download and load (the median of the nodes' model waits without prefetch) plus the
  chain's compute (the nodes' seconds less their model waits, without prefetch); met within 25 %.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tasks.schemas import RequestSpec
from tasks.settings import RunOptions

CHAIN: tuple[str, ...] = ("summarization", "translation", "text-classification")
ORG = "bench-hub"
REQUEST = "Summarize this, translate the summary, and say whether it is positive."
TEXT = "The cat sat on the mat all day long, and the dog ran in the park with a red ball."


def chain_plan() -> list[dict[str, Any]]:
    plan: list[dict[str, Any]] = [{"id": 0, "task": CHAIN[0], "dep": [-1], "args": {"text": TEXT}}]
    for i, task in enumerate(CHAIN[1:], start=1):
        plan.append({"id": i, "task": task, "dep": [i - 1], "args": {"text": f"<GENERATED>-{i - 1}"}})
    return plan


def build_hub(root: Path) -> dict[str, int]:
    """The chain's models under ``root/bench-hub/<task>``; returns each one's largest file size in bytes."""
    from tests.tiny_models import build_tiny_models

    build_tiny_models(root / ORG, CHAIN)
    return {task: max(p.stat().st_size for p in (root / ORG / task).rglob("*") if p.is_file()) for task in CHAIN}


def hub_catalog(path: Path, root: Path) -> Path:
    """Catalog records of the chain's models, with the architecture and size a catalog records (what the
    availability rule reads before anything is downloaded)."""
    from tasks.sizing import estimate_params

    records = [
        {
            "id": f"{ORG}/{task}",
            "task": task,
            "downloads": 10**12,
            "tags": ["bench"],
            "architecture": json.loads((root / ORG / task / "config.json").read_text())["model_type"],
            "params": estimate_params(root / ORG / task),
        }
        for task in CHAIN
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def measure_in_fresh_process(spec: dict[str, Any], hub_url: str, hf_home: Path) -> dict[str, Any]:
    """Run :func:`child` in a new Python process with a fresh ``HF_HOME`` pointed at the fake Hub."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        {
            "HF_ENDPOINT": hub_url,
            "HF_HUB_OFFLINE": "0",
            "TRANSFORMERS_OFFLINE": "0",
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "PREFECT_API_URL": str(PREFECT_API_URL.value() or ""),
            "HUGGINGGPT_CACHE": "false",
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]),
        }
    )
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-m", "bench.coldstart", json.dumps(spec)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"the measurement process failed ({out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(lines[-1])


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One cold run of the chain in this (new) process; ``spec["prefetch"]`` false turns prefetch off."""
    # the libraries and the chain's model classes are imported before the clock starts, as in a running worker
    from transformers import BertForSequenceClassification, T5ForConditionalGeneration, T5Tokenizer

    del BertForSequenceClassification, T5ForConditionalGeneration, T5Tokenizer

    from flows.prefect_setup import prefect_run_settings
    from flows.request import run_request
    from tasks.schemas import PlanNode

    plan = [PlanNode.model_validate(n) for n in spec["plan"]]
    with prefect_run_settings(quiet=True):
        t0 = time.perf_counter()
        summary = run_request(
            RequestSpec(request=REQUEST, models=spec["pins"], plan=plan),
            RunOptions(storage=spec["storage"], catalog=spec["catalog"], prefetch=spec["prefetch"]),
        )
        wall = time.perf_counter() - t0
    return {
        "status": summary.status,
        "error": summary.error or "; ".join(r.error or "" for r in summary.results if r.error),
        "wall_seconds": wall,
        "makespan_seconds": summary.timings.get("select", 0.0) + summary.timings.get("execute", 0.0),
        "nodes": [
            {
                "task": r.task,
                "model": r.model,
                "seconds": r.seconds,
                "model_wait_seconds": r.model_wait_seconds or 0.0,
                "finished_at": r.finished_at.timestamp() if r.finished_at else None,
            }
            for r in summary.results
        ],
    }


def run(bench: Any, *, download_seconds: float | None = None) -> dict[str, Any]:
    from bench.fake_hub import FakeHub
    from bench.harness import log

    download_seconds = download_seconds or (1.0 if bench.quick else 3.0)
    root = bench.fresh_dir("coldstart-hub")
    sizes = build_hub(root)
    bandwidth = max(sizes.values()) / download_seconds
    catalog = hub_catalog(bench.root / "coldstart-catalog.jsonl", root)
    spec = {
        "plan": chain_plan(),
        "pins": {task: f"{ORG}/{task}" for task in CHAIN},
        "catalog": str(catalog),
    }
    measured: dict[str, Any] = {}
    with FakeHub(root, bytes_per_second=bandwidth) as hub:
        for prefetch in (False, True):
            name = "with_prefetch" if prefetch else "without_prefetch"
            log(f"coldstart: 3-node chain on cold models, {name.replace('_', ' ')}")
            hf_home = Path(tempfile.mkdtemp(prefix="hf-home-", dir=bench.root))
            before = sum(hub.downloads.values())
            result = measure_in_fresh_process(
                {**spec, "prefetch": prefetch, "storage": bench.storage(name)}, hub.url, hf_home
            )
            if result["status"] != "completed":
                raise RuntimeError(f"the chain {name} ended {result['status']}: {result['error']}")
            result["files_downloaded"] = sum(hub.downloads.values()) - before
            # when each model's weights began to come down (this measurement's Hub cache was empty)
            result["weights_started"] = {n["model"]: hub.weights_started.pop(n["model"], None) for n in result["nodes"]}
            measured[name] = result
    base, pre = measured["without_prefetch"], measured["with_prefetch"]
    one_model = statistics.median(n["model_wait_seconds"] for n in base["nodes"])
    compute = sum(n["seconds"] - n["model_wait_seconds"] for n in base["nodes"])
    goal = one_model + compute
    return {
        "bytes_per_second": bandwidth,
        "largest_file_bytes": sizes,
        "download_seconds": download_seconds,
        "without_prefetch": base,
        "with_prefetch": pre,
        "one_model_download_and_load_seconds": one_model,
        "chain_compute_seconds": compute,
        "goal_seconds": goal,
        "speedup": base["makespan_seconds"] / pre["makespan_seconds"] if pre["makespan_seconds"] else None,
        "met": pre["makespan_seconds"] <= 1.25 * goal,
    }


def rows(r: dict[str, Any]) -> list[dict[str, str]]:
    """The table rows of :func:`run`'s figures."""
    base, pre = r["without_prefetch"], r["with_prefetch"]
    waits = " / ".join(f"{n['model_wait_seconds']:.2f}" for n in pre["nodes"])
    base_waits = " / ".join(f"{n['model_wait_seconds']:.2f}" for n in base["nodes"])
    speed = f"{r['bytes_per_second'] / 1e3:.0f} kB/s"
    return [
        {
            "benchmark": f"coldstart: 3-node chain, cold models from a fake Hub at {speed}",
            "figure": "makespan with prefetch (selection to last node; run wall time)",
            "value": f"{pre['makespan_seconds']:.2f} s ({pre['wall_seconds']:.2f} s)",
            "baseline (same run)": f"without prefetch {base['makespan_seconds']:.2f} s ({base['wall_seconds']:.2f} s)",
            "target": f"about one model's download+load + the chain's compute = {r['goal_seconds']:.2f} s "
            f"({r['one_model_download_and_load_seconds']:.2f} + {r['chain_compute_seconds']:.2f}): "
            + ("met" if r["met"] else "MISSED"),
        },
        {
            "benchmark": "coldstart: 3-node chain, cold models from a fake Hub",
            "figure": "each node's wait for its model, with prefetch",
            "value": f"{waits} s",
            "baseline (same run)": f"without prefetch {base_waits} s",
            "target": "later nodes ~0",
        },
    ]


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))), flush=True)
