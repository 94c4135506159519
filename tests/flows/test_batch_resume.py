"""A batch keeps each finished line's record as it finishes: a real ``hugginggpt batch`` interrupted with SIGINT
and run again on the same file and storage skips the lines that completed."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
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


def _requests(tmp_path: Path, count: int = LINES, batch: str = "") -> Path:
    """``count`` lines with explicit plans; ``batch`` in each request tells this batch's LLM calls from any other's."""
    path = tmp_path / "requests.jsonl"
    lines = []
    for n in range(count):
        text = f"review number {n}{batch}: lovely"
        plan = json.loads(plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": text}}))
        lines.append(json.dumps({"id": f"r{n}", "request": f"Rate: {text}", "plan": plan["tasks"]}))
    path.write_text("\n".join(lines) + "\n")
    return path


def _sigint_as_by_default() -> None:
    """In the child, before it starts: SIGINT neither ignored nor blocked, whatever the test process inherited or
    set (a pytest worker, or a library run in it by an earlier test), as in a shell where a user presses Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_masks(pid: int) -> str:
    """The ignored and blocked signal masks of process ``pid``, for a failure's message."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return "(no /proc status)"
    return " ".join(line for line in status.splitlines() if line.startswith(("SigIgn", "SigBlk", "SigCgt")))


def _wait_for(condition: Any, proc: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the batch ended before the condition held: {proc.communicate()[1][-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:g} s")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.llm_http  # the batch runs in another process
def test_an_interrupted_batch_resumes_where_it_stopped(env: Path, llm, tmp_path: Path) -> None:
    """The LLM holds the answer of the second line until the batch has been sent SIGINT: the interruption lands
    while that line runs, after the first line finished, whatever the machine's speed."""
    import threading

    from prefect.settings import PREFECT_API_URL

    batch_tag = f" of batch {uuid.uuid4().hex[:8]}"
    requests = _requests(tmp_path, batch=batch_tag)
    second_line_asked = threading.Event()
    interrupted = threading.Event()

    def ours(body: dict[str, Any]) -> bool:
        return batch_tag in json.dumps(body)

    def respond(body: dict[str, Any]) -> str:
        # the second line's answer, told by its request (a call from any other process on this server is not it)
        if f"review number 1{batch_tag}" in json.dumps(body):
            second_line_asked.set()
            interrupted.wait(60)
        return "ok"

    llm.set(respond=respond)
    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    proc = subprocess.Popen(
        [*_command(), "batch", str(requests), "--max-in-flight", "1"],
        env=environment,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_by_default,
    )
    masks = ""
    try:
        _wait_for(second_line_asked.is_set, proc, timeout=240)
        _wait_for(lambda: any(env.glob("batches/lines-*/*.json")), proc, timeout=60)  # the first line's record
        masks = _signal_masks(proc.pid)
        proc.send_signal(signal.SIGINT)
        interrupted.set()
        proc.wait(timeout=60)
    finally:
        interrupted.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _, err = proc.communicate()
    assert proc.returncode != 0, f"the batch was not interrupted ({masks}):\n{err[-3000:]}"
    kept = {json.loads(p.read_text())["line"]: json.loads(p.read_text()) for p in env.glob("batches/lines-*/*.json")}
    assert 1 <= len(kept) < LINES, f"{len(kept)} line(s) kept"
    assert all(r["status"] == "completed" for r in kept.values())
    assert not list(env.glob("batches/*/results.jsonl")), "the interrupted batch wrote no results file"

    llm.set(respond="ok")
    answered = sum(ours(body) for body in llm.stage_requests("respond"))
    second = subprocess.run(
        [*_command(), "batch", str(requests), "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads(second.stdout)
    # the line that was running when the batch was interrupted may have completed before the process ended: its run
    # is found by its tags and counted as done, not run again
    assert summary["completed"] == LINES and len(kept) <= summary["resumed"] <= len(kept) + 1
    asked = sum(ours(body) for body in llm.stage_requests("respond")) - answered
    assert asked == LINES - summary["resumed"], "a completed line ran again"
    records = [json.loads(x) for x in Path(summary["results_uri"]).read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, LINES + 1))
    for record in records:
        if record["line"] in kept:
            assert record["flow_run_id"] == kept[record["line"]]["flow_run_id"]


def test_a_tampered_line_record_is_checked_against_its_run(env: Path, llm, tmp_path: Path) -> None:
    """A line record is taken only as far as the run it names confirms it; damaged or forged records are replaced
    by what the line's own run says, and a line whose run cannot be confirmed runs again."""
    requests = _requests(tmp_path)
    llm.set(respond="ok")
    first = batch.run_batch(str(requests), max_in_flight=2)
    assert first.completed == LINES and first.resumed == 0
    runs = {r.line: r.flow_run_id for r in first.records}
    parts = sorted(env.glob(f"batches/lines-{first.batch_key}/*.json"))
    assert len(parts) == LINES
    parts[0].write_text("{" * 5000)  # damaged
    forged = json.loads(parts[1].read_text())
    forged.update(answer="FORGED answer", flow_run_id=str(uuid.uuid4()), storage_uri=None)  # a run that never was
    parts[1].write_text(json.dumps(forged))
    borrowed = json.loads(parts[2].read_text())
    borrowed.update(answer="FORGED too", flow_run_id=runs[4])  # another line's run
    parts[2].write_text(json.dumps(borrowed))
    lost = json.loads(parts[3].read_text())
    (env / lost["flow_run_id"] / "summary.json").unlink()  # its run cannot confirm it any more
    answered = llm.calls["respond"]

    second = batch.run_batch(str(requests), max_in_flight=2)
    assert second.completed == LINES and second.resumed == LINES - 1
    assert llm.calls["respond"] - answered == 1, "only the line whose run cannot be confirmed ran again"
    by_line = {r.line: r for r in second.records}
    for line in (1, 2, 3, 5, 6):  # their own runs, found by their tags where the record did not say
        assert by_line[line].flow_run_id == runs[line] and by_line[line].answer == "ok"
    assert by_line[4].flow_run_id != runs[4]
    assert "FORGED" not in Path(second.results_uri).read_text()


def test_a_second_batch_of_the_same_file_is_refused(env: Path, llm, tmp_path: Path, capsys) -> None:
    from flows.batch_ledger import BatchLock
    from flows.cli import main
    from tasks.settings import load_settings
    from tasks.storage import store_for
    from tasks.tables import ColumnMap

    requests = _requests(tmp_path)
    llm.set(respond="ok")
    key = batch.batch_key_of(str(requests), load_settings(), ColumnMap())
    first = BatchLock(store_for(load_settings(), "x"), f"batches/lines-{key}", "first-batch-run", str(requests))
    with first.held():  # another batch of the same file, alive in this process
        assert main(["batch", str(requests)]) == 2
        err = capsys.readouterr().err
        assert "already running: flow run first-batch-run" in err and "wait for that one to end" in err
        assert llm.calls["respond"] == 0
        other = tmp_path / "other.jsonl"  # another file is not held
        other.write_text(requests.read_text().splitlines()[0] + "\n")
        assert main(["batch", str(other)]) == 0
    # a batch that was killed (its process is gone) does not hold the file
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    first.me.pid = int(gone.stdout)
    first._write()
    assert main(["batch", str(requests)]) == 0


@pytest.mark.slow
@pytest.mark.llm_http  # the batch runs in another process
def test_a_batch_killed_three_times_runs_each_line_once(env: Path, llm, tmp_path: Path) -> None:
    """SIGKILL at three moments chosen at random (after a random number of lines finished), a rerun each time:
    in the end one record per line, and no line completed by two runs."""
    from prefect.settings import PREFECT_API_URL

    rng = random.Random()
    lines = 10
    path = tmp_path / "requests.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"k{n}",
                    "request": f"Rate: review {n}",
                    "plan": [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": f"review {n}"}}],
                }
            )
            + "\n"
            for n in range(lines)
        )
    )
    llm.set(respond="ok")
    llm.latency = 0.3
    environment = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}

    def completed_runs() -> int:
        return sum(json.loads(p.read_text())["status"] == "completed" for p in env.glob("*/summary.json"))

    for _ in range(3):
        target = min(lines, completed_runs() + rng.randint(1, 3))
        proc = subprocess.Popen(
            [*_command(), "batch", str(path), "--max-in-flight", "3"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _wait_for(lambda target=target: completed_runs() >= target, proc, timeout=240)
            time.sleep(rng.uniform(0, 0.3))  # anywhere in the next line's life: start, LLM call, record
        finally:
            proc.kill()
            proc.wait()
    llm.latency = 0.0
    final = subprocess.run(
        [*_command(), "batch", str(path), "--json"], env=environment, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr[-3000:]
    summary = json.loads(final.stdout)
    records = [json.loads(x) for x in Path(summary["results_uri"]).read_text().splitlines()]
    assert [r["line"] for r in records] == list(range(1, lines + 1))
    assert all(r["status"] == "completed" for r in records)
    runs = [json.loads(p.read_text()) for p in env.glob("*/summary.json")]
    completed = [run for run in runs if run["status"] == "completed"]
    done = Counter(run["request"] for run in completed)
    assert done == Counter(f"Rate: review {n}" for n in range(lines)), "a line completed twice, or never"
    assert {r["flow_run_id"] for r in records} == {run["flow_run_id"] for run in completed}


def test_a_rerun_runs_the_failed_lines_again(env: Path, llm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second line's model fails in the first attempt: a rerun of the same file runs that line again, and only
    it; its new record replaces the failed one."""
    from tasks.experts.base import ExpertError
    from tasks.experts.local import LocalBackend

    requests = _requests(tmp_path, 3)
    llm.set(respond="ok")
    real_run = LocalBackend.run
    calls: dict[str, int] = {}
    broken = {"review number 1: lovely"}

    def run(self: LocalBackend, task: str, model: Any, inputs: dict[str, Any]) -> Any:
        text = str(inputs.get("text"))
        calls[text] = calls.get(text, 0) + 1
        if text in broken:
            raise ExpertError(f"model {model.id!r} refused this text")
        return real_run(self, task, model, inputs)

    monkeypatch.setattr(LocalBackend, "run", run)
    first = batch.run_batch(str(requests), max_in_flight=1)
    assert (first.completed, first.failed, first.resumed) == (2, 1, 0)
    assert [r.status for r in first.records] == ["completed", "failed", "completed"]

    broken.clear()
    before = dict(calls)
    second = batch.run_batch(str(requests), max_in_flight=1)
    assert (second.completed, second.failed, second.resumed) == (3, 0, 2)
    assert {t for t in calls if calls[t] > before.get(t, 0)} == {"review number 1: lovely"}  # only the failed line
    assert second.records[1].flow_run_id != first.records[1].flow_run_id
    assert [r.flow_run_id for r in second.records[::2]] == [r.flow_run_id for r in first.records[::2]]


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
