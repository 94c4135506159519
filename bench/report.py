"""The figures as table rows (each beside its same-run baseline and its target) and as a markdown table."""

from __future__ import annotations

import os
import platform
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from bench.coldstart import rows as coldstart_rows
from bench.pool import rows as pool_rows
from bench.serve import rows as serve_rows
from bench.streaming import rows as stream_rows

COLUMNS: tuple[str, ...] = ("benchmark", "figure", "value", "baseline (same run)", "target")


def machine() -> dict[str, Any]:
    """Where and with what the figures were measured."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "host": socket.gethostname(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": {name: version(name) for name in ("prefect", "transformers", "torch", "hugginggpt-prefect")},
    }


def _s(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} s"


def _x(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _target(text: str, met: bool | None) -> str:
    if met is None:
        return text
    return f"{text}: {'met' if met else 'MISSED'}"


def dag_rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    o = r["fixed_overhead"]
    rows = [
        {
            "benchmark": "dag: empty plan",
            "figure": "per-run fixed overhead (flow run wall time, median)",
            "value": _s(o["wall_seconds"]),
            "baseline (same run)": f"{_s(o['inside_stages_seconds'])} inside the stages (one LLM call)",
            "target": _target(f"<= {o['target_seconds']} s", o["met"]),
        }
    ]
    p = o.get("before_after")
    if p:
        rows.append(
            {
                "benchmark": "dag: empty plan / one node, code as is vs before the changes of bench/before.py",
                "figure": "run wall time, median of interleaved runs",
                "value": f"{_s(p['empty_seconds'])} / {_s(p['one_node_seconds'])}",
                "baseline (same run)": f"before {_s(p['empty_before_seconds'])} / {_s(p['one_node_before_seconds'])}",
                "target": _target(f"<= {o['target_seconds']} s", p["empty_seconds"] <= o["target_seconds"]),
            }
        )
    for row in r["shapes"]:
        target = f"ratio <= {row['ratio_target']:g}"
        if row.get("per_node_target_seconds") is not None:
            target += f", <= {row['per_node_target_seconds']:g} s per node ({_s(row['per_node_overhead_seconds'], 3)})"
        if row["nodes"] > 1 and row["critical_path_seconds"] == row["node_seconds"]:
            target += ", all at once" + ("" if row["independent_nodes_overlapped"] else " (they were NOT)")
        rows.append(
            {
                "benchmark": f"dag: {row['shape']}, {row['node_seconds']:g} s nodes",
                "figure": "makespan / critical path (wall of the whole run)",
                "value": f"{_s(row['makespan_seconds'])} / {_s(row['critical_path_seconds'])} = "
                f"{_x(row['ratio'])} ({_s(row['wall_seconds'])})",
                "baseline (same run)": f"sequential {_s(row['sequential_seconds'])}; before bench/before.py's "
                f"changes {_s(row['before_makespan_seconds'])} = {_x(row['before_ratio'])}",
                "target": _target(target, row["met"]),
            }
        )
    return rows


def llm_rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    for row in r["plans"]:
        rows.append(
            {
                "benchmark": f"llm: {row['plan_nodes']}-node plan, {r['candidates_per_task']} candidates per task",
                "figure": "LLM calls (prompt + completion tokens)",
                "value": f"{row['calls']} ({row['prompt_tokens']} + {row['completion_tokens']})",
                "baseline (same run)": f"HuggingGPT scheme {row['hugginggpt_calls_measured']} "
                f"({row['hugginggpt_prompt_tokens']} + {row['hugginggpt_completion_tokens']})",
                "target": _target(f"<= {r['target']['max_calls']} calls", row["calls"] <= r["target"]["max_calls"]),
            }
        )
    return rows


def reuse_rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    first, second = r["first"], r["second"]
    ratio = "cache hit, no load" if second["loads"] == 0 else f"{_x(r['load_ratio'], 1)}x less"
    return [
        {
            "benchmark": f"reuse: {r['parameters'] / 1e6:.0f}M-parameter model, same request twice",
            "figure": "model-load seconds, 2nd request (1st)",
            "value": f"{_s(second['load_seconds'], 3)} ({_s(first['load_seconds'])}): {ratio}",
            "baseline (same run)": f"a fresh load {_s(r['fresh_load_seconds'])}",
            "target": _target(f">= {r['target']['min_ratio']:g}x less", r["target"]["met"]),
        },
        {
            "benchmark": "reuse: same",
            "figure": "node seconds, 2nd request (1st)",
            "value": f"{_s(second['node_seconds'], 3)} ({_s(first['node_seconds'])})",
            "baseline (same run)": f"run wall {_s(second['wall_seconds'])} ({_s(first['wall_seconds'])})",
            "target": "",
        },
    ]


def batch_rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    rows = []
    what = f"batch: {r['requests']} one-node requests over {r['models']} models, cache bound {r['max_models']}"
    measured = [(api, f"Prefect API on {api['api']}") for api in r["apis"]]
    slow = r.get("with_llm_latency")
    if slow:
        measured.append((slow, f"Prefect API on {slow['api']}, {slow['llm_latency_seconds']:g} s per LLM answer"))
    for api, where in measured:
        base = api["modes"][0]
        for row in api["modes"][1:]:
            retried = sum(row.get("api_503_retries", {}).values())
            base_retried = sum(base.get("api_503_retries", {}).values())
            rows.append(
                {
                    "benchmark": f"{what}, {where}",
                    "figure": f"requests per minute, {row['mode']} (seconds; API 503s retried)",
                    "value": f"{row['requests_per_minute']:.0f}/min ({_s(row['seconds'], 1)}; {retried}): "
                    f"{row['speedup']:.2f}x",
                    "baseline (same run)": f"{base['mode']}: {base['requests_per_minute']:.0f}/min "
                    f"({_s(base['seconds'], 1)}; {base_retried})",
                    "target": "",
                }
            )
    scaling = r.get("in_flight_scaling")
    for row in (scaling or {}).get("runs", []):
        rows.append(
            {
                "benchmark": f"batch: {row['lines']} LLM-planned lines "
                f"({scaling['llm_round_trips_per_line']} LLM round "
                f"trips of {scaling['llm_latency_seconds']:g} s each), {row['in_flight']} in flight, Prefect API on "
                f"{scaling['api']}",
                "figure": "lines per minute (share of the bound); CPU s per line: batch process, API server",
                "value": f"{row['lines_per_minute']:.0f}/min ({100 * row['of_bound']:.0f} %); "
                f"{row['cpu_seconds_per_line']:.2f} s, {row['api_cpu_seconds_per_line']:.2f} s",
                "baseline (same run)": f"bound {row['bound_per_minute']:.0f}/min",
                "target": _target(">= 80 % of the bound", row["of_bound"] >= 0.8) if row["in_flight"] == 8 else "",
            }
        )
    return rows


def memory_rows(r: Mapping[str, Any]) -> list[dict[str, str]]:
    bounded, full = r["runs"][0], r["runs"][1]
    return [
        {
            "benchmark": f"memory: batch of {bounded['requests']} requests over {r['models']} models of "
            f"{r['model_mb']:.0f} MB, cache {bounded['cache']}, API on {r['api']}",
            "figure": "peak RSS (growth during the batch), most models held, loads",
            "value": f"{bounded['peak_rss_mb']:.0f} MB (+{bounded['peak_growth_mb']:.0f} MB), "
            f"{bounded['most_models_held']} held, {bounded['loads']} loads",
            "baseline (same run)": f"{full['requests']} requests, cache {full['cache']}: {full['peak_rss_mb']:.0f} MB "
            f"(+{full['peak_growth_mb']:.0f} MB), {full['most_models_held']} held, {full['loads']} loads",
            "target": _target(f"<= {r['target']['bound']} models held", r["target"]["met"]),
        }
    ]


ROW_MAKERS = {"dag": dag_rows, "llm": llm_rows, "reuse": reuse_rows, "batch": batch_rows, "memory": memory_rows}
ROW_MAKERS["coldstart"] = coldstart_rows
ROW_MAKERS["pool"] = pool_rows
ROW_MAKERS["stream"] = stream_rows
ROW_MAKERS["serve"] = serve_rows


def table_rows(results: Mapping[str, Any]) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for name, make in ROW_MAKERS.items():
        result = results.get(name)
        if result is None:
            continue
        if "error" in result:
            rows.append(
                {
                    "benchmark": name,
                    "figure": "error",
                    "value": result["error"],
                    "baseline (same run)": "",
                    "target": "",
                }
            )
            continue
        rows.extend(make(result))
    return rows


def markdown_table(rows: Sequence[Mapping[str, str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(COLUMNS) + " |", "| " + " | ".join("---" for _ in COLUMNS) + " |"]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)
