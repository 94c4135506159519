"""A batch's lines streamed through a bounded window: the scheduling core of :mod:`flows.batch`, without Prefect.

A table of a million lines is never held whole. :func:`run_stream` reads the parsed lines a window at a time
(:func:`read_ahead`: :data:`READ_AHEAD` lines, or a few times the lines in flight when that is more), and holds at
any moment that window's lines not yet started, the lines in flight (at most ``max_in_flight``) and the planning
runs of the window's shared requests. Each finished line's record leaves the core at once, through ``on_record``:
the batch keeps it in storage for a resume and in a :class:`RecordSpool` (a local file, read back in line order to
write the results file at the end), and counts it in a :class:`StreamTally`.

Plan sharing (:mod:`tasks.batch_plans`) works inside a window: the lines of one window that share a request text,
once their inputs are abstracted, are planned once. Two identical requests further apart than a window may be
planned twice, once for each window holding them; a window of :data:`READ_AHEAD` lines keeps the shared requests of
any batch whose repeats lie near each other (most tables: sorted or generated in order) planned once.

A line an earlier attempt completed (``earlier(line)`` gives its record; :class:`flows.batch_ledger.LineParts`
answers by line number) is not run again. Budgets (:class:`flows.batch_budget.BudgetMeter`) are checked before each
line starts: once spent, every line not started is recorded ``not started`` with the reason, window after window.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import tempfile
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from flows.batch_budget import BudgetMeter
from tasks.batch_lines import LineResult, ParsedLine, line_record
from tasks.batch_plans import plan_groups

#: lines read ahead at a time: the window in which lines sharing a request are planned once
READ_AHEAD = 2000
#: the read-ahead window is at least this many times the lines in flight
READ_AHEAD_PER_LINE_IN_FLIGHT = 4
#: records kept in a batch's summary (and its table artifact): the first lines by number; the results file has all
SUMMARY_RECORDS = 1000


def read_ahead(max_in_flight: int) -> int:
    """How many lines a batch reads ahead at a time."""
    return max(READ_AHEAD, READ_AHEAD_PER_LINE_IN_FLIGHT * max_in_flight)


@dataclass
class SharedPlan:
    """The plan made once for the lines of a window that share a request: its first line, the planning run as a
    future the core waits on, and whatever else the runner keeps of it (``handle``)."""

    first: ParsedLine
    future: concurrent.futures.Future[Any]
    handle: Any = None


class LineRunner(Protocol):
    """How the core starts work: the batch flow's Prefect tasks, or a plain function in a test."""

    def plan(self, first: ParsedLine) -> SharedPlan:
        """Start planning the request of ``first`` (shared by other lines of its window)."""
        ...

    def planned(self, plan: SharedPlan) -> tuple[int, int]:
        """The LLM calls and tokens a finished planning run used."""
        ...

    def start(self, line: ParsedLine, shared: SharedPlan | None) -> concurrent.futures.Future[Any]:
        """Start running ``line`` (with the plan of its group, if it shares one)."""
        ...

    def finish(self, line: ParsedLine, future: concurrent.futures.Future[Any]) -> LineResult:
        """The record of a line whose run is done."""
        ...


@dataclass
class StreamTally:
    """What a streamed batch did, in counts (its records went to ``on_record``)."""

    lines: int = 0
    completed: int = 0
    failed: int = 0
    invalid: int = 0
    not_started: int = 0
    resumed: int = 0
    plans_cached: int = 0
    plan_groups: int = 0
    planning_calls: int = 0
    stopped: str | None = None

    def count(self, record: LineResult) -> None:
        if record.status == "completed":
            self.completed += 1
        elif record.status == "failed":
            self.failed += 1
        elif record.status == "invalid":
            self.invalid += 1
        else:
            self.not_started += 1
        self.plans_cached += record.plan_cached


#: a record leaves the core: (its line's position in read order, the line, the record, whether it ran now)
OnRecord = Callable[[int, ParsedLine, LineResult, bool], None]


def _not_started(p: ParsedLine, reason: str) -> LineResult:
    assert p.spec is not None
    return line_record(p.line, p.spec, status="not started", error=reason).model_copy(update={"columns": p.columns})


def run_stream(
    lines: Iterable[ParsedLine],
    runner: LineRunner,
    *,
    max_in_flight: int,
    meter: BudgetMeter,
    on_record: OnRecord,
    earlier: Callable[[ParsedLine], LineResult | None] = lambda p: None,
    cannot_plan: Callable[[], str | None] = lambda: None,
    window: int | None = None,
    on_stop: Callable[[str], None] = lambda reason: None,
) -> StreamTally:
    """Run every line of ``lines`` through ``runner``, ``max_in_flight`` at a time, reading ``window`` lines ahead
    (default :func:`read_ahead`). Each line's record goes to ``on_record`` as soon as it is known: an invalid line's,
    an earlier attempt's (``earlier``), a line that needs a plan while ``cannot_plan()`` says why none can be made
    (failed), a finished run's, a line a spent budget kept from starting (not started)."""
    size = window or read_ahead(max_in_flight)
    source = iter(lines)
    tally = StreamTally()
    position = itertools.count()
    queue: deque[tuple[int, ParsedLine, SharedPlan | None]] = deque()
    plans: dict[concurrent.futures.Future[Any], SharedPlan] = {}
    running: dict[concurrent.futures.Future[Any], tuple[int, ParsedLine]] = {}
    no_plan: list[str | None] = []  # cannot_plan()'s answer, asked once, when a line first needs a plan

    def emit(pos: int, p: ParsedLine, record: LineResult, ran: bool) -> None:
        tally.count(record)
        on_record(pos, p, record, ran)

    def read_window(stopped: str | None) -> bool:
        """Read the next window: settle the lines that do not run, queue the others (planning each shared request
        of the window once). Whether there was a line to read."""
        chunk = list(itertools.islice(source, size))
        if not chunk:
            return False
        todo: list[tuple[int, ParsedLine]] = []
        for p in chunk:
            pos = next(position)
            tally.lines += 1
            if not p.valid or p.spec is None:
                emit(pos, p, p.invalid_record(), False)
                continue
            record = earlier(p)
            if record is not None:
                tally.resumed += 1
                emit(pos, p, record, False)
                continue
            if p.plan is None:
                if not no_plan:
                    no_plan.append(cannot_plan())
                if no_plan[0] is not None:
                    failed = line_record(p.line, p.spec, status="failed", error=no_plan[0], plan_source="llm")
                    emit(pos, p, failed.model_copy(update={"columns": p.columns}), False)
                    continue
            if stopped is not None:
                emit(pos, p, _not_started(p, stopped), False)
                continue
            todo.append((pos, p))
        shared: dict[int, SharedPlan] = {}
        for members in plan_groups([p for _, p in todo]).values():
            if len(members) < 2:
                continue
            first = todo[members[0]][1]
            plan = runner.plan(first)
            plans[plan.future] = plan
            tally.plan_groups += 1
            shared.update({m: plan for m in members})
        queue.extend((pos, p, shared.get(i)) for i, (pos, p) in enumerate(todo))
        return True

    def count_plans(block: bool = False) -> None:
        if block and plans:
            concurrent.futures.wait(list(plans))
        for future in [f for f in plans if f.done()]:
            calls, tokens = runner.planned(plans.pop(future))
            tally.planning_calls += calls
            meter.spend(tokens)

    exhausted = False
    stopped: str | None = None
    while True:
        wait_for_rate = 0.0
        while stopped is None and len(running) < max_in_flight:
            count_plans()
            stopped = meter.stop_reason()
            if stopped is not None:
                on_stop(stopped)
                break
            wait_for_rate = meter.wait()
            if wait_for_rate > 0:
                break
            if not queue:
                if exhausted or not read_window(None):
                    exhausted = True
                    break
                continue
            pos, p, plan = queue.popleft()
            future = runner.start(p, plan)
            meter.start()
            running[future] = (pos, p)
        if stopped is not None and not exhausted:
            while queue:  # the lines read but not started, then every line not read yet, window by window
                pos, p, _ = queue.popleft()
                emit(pos, p, _not_started(p, stopped), False)
            while read_window(stopped):
                pass
            exhausted = True
        if not running:
            if wait_for_rate > 0 and stopped is None:
                time.sleep(wait_for_rate)
                continue
            break
        finished, _ = concurrent.futures.wait(
            list(running), timeout=wait_for_rate or None, return_when=concurrent.futures.FIRST_COMPLETED
        )
        for future in finished:
            pos, p = running.pop(future)
            record = runner.finish(p, future)
            meter.spend(record.llm_tokens)
            emit(pos, p, record, True)
    count_plans(block=True)
    tally.stopped = stopped
    return tally


class RecordSpool:
    """Every record of a batch in a local temporary file, read back in line order: what the results file is written
    from at the end. Holds in memory one offset per line (8 bytes) and the first ``keep`` records by position."""

    def __init__(self, keep: int = SUMMARY_RECORDS) -> None:
        # closed by close() (or leaving the ``with`` block), not at the end of this method
        self._file = tempfile.TemporaryFile(prefix="hugginggpt-batch-records-")  # noqa: SIM115
        self._offsets = array("q")
        self.keep = keep
        self.count = 0

    def add(self, pos: int, record: LineResult, inputs: list[str] | None = None) -> None:
        """Keep the record of the line at ``pos`` (its place in read order), with the line's inputs."""
        self._file.seek(0, 2)
        offset = self._file.tell()
        self._file.write(
            b'{"inputs":%s,"record":%s}\n' % (json.dumps(inputs).encode(), record.model_dump_json().encode())
        )
        if pos >= len(self._offsets):
            self._offsets.extend([-1] * (pos + 1 - len(self._offsets)))
        if self._offsets[pos] < 0:
            self.count += 1
        self._offsets[pos] = offset

    def entries(self) -> Iterator[tuple[LineResult, list[str] | None]]:
        """Every record with its line's inputs, in line order, one at a time."""
        for offset in self._offsets:
            if offset < 0:
                continue
            self._file.seek(offset)
            entry = json.loads(self._file.readline())
            yield LineResult.model_validate(entry["record"]), entry["inputs"]

    def __iter__(self) -> Iterator[LineResult]:
        return (record for record, _ in self.entries())

    def first(self) -> list[LineResult]:
        """The first ``keep`` records by line: what the batch's summary shows."""
        return list(itertools.islice(self, self.keep))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
