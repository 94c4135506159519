"""A batch keeps each finished line's record as it finishes: a real ``hugginggpt batch`` interrupted with SIGINT
and run again on the same file and storage skips the lines that completed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import flow

from flows import batch
from flows.batch import BatchLine, LineResult, run_line
from tests.llm_server import plan_json

pytestmark = pytest.mark.usefixtures("prefect_server")

LINES = 6


def _command() -> list[str]:
    script = Path(sys.executable).parent / "hugginggpt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def _requests(tmp_path: Path) -> Path:
    path = tmp_path / "requests.jsonl"
    lines = []
    for n in range(LINES):
        text = f"review number {n}: lovely"
        plan = json.loads(plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": text}}))
        lines.append(json.dumps({"id": f"r{n}", "request": f"Rate: {text}", "plan": plan["tasks"]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _wait_for(condition: Any, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the batch ended before the condition held: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(0.05)


def test_an_interrupted_batch_resumes_where_it_stopped(env: Path, llm, tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_URL

    requests = _requests(tmp_path)
    llm.set(respond="ok")
    llm.latency = 1.5  # every answer takes a while, so the batch is still running when interrupted
    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen(
        [*_command(), "batch", str(requests), "--max-in-flight", "1"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: any(env.glob("batches/lines-*/*.json")), proc, timeout=240)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, "the batch was interrupted"
    kept = {json.loads(p.read_text())["line"]: json.loads(p.read_text()) for p in env.glob("batches/lines-*/*.json")}
    assert 1 <= len(kept) < LINES, f"{len(kept)} line(s) kept"
    assert all(r["status"] == "completed" for r in kept.values())
    assert not list(env.glob("batches/*/results.jsonl")), "the interrupted batch wrote no results file"

    llm.latency = 0.0
    answered = llm.calls["respond"]
    second = subprocess.run(
        [*_command(), "batch", str(requests), "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout)
    assert summary["completed"] == LINES and summary["resumed"] == len(kept)
    assert llm.calls["respond"] - answered == LINES - len(kept), "a completed line ran again"
    records = [json.loads(x) for x in Path(summary["results_uri"]).read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, LINES + 1))
    for record in records:
        if record["line"] in kept:
            assert record["flow_run_id"] == kept[record["line"]]["flow_run_id"]


def test_a_tampered_line_record_is_run_again(env: Path, llm, tmp_path: Path) -> None:
    requests = _requests(tmp_path)
    llm.set(respond="ok")
    first = batch.run_batch(str(requests), max_in_flight=2)
    assert first.completed == LINES and first.resumed == 0
    parts = sorted(env.glob(f"batches/lines-{first.batch_key}/*.json"))
    assert len(parts) == LINES
    parts[0].write_text("{" * 5000)  # damaged
    other = json.loads(parts[1].read_text())
    other["request"] = "Rate: something else"  # does not match its line
    parts[1].write_text(json.dumps(other))
    third = json.loads(parts[2].read_text())
    third["storage_uri"] = "/etc"  # outside the store
    parts[2].write_text(json.dumps(third))

    answered = llm.calls["respond"]
    second = batch.run_batch(str(requests), max_in_flight=2)
    assert second.completed == LINES and second.resumed == LINES - 3
    assert llm.calls["respond"] - answered == 3


def test_a_child_run_refused_with_503_is_started_again(monkeypatch) -> None:
    monkeypatch.setattr(batch, "CHILD_START_WAIT", 0.01)
    calls: list[int] = []

    class Child:
        def with_options(self, **_: Any) -> Child:
            return self

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) < 3:
                request = httpx.Request("POST", "http://127.0.0.1/api/flow_runs/")
                raise httpx.HTTPStatusError("503", request=request, response=httpx.Response(503, request=request))
            from tasks.schemas import RunSummary

            return RunSummary(request="Rate", answer="ok", flow_run_id="child-1")

    monkeypatch.setattr(batch, "run_request", Child())

    @flow
    def parent() -> Any:
        return run_line.fn(1, BatchLine(request="Rate"), None, "llm")

    record = parent()
    assert isinstance(record, LineResult) and record.status == "completed" and len(calls) == 3
