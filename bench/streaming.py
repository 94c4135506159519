"""Nodes that start while the plan streams, and replanning after a failure.

Streaming: the scripted LLM writes every reply at a fixed rate (a piece of at most 8 characters every
``piece_seconds``; a reply that is not streamed arrives whole after the same time), so a plan streams over
``plan_seconds``. The plan's nodes sleep ``node_seconds`` each (:func:`bench.harness.sleeping_experts`) and have
one model each, so selection makes no call. Each shape runs with ``HUGGINGGPT_STREAM_PLAN`` on and off,
interleaved; figures per shape (medians of the repeats), both read from the run summary:

* ``first_node_start``: seconds from the start of planning to the first node's start;
* ``span``: seconds from the start of planning to the last node's end;
* ``ratio`` = streamed span / span without streaming (target: at most 0.75 for the 4-node chain).

Replanning: requests whose plan has a node that fails (its model raises), with one replan allowed and with none
(``HUGGINGGPT_MAX_REPLANS=0``), interleaved: the share that complete, the replanning calls per request, the
seconds of the replan stage (the call and the new round), and the wall time against the run without replanning.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.harness import Bench, SleepBackend, catalog_record, env_vars, log, median, run_flow, write_catalog

TASK = "text-classification"
OTHER = "summarization"
BROKEN = "translation"  # the task whose model fails, in the replanning figures


@dataclass(frozen=True)
class Shape:
    name: str
    plan: list[dict[str, Any]]


def _node(i: int, deps: Sequence[int], nonce: str, task: str = TASK) -> dict[str, Any]:
    refs = " + ".join(f"<GENERATED>-{d}" for d in deps)
    text = f"{refs} (step {i} {nonce})" if deps else f"input text {i} {nonce}"
    return {"id": i, "task": task, "dep": list(deps) or [-1], "args": {"text": text}}


def chain(nonce: str) -> Shape:
    return Shape("4-node chain", [_node(i, [i - 1] if i else [], nonce) for i in range(4)])


def fan_out(nonce: str) -> Shape:
    return Shape("fan-out, 1 then 3", [_node(0, [], nonce), *(_node(i, [0], nonce) for i in (1, 2, 3))])


def mixed(nonce: str) -> Shape:
    """A diamond (0 -> 1, 2 -> 3) with an independent node (4)."""
    return Shape(
        "mixed, diamond + 1",
        [_node(0, [], nonce), _node(1, [0], nonce), _node(2, [0], nonce), _node(3, [1, 2], nonce), _node(4, [], nonce)],
    )


SHAPES: tuple[Callable[[str], Shape], ...] = (chain, fan_out, mixed)


class FailingSleepBackend(SleepBackend):
    """A :class:`SleepBackend` whose runs of ``broken`` fail after the same sleep."""

    def __init__(self, seconds: float, broken: str) -> None:
        super().__init__(seconds)
        self.broken = broken

    def run(self, task: str, model: Any, inputs: Mapping[str, Any]) -> Any:
        out = super().run(task, model, inputs)
        if task == self.broken:
            raise RuntimeError(f"injected failure of every {task} model")
        return out


@contextmanager
def experts(backend: SleepBackend) -> Iterator[SleepBackend]:
    """Within the block, every node run locally goes to ``backend`` (:func:`tasks.services.override`)."""
    from tasks.services import override

    with override(local_backend=backend):
        yield backend


@contextmanager
def llm_rate(bench: Bench, piece_seconds: float) -> Iterator[None]:
    bench.llm.piece_seconds = piece_seconds
    try:
        yield
    finally:
        bench.llm.piece_seconds = 0.0


def _plan_reply(plan: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps({"tasks": list(plan)})


def _pieces(text: str) -> int:
    from tests.llm_server import pieces

    return len(pieces(text))


def streaming_figures(
    bench: Bench,
    catalog: Any,
    *,
    plan_seconds: float,
    node_seconds: float,
    repeats: int,
    shapes: Sequence[Callable[[str], Shape]] = SHAPES,
) -> list[dict[str, Any]]:
    rows = []
    for build in shapes:
        spans: dict[str, list[float]] = {"on": [], "off": []}
        firsts: dict[str, list[float]] = {"on": [], "off": []}
        walls: dict[str, list[float]] = {"on": [], "off": []}
        streamed_nodes: list[bool] = []
        name = build("x").name
        piece_seconds = 0.0
        for k in range(repeats):
            for mode in ("off", "on"):
                shape = build(uuid.uuid4().hex[:8])  # fresh inputs: the result cache never answers
                reply = _plan_reply(shape.plan)
                piece_seconds = plan_seconds / max(_pieces(reply) - 1, 1)
                bench.llm.set(plan=reply, respond="Done.")
                log(f"stream: {name}, streaming {mode}, run {k + 1}/{repeats}")
                with (
                    env_vars(HUGGINGGPT_STREAM_PLAN="true" if mode == "on" else "false"),
                    llm_rate(bench, piece_seconds),
                    experts(SleepBackend(node_seconds)) as backend,
                ):
                    result = run_flow(f"bench: {name}", storage=bench.storage("stream"), catalog=catalog)
                if not result.ok or len(backend.spans) != len(shape.plan):
                    raise RuntimeError(
                        f"{name} ({mode}): run ended {result.state_name}, {len(backend.spans)} node runs: "
                        f"{result.summary and result.summary.error}"
                    )
                spans[mode].append(result.stage("last_node_end"))
                firsts[mode].append(result.stage("first_node_start"))
                walls[mode].append(result.wall)
                if mode == "on":
                    streamed_nodes.append(bool(result.summary.plan_streamed))
        span_on, span_off = median(spans["on"]), median(spans["off"])
        rows.append(
            {
                "shape": name,
                "nodes": len(build("x").plan),
                "plan_stream_seconds": plan_seconds,
                "piece_seconds": piece_seconds,
                "node_seconds": node_seconds,
                "first_node_start_streamed": median(firsts["on"]),
                "first_node_start_not_streamed": median(firsts["off"]),
                "span_streamed": span_on,
                "span_not_streamed": span_off,
                "span_runs_streamed": [round(s, 3) for s in spans["on"]],
                "span_runs_not_streamed": [round(s, 3) for s in spans["off"]],
                "wall_streamed": median(walls["on"]),
                "wall_not_streamed": median(walls["off"]),
                "ratio": span_on / span_off if span_off else None,
                "nodes_started_while_streaming": all(streamed_nodes),
            }
        )
    return rows


def replan_figures(bench: Bench, catalog: Any, *, requests: int, node_seconds: float) -> dict[str, Any]:
    """Each request: node 0 summarises, node 1 translates the summary (its model fails); the replan offers a
    text classification of the summary instead."""
    outcomes: dict[str, list[Any]] = {"replan": [], "none": []}
    for k in range(requests):
        for mode in ("none", "replan"):
            nonce = uuid.uuid4().hex[:8]
            plan = [_node(0, [], nonce, OTHER), _node(1, [0], nonce, BROKEN)]
            again = [_node(2, [0], nonce, TASK)]
            bench.llm.set(plan=_plan_reply(plan), replan=_plan_reply(again), respond="Done.")
            log(f"replan: request {k + 1}/{requests}, {'one replan' if mode == 'replan' else 'no replan'}")
            with (
                env_vars(HUGGINGGPT_MAX_REPLANS="1" if mode == "replan" else "0", HUGGINGGPT_STREAM_PLAN="false"),
                experts(FailingSleepBackend(node_seconds, BROKEN)),
            ):
                calls_before = bench.llm.calls["replan"]
                result = run_flow("bench: replan", storage=bench.storage("replan"), catalog=catalog)
                calls = bench.llm.calls["replan"] - calls_before
            outcomes[mode].append((result, calls))
    with_replan, without = outcomes["replan"], outcomes["none"]
    return {
        "requests": requests,
        "node_seconds": node_seconds,
        "completed_share_with_one_replan": sum(r.ok for r, _ in with_replan) / requests,
        "completed_share_without_replan": sum(r.ok for r, _ in without) / requests,
        "replan_calls_per_request": sum(c for _, c in with_replan) / requests,
        "llm_calls_per_request_with_replan": median([r.summary.llm.calls for r, _ in with_replan]),
        "llm_calls_per_request_without": median([r.summary.llm.calls for r, _ in without]),
        "replan_stage_seconds": median([r.stage("replan") for r, _ in with_replan]),
        "wall_with_replan": median([r.wall for r, _ in with_replan]),
        "wall_without_replan": median([r.wall for r, _ in without]),
    }


def run(
    bench: Bench,
    *,
    plan_seconds: float | None = None,
    node_seconds: float | None = None,
    repeats: int | None = None,
    shapes: Sequence[Callable[[str], Shape]] = SHAPES,
    requests: int | None = None,
) -> dict[str, Any]:
    quick = bench.quick
    plan_seconds = plan_seconds if plan_seconds is not None else (1.6 if quick else 4.0)
    node_seconds = node_seconds if node_seconds is not None else (0.4 if quick else 1.0)
    repeats = repeats if repeats is not None else (1 if quick else 5)
    requests = requests if requests is not None else (3 if quick else 6)
    records = [
        catalog_record(f"bench/sleeping-{task}", task, bench.fresh_dir(f"sleeping-{task}"))
        for task in (TASK, OTHER, BROKEN)
    ]
    catalog = write_catalog(bench.root / "stream-catalog.jsonl", records)
    # one run first, not measured: the process's first node imports and builds the expert backends once
    bench.llm.set(plan=_plan_reply([_node(0, [], "warm-up")]), respond="Done.")
    with experts(SleepBackend(0.0)):
        run_flow("bench: warm-up", storage=bench.storage("stream"), catalog=catalog)
    rows = streaming_figures(
        bench, catalog, plan_seconds=plan_seconds, node_seconds=node_seconds, repeats=repeats, shapes=shapes
    )
    replans = replan_figures(bench, catalog, requests=requests, node_seconds=node_seconds)
    bench.llm.reset()
    target = next((r for r in rows if "chain" in r["shape"]), rows[0])
    return {
        "shapes": rows,
        "replan": replans,
        "target": {
            "shape": target["shape"],
            "ratio_target": 0.75,
            "ratio": target["ratio"],
            "met": target["ratio"] is not None and target["ratio"] <= 0.75,
        },
    }


def rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    """The table rows: per shape, the span and the first node's start, streamed against not streamed; then
    replanning."""

    def s(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.2f} s"

    out = []
    target = r["target"]
    for row in r["shapes"]:
        is_target = row["shape"] == target["shape"]
        met = f": {'met' if target['met'] else 'MISSED'}" if is_target else ""
        head = (
            f"stream: {row['shape']}, plan streamed over {row['plan_stream_seconds']:g} s, "
            f"{row['node_seconds']:g} s nodes"
        )
        out.append(
            {
                "benchmark": head,
                "figure": "planning start to last node end, streamed (ratio to not streamed)",
                "value": f"{s(row['span_streamed'])} ({row['ratio']:.2f})" if row["ratio"] else s(row["span_streamed"]),
                "baseline (same run)": f"{s(row['span_not_streamed'])} not streamed",
                "target": f"ratio <= {target['ratio_target']}{met}" if is_target else "",
            }
        )
        out.append(
            {
                "benchmark": head,
                "figure": "planning start to first node start, streamed",
                "value": s(row["first_node_start_streamed"]),
                "baseline (same run)": f"{s(row['first_node_start_not_streamed'])} not streamed",
                "target": "",
            }
        )
    p = r["replan"]
    out.append(
        {
            "benchmark": f"replan: {p['requests']} requests whose second node fails",
            "figure": "share completed with one replan; replan calls and stage seconds per request",
            "value": (
                f"{p['completed_share_with_one_replan']:.0%}; {p['replan_calls_per_request']:g} call(s), "
                f"{s(p['replan_stage_seconds'])}"
            ),
            "baseline (same run)": (
                f"{p['completed_share_without_replan']:.0%} without replanning; wall {s(p['wall_with_replan'])} "
                f"vs {s(p['wall_without_replan'])}"
            ),
            "target": "",
        }
    )
    return out
