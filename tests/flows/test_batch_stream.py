"""The streamed batch core (flows/batch_stream.py) without Prefect: a bounded window of lines in memory, resume by
line number, plan sharing inside a window, budgets, and the results file written from the record spool."""

from __future__ import annotations

import concurrent.futures
import gc
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from flows.batch import write_results
from flows.batch_budget import BudgetMeter, Budgets
from flows.batch_stream import SUMMARY_RECORDS, RecordSpool, SharedPlan, run_stream
from tasks.batch_lines import BatchLine, LineResult, ParsedLine, line_record
from tasks.settings import load_settings


def lines(count: int, *, same_request: bool = False, invalid_every: int = 0) -> Iterator[ParsedLine]:
    """``count`` parsed lines, made one at a time (never all held by the test), as the parser makes valid ones."""
    for n in range(1, count + 1):
        if invalid_every and n % invalid_every == 0:
            yield ParsedLine(line=n, error=f"line {n}: expected a JSON object")
            continue
        request = "Caption photo.png" if same_request else f"Summarize document {n}: " + "words " * 20
        inputs = [f"/data/{n}/photo.png"] if same_request else []
        spec = BatchLine.model_construct(request=request, inputs=inputs, id=f"r{n}", models={}, plan=None, meta={})
        yield ParsedLine.model_construct(
            line=n, spec=spec, plan=None, error=None, id=spec.id, request=request, columns={}
        )


class Runner:
    """Runs each line at once in the calling thread (or on a thread pool), recording what it was asked."""

    def __init__(self, pool: concurrent.futures.Executor | None = None, tokens: int = 0, keep: bool = True) -> None:
        self.pool = pool
        self.tokens = tokens
        self.keep = keep  # whether to keep the numbers of the lines started (or only count them)
        self.count = 0
        self.started: list[int] = []
        self.planned_for: list[int] = []
        self.shared_from: dict[int, int] = {}

    def _done(self, value: object) -> concurrent.futures.Future[object]:
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        future.set_result(value)
        return future

    def plan(self, first: ParsedLine) -> SharedPlan:
        self.planned_for.append(first.line)
        return SharedPlan(first, self._done("a plan"))

    def planned(self, plan: SharedPlan) -> tuple[int, int]:
        return 1, 0

    def start(self, p: ParsedLine, shared: SharedPlan | None) -> concurrent.futures.Future[object]:
        self.count += 1
        if self.keep:
            self.started.append(p.line)
        if shared is not None:
            self.shared_from[p.line] = shared.first.line
        assert p.spec is not None
        answer = f"answer {p.line}"
        if self.pool is not None:
            return self.pool.submit(lambda: answer)
        return self._done(answer)

    def finish(self, p: ParsedLine, future: concurrent.futures.Future[object]) -> LineResult:
        assert p.spec is not None
        return line_record(p.line, p.spec, status="completed", answer=str(future.result()), llm_tokens=self.tokens)


def _run(count: int, spool: RecordSpool, **kwargs: object) -> tuple[object, Runner]:
    runner = Runner(keep=False)
    tally = run_stream(
        lines(count, invalid_every=97),
        runner,
        max_in_flight=8,
        meter=BudgetMeter(None),
        on_record=lambda pos, p, record, ran: spool.add(pos, record, None),
        **kwargs,  # type: ignore[arg-type]
    )
    return tally, runner


#: lines of the small and the large batch, and the read-ahead window (small, so that the test takes seconds under
#: tracemalloc; ``python -m bench.batch_memory`` measures the default window over 10,000 to 1,000,000 lines)
SMALL, LARGE, WINDOW = 2_000, 20_000, 200


def test_the_core_holds_a_window_not_the_batch(tmp_path: Path) -> None:
    """The peak traced memory of streaming ten times the lines is about the same: the lines in memory are a window's
    (holding every line, or every record, would take ten times as much for ten times the lines)."""
    peaks = {}
    for count in (SMALL, LARGE):
        gc.collect()
        tracemalloc.start()
        try:
            with RecordSpool() as spool:
                tally, runner = _run(count, spool, window=WINDOW)
                assert spool.count == count
            peaks[count] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert (tally.lines, tally.invalid) == (count, count // 97)  # type: ignore[attr-defined]
        assert tally.completed == count - count // 97 and runner.count == tally.completed  # type: ignore[attr-defined]
    per_line = (peaks[LARGE] - peaks[SMALL]) / (LARGE - SMALL)
    print(f"peak traced memory of the core: {peaks[SMALL] / 1e6:.2f} MB for {SMALL} lines, {peaks[LARGE] / 1e6:.2f} MB")
    print(f"for {LARGE}: {per_line:.0f} bytes more a line (the spool's offset: 8)")
    # a line held whole is over 2,000 bytes (its request, its record); the window's lines cost the same at both sizes
    assert per_line < 200 and peaks[LARGE] < 3 * peaks[SMALL], peaks


def test_lines_completed_earlier_are_skipped_by_line_number() -> None:
    def run_with(done: set[int]) -> tuple[list[int], list[LineResult]]:
        runner = Runner()
        records: list[LineResult] = []

        def earlier(p: ParsedLine) -> LineResult | None:
            if p.line not in done:
                return None
            assert p.spec is not None
            return line_record(p.line, p.spec, status="completed", answer="from before")

        tally = run_stream(
            lines(30),
            runner,
            max_in_flight=3,
            meter=BudgetMeter(None),
            on_record=lambda pos, p, record, ran: records.append(record),
            earlier=earlier,
            window=7,
        )
        assert tally.resumed == len(done) and tally.completed == 30
        return runner.started, records

    started_a, records_a = run_with({2, 3, 11, 29})
    started_b, records_b = run_with(set(range(1, 16)))
    assert sorted(started_a) == [n for n in range(1, 31) if n not in {2, 3, 11, 29}]
    assert sorted(started_b) == list(range(16, 31))
    assert {r.line for r in records_b if r.answer == "from before"} == set(range(1, 16))
    assert {r.line for r in records_a if r.answer == "from before"} == {2, 3, 11, 29}


def test_a_repeated_request_is_planned_once_per_window() -> None:
    def run_with(window: int) -> Runner:
        runner = Runner()
        run_stream(
            lines(12, same_request=True),
            runner,
            max_in_flight=2,
            meter=BudgetMeter(None),
            on_record=lambda pos, p, record, ran: None,
            window=window,
        )
        return runner

    whole = run_with(100)
    assert whole.planned_for == [1]  # one window: the twelve lines share one plan, made for line 1
    assert whole.shared_from == dict.fromkeys(range(1, 13), 1)
    split = run_with(5)
    assert split.planned_for == [1, 6, 11]  # documented: a repeat in a later window is planned again
    assert split.shared_from == {n: (n - 1) // 5 * 5 + 1 for n in range(1, 13)}


def test_a_spent_budget_records_every_later_line_not_started() -> None:
    records: dict[int, LineResult] = {}
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        runner = Runner(pool, tokens=100)
        tally = run_stream(
            lines(50, invalid_every=10),
            runner,
            max_in_flight=2,
            meter=BudgetMeter(Budgets(max_llm_tokens=500)),
            on_record=lambda pos, p, record, ran: records.__setitem__(record.line, record),
            window=8,
        )
    assert sorted(records) == list(range(1, 51))
    ran = set(runner.started)
    assert 5 <= len(ran) <= 6  # the 5th record spends the budget; one more may already be in flight
    assert {n for n, r in records.items() if r.status == "completed"} == ran
    assert {n for n, r in records.items() if r.status == "invalid"} == {10, 20, 30, 40, 50}
    not_started = {n for n, r in records.items() if r.status == "not started"}
    assert not_started == set(range(1, 51)) - ran - {10, 20, 30, 40, 50}
    assert all("LLM token budget" in (records[n].error or "") for n in not_started)
    assert tally.not_started == len(not_started) and tally.stopped is not None


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_the_results_file_has_every_line_when_the_summary_keeps_the_first(
    tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line is in the results file, in line order, though the summary keeps the first lines only; moving the
    finished file into place fails once (a transient storage error) and is retried under the storage settings."""
    from fsspec.implementations.local import LocalFileSystem

    real_mv = LocalFileSystem.mv
    moves: list[str] = []

    def mv(self: LocalFileSystem, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        moves.append(str(path2))
        if len(moves) == 1:
            raise OSError(5, "injected transient I/O error")
        return real_mv(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", mv)
    total = SUMMARY_RECORDS + 1500
    with RecordSpool() as spool:
        order = list(range(total))
        order = order[1::2] + order[::2]  # lines finish out of order
        for pos in order:
            n = pos + 1
            record = line_record(n, BatchLine(request=f"Summarize {n}"), status="completed", answer=f"a{n}")
            spool.add(pos, record.model_copy(update={"files": {f"file:t#{n % 3}.image": f"/o/{n}.png"}}), [])
        kept = spool.first()
        assert [r.line for r in kept] == list(range(1, SUMMARY_RECORDS + 1))
        settings = load_settings(storage=str(tmp_path / "store"), storage_retries=1, storage_retry_wait=0.0)
        results = str(tmp_path / f"results.{suffix}")
        uri = write_results(spool, "requests.jsonl", settings, "run-1", results)
    assert moves == [results, results], "the failed move into place was tried once more"
    if suffix == "parquet":
        table = pq.read_table(uri).to_pylist()
        assert [row["line"] for row in table] == list(range(1, total + 1))
        assert [row["answer"] for row in table[-2:]] == [f"a{total - 1}", f"a{total}"]
        assert {"file:t#0.image", "file:t#1.image", "file:t#2.image"} <= set(table[0])
    else:
        rows = [json.loads(line) for line in Path(uri).read_text().splitlines()]
        assert [row["line"] for row in rows] == list(range(1, total + 1))
        assert rows[-1]["answer"] == f"a{total}"


def test_the_ledger_answers_by_line_number_from_checked_parts(tmp_path: Path, monkeypatch) -> None:
    """``LineParts.earlier``: a line counts as done when its part names a run whose own summary says that request
    completed; a part naming a failed run, a part of another request, and a line without a part run again."""
    import logging
    from array import array

    import flows.batch_ledger
    from flows.batch_ledger import LineParts
    from tasks.schemas import RunSummary
    from tasks.storage import ArtifactStore

    monkeypatch.setattr(flows.batch_ledger, "tagged_lines", lambda key: array("q"))  # no Prefect API: no runs
    store = ArtifactStore(str(tmp_path / "store"), "batch-run")
    parts = LineParts(store, "k1", logging.getLogger("test"))

    def parsed(n: int, request: str | None = None) -> ParsedLine:
        spec = BatchLine(request=request or f"Summarize {n}", id=f"r{n}")
        return ParsedLine(line=n, spec=spec, id=spec.id, request=spec.request)

    for n, status in ((2, "completed"), (5, "completed"), (7, "failed"), (9, "completed")):
        run = f"run-{n}"
        summary = RunSummary(
            request=f"Summarize {n}",
            status=status,
            answer=f"done {n}",
            flow_run_id=run,
            storage_uri=store.for_run(run).run_uri,
        )
        store.for_run(run).put_json("summary.json", summary.model_dump(mode="json"))
        record = line_record(n, parsed(n).spec, status="completed", flow_run_id=run, answer="edited")  # type: ignore[arg-type]
        parts.record(record)
    parts.load()
    assert parts.known == 4
    found = {n: parts.earlier(parsed(n)) for n in range(1, 11)}
    assert {n for n, r in found.items() if r is not None} == {2, 5, 9}
    assert found[2].answer == "done 2" and found[2].flow_run_id == "run-2"  # rebuilt from the run, not the part
    assert parts.earlier(parsed(9, "Summarize something else")) is None  # the part is of another request
