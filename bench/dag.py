"""Item 1, DAG overhead: synthetic plans run by the real request flow with sleeping experts.

Shapes: one node; independent nodes; a layered graph (each node after two of the level before); a chain. Each
node sleeps the same time, so the critical path is (longest path in nodes) x sleep. Figures per shape:

* ``makespan``: the flow's execute stage (first node submitted to last node collected), median of the repeats;
* ``wall``: the whole flow run as its caller sees it (flow run creation, selection, execution, the response
  call to the LLM, summary and artifacts, final state);
* ``ratio`` = makespan / critical path, and ``wall_ratio`` = wall / critical path;
* ``sequential``: the baseline, the same nodes one after another in a plain loop over the executor's core
  (``execute_node``: same inputs, result-cache lookups and storage writes, no Prefect): its own time measured
  with an expert that returns at once, plus the sum of the sleeps.

And the per-run fixed overhead: the wall time of a run whose plan is empty (no node), beside the time spent
inside its stages (the one LLM call); then empty-plan and one-node runs as the code is and as it was before
the changes of :mod:`bench.before`, interleaved.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.before import as_before
from bench.harness import Bench, catalog_record, log, median, run_flow, sleeping_experts, timed, write_catalog

TASK = "text-classification"
MODEL_ID = "bench/sleeping-text-classification"
#: every shape's makespan within this factor of its critical path, with a thread pool at least as wide as it
RATIO_TARGET = 1.10
#: a chain's overhead per node (makespan minus critical path, over its length)
PER_NODE_TARGET = 0.03


@dataclass(frozen=True)
class Shape:
    name: str
    nodes: int
    plan: list[dict[str, Any]]
    depth: int
    width: int


def _node(i: int, deps: Sequence[int], nonce: str) -> dict[str, Any]:
    refs = " + ".join(f"<GENERATED>-{d}" for d in deps)
    text = f"{refs} (step {i} {nonce})" if deps else f"input text {i} {nonce}"
    return {"id": i, "task": TASK, "dep": list(deps) or [-1], "args": {"text": text}}


def single(nonce: str) -> Shape:
    return Shape("1 node", 1, [_node(0, [], nonce)], depth=1, width=1)


def independent(n: int, nonce: str) -> Shape:
    return Shape(f"{n} independent", n, [_node(i, [], nonce) for i in range(n)], depth=1, width=n)


def layered(levels: int, width: int, nonce: str) -> Shape:
    """``levels`` x ``width`` nodes; node ``i`` of a level depends on nodes ``i`` and ``i+1`` of the level before."""
    plan = []
    for level in range(levels):
        for i in range(width):
            node_id = level * width + i
            deps = [] if level == 0 else sorted({(level - 1) * width + i, (level - 1) * width + (i + 1) % width})
            plan.append(_node(node_id, deps, nonce))
    return Shape(f"{levels * width}-node graph, {levels} levels", levels * width, plan, depth=levels, width=width)


def chain(n: int, nonce: str) -> Shape:
    return Shape(f"{n}-node chain", n, [_node(i, [i - 1] if i else [], nonce) for i in range(n)], depth=n, width=1)


def critical_path(plan: Sequence[dict[str, Any]], seconds: float) -> float:
    """Sum of the sleeps along the longest path."""
    longest: dict[int, int] = {}
    for node in plan:  # plans are in dependency order
        deps = [d for d in node["dep"] if d >= 0]
        longest[node["id"]] = 1 + max((longest[d] for d in deps), default=0)
    return max(longest.values(), default=0) * seconds


def sequential_baseline(plan: Sequence[dict[str, Any]], seconds: float, storage: str, catalog: Path) -> float:
    """The same nodes one after another, through the executor's core, without Prefect: the executor's own time,
    measured with an expert that returns at once, plus the sleeps (``len(plan) * seconds``, which a sleep
    adds exactly), so the baseline costs no bench time beyond its overhead."""
    from tasks.availability import Availability
    from tasks.execute import cache_params, execute_node
    from tasks.plan import validate_plan
    from tasks.result_cache import ResultCache
    from tasks.schemas import NodeResult
    from tasks.select import select_models
    from tasks.settings import load_settings
    from tasks.storage import store_for

    settings = load_settings(storage=storage, catalog=str(catalog))
    nodes, _ = validate_plan(list(plan))
    selection = select_models(nodes, Availability(settings), llm=None, request="bench", pins={TASK: MODEL_ID})
    by_node = {a.node_id: a for a in selection.assignments}
    store = store_for(settings, f"sequential-{uuid.uuid4().hex[:8]}")
    with sleeping_experts(0.0) as backend:

        def loop() -> list[NodeResult]:
            done: dict[int, NodeResult] = {}
            for node in nodes:
                done[node.id] = execute_node(
                    node,
                    by_node[node.id],
                    done,
                    store,
                    backend,
                    cache=ResultCache(store) if settings.cache else None,
                    cache_params=cache_params(settings),
                )
            return list(done.values())

        elapsed, results = timed(loop)
    failed = [r for r in results if r.status != "completed"]
    if failed:
        raise RuntimeError(f"sequential baseline: {failed[0].error}")
    return elapsed + len(nodes) * seconds


def before_after(storage: str, catalog: Path, *, pairs: int) -> dict[str, Any]:
    """Empty-plan runs as the code is and as it was before the changes of :mod:`bench.before`, interleaved (so
    both see the same machine load), and one-node runs likewise: medians of each."""
    from bench.before import BEFORE

    one = [_node(0, [], "x")]
    walls: dict[str, list[float]] = {"empty": [], "empty_before": [], "one_node": [], "one_node_before": []}
    for k in range(pairs):
        for suffix, make in (("", contextlib.nullcontext), ("_before", as_before)):
            with make(), sleeping_experts(0.0):
                walls["empty" + suffix].append(run_flow("bench: empty plan", storage=storage, plan=[]).wall)
                plan = [{**one[0], "args": {"text": f"one node {k}{suffix}"}}]
                result = run_flow(
                    "bench: one node", storage=storage, catalog=catalog, plan=plan, models={TASK: MODEL_ID}
                )
                if not result.ok:
                    raise RuntimeError(f"one-node run ended {result.state_name}")
                walls["one_node" + suffix].append(result.wall)
    out: dict[str, Any] = {f"{k}_seconds": median(v) for k, v in walls.items()}
    out["changes"] = list(BEFORE)
    out["pairs"] = pairs
    return out


#: The shapes measured by default, by name: full size, and with ``--quick``.
SHAPES: tuple[str, ...] = ("single", "independent", "layered", "chain")


def shape_builders(quick: bool) -> dict[str, Callable[[str], Shape]]:
    wide, levels, width, length = (4, 3, 3, 10) if quick else (10, 4, 5, 50)
    return {
        "single": single,
        "independent": lambda nonce: independent(wide, nonce),
        "layered": lambda nonce: layered(levels, width, nonce),
        "chain": lambda nonce: chain(length, nonce),
    }


def fixed_overhead(bench: Bench, catalog: Path, *, runs: int, pairs: int) -> dict[str, Any]:
    """Empty-plan runs, after one warm-up run (imports, clients) reported as ``cold``."""
    log("dag: empty-plan runs (fixed overhead)")
    storage = bench.storage("dag-empty")
    cold = run_flow("bench: empty plan", storage=storage, catalog=catalog, plan=[])
    empties = [run_flow("bench: empty plan", storage=storage, catalog=catalog, plan=[]) for _ in range(runs)]
    for r in [cold, *empties]:
        if not r.ok:
            raise RuntimeError(f"empty-plan run ended {r.state_name}: {r.summary and r.summary.error}")
    stages = [sum(r.summary.timings.get(k, 0.0) for k in ("plan", "select", "execute", "respond")) for r in empties]
    overhead: dict[str, Any] = {
        "wall_seconds": median([r.wall for r in empties]),
        "wall_seconds_runs": [round(r.wall, 4) for r in empties],
        "cold_wall_seconds": cold.wall,
        "inside_stages_seconds": median(stages),
        "target_seconds": 0.5,
    }
    overhead["met"] = overhead["wall_seconds"] <= overhead["target_seconds"]
    if pairs:
        log("dag: empty-plan and one-node runs, code as is and as before bench/before.py's changes, interleaved")
        overhead["before_after"] = before_after(storage, catalog, pairs=pairs)
    return overhead


def run(
    bench: Bench,
    *,
    seconds: float | None = None,
    shapes: Sequence[str] = SHAPES,
    empty_runs: int | None = None,
    pairs: int | None = None,
) -> dict[str, Any]:
    quick = bench.quick
    seconds = seconds if seconds is not None else (0.2 if quick else 1.0)
    repeats = 1 if quick else 3
    model_dir = bench.fresh_dir("sleeping-model")
    catalog = write_catalog(bench.root / "dag-catalog.jsonl", [catalog_record(MODEL_ID, TASK, model_dir)])
    pins = {TASK: MODEL_ID}
    overhead = fixed_overhead(
        bench,
        catalog,
        runs=empty_runs if empty_runs is not None else (3 if quick else 5),
        pairs=pairs if pairs is not None else (3 if quick else 6),
    )
    builders = shape_builders(quick)
    # one node run first, not measured: the process's first node imports and builds the expert backends once
    with sleeping_experts(seconds):
        run_flow(
            "bench: warm-up",
            storage=bench.storage("dag"),
            catalog=catalog,
            plan=builders["single"](uuid.uuid4().hex[:8]).plan,
            models=pins,
        )
    # the graph carries the target: repeated (median); the chain runs half-second nodes to keep the bench short
    plan: list[tuple[Callable[[str], Shape], int, float]] = [
        (builders[name], repeats if name == "layered" else 1, seconds / 2 if name == "chain" and not quick else seconds)
        for name in shapes
    ]
    rows: list[dict[str, Any]] = []
    for build, times, node_seconds in plan:
        walls: list[float] = []
        makespans: list[float] = []
        overlap_ok = True
        for k in range(times):
            shape = build(uuid.uuid4().hex[:8])  # fresh inputs: the result cache never answers for a node
            log(f"dag: {shape.name}, {node_seconds:g} s nodes, run {k + 1}/{times}")
            result, overlapped = _measure(bench, shape, node_seconds, catalog, pins)
            walls.append(result.wall)
            makespans.append(result.stage("execute"))
            overlap_ok = overlap_ok and overlapped
        shape = build(uuid.uuid4().hex[:8])
        log(f"dag: {shape.name}, once as before bench/before.py's changes")
        with as_before():
            before, _ = _measure(bench, shape, node_seconds, catalog, pins)
        shape = build(uuid.uuid4().hex[:8])
        log(f"dag: {shape.name}, sequential baseline")
        seq = sequential_baseline(shape.plan, node_seconds, bench.storage("dag-seq"), catalog)
        crit = critical_path(shape.plan, node_seconds)
        makespan, wall = median(makespans), median(walls)
        per_node = (makespan - crit) / shape.depth
        met = makespan / crit <= RATIO_TARGET and overlap_ok
        if shape.depth > 1 and shape.width == 1:  # a chain: each node's own overhead is on the critical path
            met = met and per_node <= PER_NODE_TARGET
        row = {
            "shape": shape.name,
            "nodes": shape.nodes,
            "node_seconds": node_seconds,
            "critical_path_seconds": crit,
            "makespan_seconds": makespan,
            "makespan_runs": [round(m, 4) for m in makespans],
            "wall_seconds": wall,
            "ratio": makespan / crit if crit else None,
            "wall_ratio": wall / crit if crit else None,
            "sequential_seconds": seq,
            "speedup_vs_sequential": seq / makespan if makespan else None,
            "per_node_overhead_seconds": per_node,
            "independent_nodes_overlapped": overlap_ok,
            "before_makespan_seconds": before.stage("execute"),
            "before_ratio": before.stage("execute") / crit if crit else None,
            "ratio_target": RATIO_TARGET,
            "per_node_target_seconds": PER_NODE_TARGET if shape.depth > 1 and shape.width == 1 else None,
            "met": met,
        }
        rows.append(row)
    return {
        "node_seconds": seconds,
        "fixed_overhead": overhead,
        "shapes": rows,
        "target": {
            "ratio_target": RATIO_TARGET,
            "per_node_target_seconds": PER_NODE_TARGET,
            "worst_ratio": max((r["ratio"] for r in rows if r["ratio"] is not None), default=None),
            "met": bool(rows) and all(r["met"] for r in rows),
        },
    }


def _measure(bench: Bench, shape: Shape, node_seconds: float, catalog: Path, pins: dict[str, str]) -> tuple[Any, bool]:
    """One run of ``shape`` with a thread pool as wide as the shape (at least 4): the run, and whether its widest
    level's nodes all ran at once."""
    workers = max(4, shape.width)
    with sleeping_experts(node_seconds) as backend:
        result = run_flow(
            f"bench: {shape.name}",
            storage=bench.storage("dag"),
            catalog=catalog,
            plan=shape.plan,
            models=pins,
            max_workers=workers,
        )
    if not result.ok:
        raise RuntimeError(f"{shape.name}: run ended {result.state_name}: {result.summary and result.summary.error}")
    if len(backend.spans) != shape.nodes:
        raise RuntimeError(f"{shape.name}: {len(backend.spans)} expert calls for {shape.nodes} nodes")
    return result, _max_concurrency(backend.spans) >= min(shape.width, workers)


def _max_concurrency(spans: Sequence[tuple[str, float, float]]) -> int:
    events = sorted([(s, 1) for _, s, _ in spans] + [(e, -1) for _, _, e in spans], key=lambda x: (x[0], x[1]))
    best = current = 0
    for _, step in events:
        current += step
        best = max(best, current)
    return best
