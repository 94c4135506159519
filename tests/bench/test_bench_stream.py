"""The streaming and replanning benchmark at tiny sizes: the structure of its output and relative facts only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench import streaming
from bench.harness import Bench, counting_llm, reset_local_backends

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def bench(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Bench]:
    from flows.prefect_setup import prefect_run_settings

    llm = counting_llm().start()
    monkeypatch.setenv("OPENAI_BASE_URL", llm.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("HUGGINGGPT_LLM_MODEL", "scripted")
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "0")
    monkeypatch.delenv("HUGGINGGPT_CATALOG", raising=False)
    b = Bench(root=tmp_path_factory.mktemp("bench-stream"), llm=llm, quick=True, postgres=False)
    try:
        with prefect_run_settings(), b.stack:
            yield b
    finally:
        reset_local_backends()
        llm.stop()


def test_streamed_and_replanned_figures(bench: Bench) -> None:
    result = streaming.run(bench, plan_seconds=0.5, node_seconds=0.1, repeats=1, shapes=(streaming.chain,), requests=1)
    (row,) = result["shapes"]
    assert row["shape"] == "4-node chain" and row["nodes"] == 4
    assert row["nodes_started_while_streaming"] is True
    assert row["span_streamed"] > 0 and row["span_not_streamed"] > 0
    assert row["first_node_start_streamed"] < row["span_streamed"]
    assert result["target"]["ratio"] == row["ratio"] and result["target"]["ratio_target"] == 0.75
    replan = result["replan"]
    assert replan["completed_share_with_one_replan"] == 1.0 and replan["completed_share_without_replan"] == 0.0
    assert replan["replan_calls_per_request"] == 1
    assert replan["llm_calls_per_request_with_replan"] == replan["llm_calls_per_request_without"] + 1
    rows = streaming.rows(result)
    assert [r["figure"] for r in rows][:2] == [
        "planning start to last node end, streamed (ratio to not streamed)",
        "planning start to first node start, streamed",
    ]
    assert "replan" in rows[-1]["benchmark"] and rows[-1]["value"].startswith("100%")
