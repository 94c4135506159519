"""A batch whose lines run as deployment runs on a work pool: two process workers, each taking one run at a time,
both pick lines up; the batch stays one flow run with one record per line."""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from flows.batch import run_batch
from tests.deployments.test_deploy import HOLD, PINS, ROOT, deployed  # noqa: F401  (a fixture)
from tests.prefect_api import api_until
from tests.web_server import WebServer

# runs go to workers in other processes
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.llm_http]


def _worker(name: str, environ: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "hugginggpt", "--name", name, "--limit", "1"],
        cwd=ROOT,
        env=dict(environ, PREFECT_WORKER_QUERY_SECONDS="1"),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def _stop(*procs: subprocess.Popen[Any]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _taken_by(flow_run_id: str) -> str:
    """The worker that submitted the flow run, from the line it logs to the run ("Worker 'name' submitting ...")."""
    by_run = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))

    def takers(logs: list[Any]) -> list[str]:
        return [m.group(1) for log in logs if (m := re.match(r"Worker '([^']+)' submitting flow run", log.message))]

    logs = api_until(
        lambda client: client.read_logs(log_filter=by_run),
        lambda logs: bool(takers(logs)),
        what=f"the worker's submitting line in flow run {flow_run_id}'s logs",
    )
    return takers(logs)[0]


@pytest.mark.slow
def test_lines_run_on_two_process_workers(
    deployed: dict[str, str],  # noqa: F811
    web: WebServer,
    sample_files: dict[str, Path],
    tmp_path: Path,
) -> None:
    photo = sample_files["photo"].read_bytes()
    barrier = web.barrier(["/a.png", "/b.png"], photo, HOLD)  # each line's input waits for the other line's
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        "".join(
            json.dumps(
                {
                    "id": name,
                    "request": f"Classify {name}.png",
                    "inputs": [web.url(f"/{name}.png")],
                    "models": PINS,
                    "plan": [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": f"{name}.png"}}],
                }
            )
            + "\n"
            for name in ("a", "b")
        )
    )
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [_worker(f"batch-worker-{i}", deployed, log) for i, log in enumerate(logs, start=1)]
    try:
        summary = run_batch(str(requests), max_in_flight=2, deployment="hugginggpt-request/request")
    finally:
        _stop(*workers)
    said = [log.read_text(errors="replace") for log in logs]
    assert summary.status == "completed", (summary.records, said)
    assert summary.deployment == "hugginggpt-request/request"
    runs = [r.flow_run_id for r in summary.records]
    assert all(runs) and [r.answer for r in summary.records] == ["Both photos classified."] * 2
    # each worker (one run at a time) took one line: the two ran at once, on two workers; a worker says so in the
    # run's own logs, which the API keeps
    takers = {run: _taken_by(run) for run in runs}
    assert sorted(takers.values()) == ["batch-worker-1", "batch-worker-2"], (takers, said)
    assert [kind for kind, _ in barrier.events] == ["arrived", "arrived", "answered", "answered"]
    for record in summary.records:
        stored = json.loads(Path(record.storage_uri, "summary.json").read_text())
        assert stored["flow_run_id"] == record.flow_run_id and stored["status"] == "completed"
    assert os.environ.get("HUGGINGGPT_STORAGE") and record.storage_uri.startswith(os.environ["HUGGINGGPT_STORAGE"])


def test_a_rerun_waits_for_a_line_still_on_a_worker_instead_of_running_it_again(
    deployed: dict[str, str],  # noqa: F811
    web: WebServer,
    sample_files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch is killed while its line runs on a worker; the rerun finds that run in flight, waits for it to
    end, and records it: the line runs once."""
    import flows.batch_ledger
    from flows.batch_ledger import tagged_runs

    held = web.hold("/c.png", sample_files["photo"].read_bytes())
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        json.dumps(
            {
                "id": "c",
                "request": "Classify c.png",
                "inputs": [web.url("/c.png")],
                "models": PINS,
                "plan": [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "c.png"}}],
            }
        )
        + "\n"
    )
    waiting = threading.Event()
    real_wait = flows.batch_ledger.wait_until_ended

    def wait_seen(run: Any, timeout: float = flows.batch_ledger.IN_FLIGHT_WAIT) -> bool:
        waiting.set()
        return real_wait(run, timeout)

    monkeypatch.setattr(flows.batch_ledger, "wait_until_ended", wait_seen)
    worker = _worker("batch-worker-1", deployed, tmp_path / "worker.log")
    first = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "batch", str(requests), "--deployment", "hugginggpt-request/request"],
        cwd=ROOT,
        env=deployed,
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "first.log").open("wb"),
    )
    try:
        assert held.arrived.wait(180), (tmp_path / "first.log").read_text(errors="replace")[-3000:]
        first.kill()  # the batch is gone; its line's run is on the worker, fetching its input
        first.wait()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            rerun = pool.submit(run_batch, str(requests), deployment="hugginggpt-request/request")
            assert waiting.wait(120), "the rerun did not wait for the run in flight"
            held.release()
            summary = rerun.result(timeout=300)
    finally:
        held.release()
        _stop(first, worker)
    assert summary.status == "completed", summary.records
    [record] = summary.records
    assert record.answer == "Both photos classified."
    key_runs = [runs for runs in tagged_runs(summary.batch_key).values()]
    assert [[r.id for r in runs] for runs in key_runs] == [[record.flow_run_id]]  # one run of the line, ever
    assert web.received("/c.png") == 1
