"""The benchmarks, at tiny sizes: the structure of their output and relative facts only, never absolute times."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import dag, llm_calls, report, reuse
from bench.__main__ import SECTIONS, build_document, default_out, parse_args
from bench.classifiers import linked_copies
from bench.harness import (
    Bench,
    Sampler,
    catalog_record,
    counting_llm,
    reset_local_backends,
    run_flow,
    sleeping_experts,
    write_catalog,
)
from bench.throughput import plan_for, request_text, write_requests

pytestmark = pytest.mark.usefixtures("prefect_server")

TINY_BERT: dict[str, int] = {
    "vocab_size": 400,
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory, prefect_server: None) -> Iterator[Bench]:
    from flows.prefect_setup import prefect_run_settings

    llm = counting_llm().start()
    mp = pytest.MonkeyPatch()
    for name, value in {
        "OPENAI_BASE_URL": llm.base_url,
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "HUGGINGGPT_LLM_MODEL": "scripted",
        "HUGGINGGPT_LLM_MAX_RETRIES": "0",
        "HUGGINGGPT_LLM_TIMEOUT": "10",
    }.items():
        mp.setenv(name, value)
    mp.delenv("HUGGINGGPT_CATALOG", raising=False)
    b = Bench(root=tmp_path_factory.mktemp("bench"), llm=llm, quick=True, postgres=False)
    try:
        with prefect_run_settings(), b.stack:
            yield b
    finally:
        reset_local_backends()
        mp.undo()
        llm.stop()


@pytest.fixture(scope="module")
def results(bench: Bench) -> dict[str, Any]:
    """The dag (four independent 0.2 s nodes), llm (plans of 1 and 5 nodes) and reuse benchmarks, once, at tiny
    sizes."""
    return {
        "dag": dag.run(bench, seconds=0.2, shapes=("independent",), empty_runs=1, pairs=0),
        "llm": llm_calls.run(bench, sizes=(1, 5)),
        "reuse": reuse.run(bench, size=TINY_BERT),
    }


def test_shapes_and_critical_paths() -> None:
    graph = dag.layered(4, 5, "x")
    assert graph.nodes == 20 and len(graph.plan) == 20
    assert dag.critical_path(graph.plan, 1.0) == 4.0
    assert dag.critical_path(dag.chain(50, "x").plan, 0.5) == 25.0
    assert dag.critical_path(dag.independent(10, "x").plan, 1.0) == 1.0
    assert all(len(n["dep"]) == 2 for n in graph.plan[5:])


def test_independent_nodes_run_in_parallel(results: dict[str, Any]) -> None:
    (row,) = results["dag"]["shapes"]
    assert row["nodes"] == 4 and row["independent_nodes_overlapped"]
    # four 0.2 s nodes at once beat the same nodes one after another
    assert row["makespan_seconds"] < row["sequential_seconds"]
    assert row["makespan_seconds"] >= row["critical_path_seconds"]
    overhead = results["dag"]["fixed_overhead"]
    assert overhead["inside_stages_seconds"] < overhead["wall_seconds"]


def test_three_llm_calls_whatever_the_plan(results: dict[str, Any]) -> None:
    plans = {r["plan_nodes"]: r for r in results["llm"]["plans"]}
    assert set(plans) == {1, 5}
    five = plans[5]
    assert five["calls"] == 3 and five["calls_by_stage"] == {"plan": 1, "select": 1, "respond": 1}
    assert five["client_counted_calls"] == 3
    assert five["nodes_with_several_candidates"] == 5 and five["chosen_by_llm"] == 5
    assert five["hugginggpt_calls"] == five["hugginggpt_calls_measured"] == 7
    assert five["hugginggpt_prompt_tokens"] > five["prompt_tokens"]
    assert plans[1]["calls"] == plans[1]["hugginggpt_calls_measured"] == 3
    assert results["llm"]["target"]["met"]


def test_second_request_reuses_the_loaded_model(results: dict[str, Any]) -> None:
    first, second = results["reuse"]["first"], results["reuse"]["second"]
    assert first["loads"] == 1 and second["loads"] == 0 and second["hits"] >= 1
    assert second["load_seconds"] * 10 <= first["load_seconds"]
    assert results["reuse"]["target"]["met"]


def test_table_and_json_document(results: dict[str, Any], tmp_path: Path) -> None:
    rows = report.table_rows(results)
    assert {r["benchmark"].split(":")[0] for r in rows} == {"dag", "llm", "reuse"}
    assert all(set(r) == set(report.COLUMNS) for r in rows)
    table = report.markdown_table(rows)
    assert table.splitlines()[0] == "| " + " | ".join(report.COLUMNS) + " |"
    assert len(table.splitlines()) == len(rows) + 2

    info = report.machine()
    document = build_document(info, results, rows)
    assert set(document) == {"machine", "results", "table"}
    assert document["machine"]["cpu_count"] >= 1
    assert set(document["machine"]["versions"]) >= {"prefect", "transformers", "torch"}
    out = tmp_path / "figures.json"
    out.write_text(json.dumps(document, default=str), encoding="utf-8")
    assert json.loads(out.read_text(encoding="utf-8"))["table"] == rows
    assert default_out(info, quick=True).name.endswith("-quick.json")


def test_failed_benchmark_is_a_row() -> None:
    rows = report.table_rows({"batch": {"error": "RuntimeError: no"}})
    assert rows == [
        {"benchmark": "batch", "figure": "error", "value": "RuntimeError: no", "baseline (same run)": "", "target": ""}
    ]


def test_batch_rows_compare_each_mode_with_one_by_one() -> None:
    def mode(name: str, per_minute: float, speedup: float) -> dict[str, Any]:
        return {"mode": name, "requests_per_minute": per_minute, "seconds": 3000 / per_minute, "speedup": speedup}

    modes = [mode("one by one (run_request)", 100.0, 1.0), mode("batch flow, 4 in flight", 150.0, 1.5)]
    slow = [mode("one by one (run_request)", 40.0, 1.0), mode("batch flow, 4 in flight", 120.0, 3.0)]
    rows = report.batch_rows(
        {
            "requests": 50,
            "models": 6,
            "max_models": 2,
            "apis": [{"api": "sqlite", "modes": modes}],
            "with_llm_latency": {"api": "sqlite", "llm_latency_seconds": 0.5, "modes": slow},
        }
    )
    assert [r["benchmark"].split(", ")[-1] for r in rows] == ["Prefect API on sqlite", "0.5 s per LLM answer"]
    assert rows[0]["value"].endswith("1.50x") and rows[1]["value"].endswith("3.00x")
    assert rows[1]["baseline (same run)"].startswith("one by one (run_request): 40/min")


def test_in_flight_rows_are_set_against_the_llm_bound() -> None:
    from bench.batch_scaling import bound_per_minute

    assert bound_per_minute(4) == 160.0 and bound_per_minute(8) == 320.0  # three 0.5 s round trips per line

    def run(in_flight: int, per_minute: float) -> dict[str, Any]:
        bound = bound_per_minute(in_flight)
        return {
            "in_flight": in_flight,
            "lines": 6 * in_flight,
            "lines_per_minute": per_minute,
            "bound_per_minute": bound,
            "of_bound": per_minute / bound,
            "cpu_seconds_per_line": 0.25,
            "api_cpu_seconds_per_line": 0.5,
        }

    scaling = {"api": "postgresql", "llm_latency_seconds": 0.5, "llm_round_trips_per_line": 3}
    scaling["runs"] = [run(4, 150.0), run(8, 200.0)]
    rows = report.batch_rows({"requests": 50, "models": 6, "max_models": 2, "apis": [], "in_flight_scaling": scaling})
    assert [r["value"].split(";")[0] for r in rows] == ["150/min (94 %)", "200/min (62 %)"]
    assert rows[0]["target"] == "" and rows[1]["target"] == ">= 80 % of the bound: MISSED"
    assert rows[1]["baseline (same run)"] == "bound 320/min" and "0.25 s, 0.50 s" in rows[1]["value"]


def test_arguments() -> None:
    assert parse_args([]).sections == list(SECTIONS)
    assert parse_args(["--only", "llm,dag", "--quick"]).sections == ["dag", "llm"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "gpu"])


def test_sleeping_expert_replaces_the_local_backend_only_within_its_block(bench: Bench) -> None:
    from tasks.services import services_for
    from tasks.settings import Settings

    real = services_for(Settings()).local_backend
    with sleeping_experts(0.0) as backend:
        assert services_for(Settings()).local_backend is backend
    assert services_for(Settings()).local_backend is real


def test_batch_requests_and_memory_helpers(tmp_path: Path) -> None:
    from tasks.batch_lines import parse_requests

    path = write_requests(tmp_path / "requests.jsonl", 7, ["m/a", "m/b", "m/c"])
    lines = parse_requests(path.read_text(encoding="utf-8"))
    assert [p.valid for p in lines] == [True] * 7
    assert lines[4].spec is not None and lines[4].spec.models == {"text-classification": "m/b"}
    assert lines[6].plan is not None and lines[6].plan[0].args["text"].startswith("Review #6:")
    assert "Review #6" in request_text(6) and plan_for(6)[0]["dep"] == [-1]

    source = tmp_path / "source"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"x" * 1024)
    copies = linked_copies(source, tmp_path / "copies", 3)
    assert [(c / "weights.bin").read_bytes() for c in copies] == [b"x" * 1024] * 3

    held = [0]
    with Sampler(lambda: held[0], every=0.01) as sampler:
        held[0] = 2
    assert sampler.peak_probe == 2 and sampler.peak_rss > 0


def test_flow_runs_the_sleeping_plan(bench: Bench) -> None:
    catalog = write_catalog(
        bench.root / "chain-catalog.jsonl", [catalog_record(dag.MODEL_ID, dag.TASK, bench.fresh_dir("m"))]
    )
    with sleeping_experts(0.0) as backend:
        result = run_flow(
            "bench: chain",
            storage=bench.storage("t"),
            catalog=catalog,
            plan=dag.chain(3, "t").plan,
            models={dag.TASK: dag.MODEL_ID},
        )
    assert result.ok and len(backend.spans) == 3
    assert [r.outputs["text"].startswith("text-classification of") for r in result.summary.results] == [True] * 3
