"""Exactly once per line: what a batch knows of its lines' runs, and who may run a batch of a file.

A line's completion is made durable by the run that does the line: the request flow writes ``summary.json`` into
its own folder in storage before it ends, and its flow run carries the tags ``batch-key-{key}`` and
``batch-line-{n}`` from the moment Prefect creates it. A rerun of the batch (after Ctrl-C, a crash, a SIGKILL)
therefore finds every completed line whatever moment the batch was stopped at, even one whose record the batch
had no time to keep: it asks the Prefect API for the runs tagged with the batch's key and reads each one's summary
back from storage. Nothing read back is taken on trust: a line record or a run counts as the line's completion only
when the summary in the run's own folder names that run, that request, and says completed; the line's record is then
rebuilt from that summary, never from the record file.

One batch of a file at a time: the batch holds ``batches/lines-{key}/owner.lock`` (its flow run, host, process and
a heartbeat renewed every few seconds) while it runs. A second batch of the same file and storage finds it and
stops with a message naming the first; an owner whose process is gone (same host) or whose heartbeat is older than
:data:`STALE_AFTER` is taken over.
"""

from __future__ import annotations

import bisect
import datetime as dt
import os
import re
import socket
import threading
import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from prefect import get_run_logger
from pydantic import BaseModel, ValidationError

from tasks.batch_lines import LineResult, ParsedLine, record_from_summary
from tasks.schemas import RunSummary
from tasks.storage import ArtifactStore, StorageError, check_run_id

#: seconds between two heartbeats of a running batch
HEARTBEAT = 5.0
#: a batch whose heartbeat is older than this is taken to be gone (another machine: its process cannot be checked)
STALE_AFTER = 60.0
KEY_TAG = "batch-key-{key}"
LINE_TAG = "batch-line-{line}"


class BatchBusyError(RuntimeError):
    """Another batch of the same file and storage is running."""


class Owner(BaseModel):
    flow_run_id: str
    host: str
    pid: int
    started: dt.datetime
    heartbeat: dt.datetime


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BatchLock:
    """``{folder}/owner.lock``: which batch run holds a batch key (see the module's documentation)."""

    def __init__(self, store: ArtifactStore, folder: str, flow_run_id: str, requests_url: str) -> None:
        self.store = store
        self.rel = f"{folder}/owner.lock"
        self.requests_url = requests_url
        now = _now()
        self.me = Owner(flow_run_id=flow_run_id, host=socket.gethostname(), pid=os.getpid(), started=now, heartbeat=now)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Owner | None:
        """The live owner other than this batch, if any."""
        try:
            raw = self.store.read_root_json(self.rel)
            owner = None if raw is None else Owner.model_validate(raw)
        except (StorageError, ValidationError):
            return None  # damaged: nobody can be shown to hold it
        if owner is None or owner.flow_run_id == self.me.flow_run_id:
            return None
        if owner.host == self.me.host and not _alive(owner.pid):
            return None
        if (_now() - owner.heartbeat).total_seconds() > STALE_AFTER:
            return None
        return owner

    def _refuse(self, owner: Owner) -> BatchBusyError:
        return BatchBusyError(
            f"a batch of {self.requests_url} on the same storage is already running: flow run {owner.flow_run_id} "
            f"(host {owner.host}, process {owner.pid}, started {owner.started:%Y-%m-%d %H:%M:%S} UTC). Running it "
            "twice at once would run its lines twice: wait for that one to end, then run the batch again to finish "
            "whatever it left (completed lines are not run again)"
        )

    def _write(self) -> None:
        self.me.heartbeat = _now()
        self.store.put_root_bytes(self.rel, self.me.model_dump_json().encode("utf-8"))

    def acquire(self) -> None:
        """Take the key, or raise :class:`BatchBusyError` naming the batch that holds it. Two batches starting at
        the same moment both write and read back: the one whose record did not survive stops."""
        owner = self.holder()
        if owner is not None:
            raise self._refuse(owner)
        self._write()
        time.sleep(0.2)  # let a concurrent writer's record land before reading back
        owner = self.holder()
        if owner is not None:
            raise self._refuse(owner)
        self._thread = threading.Thread(target=self._beat, name="batch-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            with suppress(StorageError):  # the next beat tries again; a batch is taken over only after STALE_AFTER
                self._write()

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with suppress(OSError, FileNotFoundError):
            self.store.remove_root(self.rel)

    @contextmanager
    def held(self) -> Iterator[BatchLock]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()


def completed_summary(store: ArtifactStore, flow_run_id: Any, request: str) -> RunSummary | None:
    """The summary of ``flow_run_id`` read from its own folder in storage when it is that run's, for ``request``,
    and completed; ``None`` otherwise (no such run, a damaged or foreign summary, a run that did not complete)."""
    if not isinstance(flow_run_id, str):
        return None
    try:
        run = store.for_run(check_run_id(flow_run_id))
        raw = run.read_json("summary.json")
        summary = None if raw is None else RunSummary.model_validate(raw)
    except (StorageError, ValidationError, ValueError):
        return None
    if summary is None or summary.status != "completed" or summary.request != request:
        return None
    if summary.flow_run_id != flow_run_id or summary.storage_uri not in (None, run.run_uri):
        return None
    return summary


class LineRun(BaseModel):
    """A flow run of a batch line, as the Prefect API lists it by its tags."""

    id: str
    final: bool  # ended (completed, failed, cancelled, crashed)
    on_worker: bool  # a deployment's run: a worker on any machine may still be running it


async def _tagged(key: str, line: int | None = None) -> dict[int, list[LineRun]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    prefix = LINE_TAG.format(line="")
    wanted = [KEY_TAG.format(key=key)] + ([LINE_TAG.format(line=line)] if line is not None else [])
    found: dict[int, list[LineRun]] = {}
    async with get_client() as client:
        offset = 0
        while True:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=wanted)),
                sort=FlowRunSort.START_TIME_ASC,
                limit=200,
                offset=offset,
            )
            for run in runs:
                line_run = LineRun(
                    id=str(run.id),
                    final=run.state is not None and run.state.is_final(),
                    on_worker=run.deployment_id is not None,
                )
                for tag in run.tags:
                    if tag.startswith(prefix) and tag[len(prefix) :].isdigit():
                        number = int(tag[len(prefix) :])
                        if line is None or number == line:
                            found.setdefault(number, []).append(line_run)
            if len(runs) < 200:
                return found
            offset += len(runs)


async def _tagged_lines(key: str) -> array[int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.client.schemas.sorting import FlowRunSort

    prefix = LINE_TAG.format(line="")
    numbers: set[int] = set()
    async with get_client() as client:
        offset = 0
        while True:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[KEY_TAG.format(key=key)])),
                sort=FlowRunSort.START_TIME_ASC,
                limit=200,
                offset=offset,
            )
            for run in runs:
                numbers.update(
                    int(t[len(prefix) :]) for t in run.tags if t.startswith(prefix) and t[len(prefix) :].isdigit()
                )
            if len(runs) < 200:
                return array("q", sorted(numbers))
            offset += len(runs)


def tagged_runs(key: str, line: int | None = None) -> dict[int, list[LineRun]]:
    """The flow runs the Prefect API holds for each line of the batch ``key`` (by their tags), oldest first; only
    those of ``line`` when it is given."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(_tagged(key, line)) or {}


def tagged_lines(key: str) -> array[int]:
    """The numbers of the lines of the batch ``key`` that have a flow run in the Prefect API, sorted: 8 bytes a
    line, whatever the batch's size (the runs themselves are asked for line by line, :func:`tagged_runs`)."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    return run_coro_as_sync(_tagged_lines(key)) or array("q")


def _holds(numbers: array[int], number: int) -> bool:
    i = bisect.bisect_left(numbers, number)
    return i < len(numbers) and numbers[i] == number


#: how long a rerun waits for a line's run still on a worker from an earlier attempt before running the line again
IN_FLIGHT_WAIT = 3 * 3600


def wait_until_ended(run: LineRun, timeout: float = IN_FLIGHT_WAIT) -> bool:
    """Wait (on the API's events, not by polling) for ``run`` to end; whether it did within ``timeout`` seconds."""
    import uuid

    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run
    from prefect.utilities.asyncutils import run_coro_as_sync

    try:
        run_coro_as_sync(wait_for_flow_run(uuid.UUID(run.id), timeout=int(timeout)))
    except FlowRunWaitTimeout:
        return False
    return True


def line_tags(key: str, line: int) -> tuple[str, str]:
    return KEY_TAG.format(key=key), LINE_TAG.format(line=line)


_PART = re.compile(r"([0-9]{1,9})\.json", re.ASCII)


class LineParts:
    """One file per finished line, ``{storage}/batches/lines-{key}/{line}.json``, written (atomically) as the line
    finishes, so an interrupted batch keeps every finished line's record and a rerun of the same file against the
    same storage skips the lines that completed.

    A rerun asks by line number (:meth:`earlier`), as the lines come up, so a batch of any size holds only the
    numbers of the lines that have a part or a run (:meth:`load`: two sorted arrays, 8 bytes a line); a line's part
    is read when that line comes up. Parts are read back as untrusted input: a part counts only when the run it
    names holds, in its own folder, a summary of that run, for that line's request, that says completed
    (:func:`flows.batch_ledger.completed_summary`), and the line's record is rebuilt from that summary. A line whose
    run completed but whose part was never written (the batch was killed in between) is found through the Prefect
    API by the run's tags."""

    def __init__(self, store: ArtifactStore, key: str, log: Any = None) -> None:
        self.store = store
        self.key = key
        self.folder = f"batches/lines-{key}"
        self._log = log
        self._parts: array[int] = array("q")
        self._tagged: array[int] = array("q")

    @property
    def log(self) -> Any:
        return self._log if self._log is not None else get_run_logger()

    def record(self, result: LineResult) -> None:
        self.store.put_root_bytes(f"{self.folder}/{result.line:07d}.json", result.model_dump_json().encode("utf-8"))

    def load(self) -> None:
        """Which lines an earlier attempt left a part for (from the part files' names) and which have a flow run in
        the Prefect API (from the runs' tags): line numbers only."""
        numbers = array("q")
        for name in self.store.list_root(self.folder):
            match = _PART.fullmatch(name)
            if match is not None:
                numbers.append(int(match.group(1)))
        self._parts = array("q", sorted(set(numbers)))
        try:
            self._tagged = tagged_lines(self.key)
        except Exception as exc:  # the API cannot say: lines without a part run again
            self.log.warning("could not ask the Prefect API for this batch's earlier runs: %s", str(exc)[:300])
            self._tagged = array("q")

    @property
    def known(self) -> int:
        """How many lines have a part (a line an earlier attempt finished, completed or not)."""
        return len(self._parts)

    def earlier(self, parsed: ParsedLine) -> LineResult | None:
        """The record of ``parsed`` when an earlier attempt completed it, rebuilt from its run's summary, else
        ``None`` (the line runs). A part that is damaged, does not match its line (number, id, request), or names a
        run that did not complete that request is ignored, and so is a run the Prefect API lists whose summary is
        not there: that line runs again."""
        spec = parsed.spec
        if not parsed.valid or spec is None:
            return None
        if _holds(self._parts, parsed.line):
            record = self._from_part(parsed)
            if record is not None:
                return record
        if _holds(self._tagged, parsed.line):
            return self._adopt(parsed)
        return None

    def _from_part(self, parsed: ParsedLine) -> LineResult | None:
        spec = parsed.spec
        assert spec is not None
        try:
            record = LineResult.model_validate(self.store.read_root_json(f"{self.folder}/{parsed.line:07d}.json"))
        except (StorageError, ValidationError) as exc:
            self.log.warning("line %d runs again: its earlier record is damaged (%s)", parsed.line, str(exc)[:300])
            return None
        if record.status != "completed" or record.line != parsed.line or record.request != spec.request:
            return None
        if record.id != spec.id:
            return None
        summary = completed_summary(self.store, record.flow_run_id, spec.request)
        if summary is None:
            self.log.warning(
                "line %d runs again: its record names run %s, whose own summary does not show that request completed",
                parsed.line,
                str(record.flow_run_id)[:60],
            )
            return None
        return record_from_summary(parsed, summary, record.plan_source or summary.plan_source)

    def _adopt(self, p: ParsedLine) -> LineResult | None:
        """A line whose run completed while no record was kept (the batch stopped first): found by its runs' tags
        in the Prefect API, checked against the runs' summaries, and recorded now.

        A line whose run a worker still holds (a deployment's run that has not ended: the batch was stopped while
        the line ran on a worker, on any machine) is waited for (:func:`wait_until_ended`), then adopted like any
        other if it completed: it is not started a second time."""
        assert p.spec is not None
        log = self.log
        try:
            runs = tagged_runs(self.key, p.line)
        except Exception as exc:  # the API cannot say: the line runs again
            log.warning("line %d: could not ask the Prefect API for its earlier runs: %s", p.line, str(exc)[:300])
            return None
        for run in reversed(runs.get(p.line, [])):
            flow_run_id = run.id
            if not run.final and run.on_worker:
                log.info("line %d: its run %s is still on a worker: waiting for it to end", p.line, flow_run_id)
                if not wait_until_ended(run):
                    log.warning(
                        "line %d: run %s did not end within %d s: the line runs again",
                        p.line,
                        flow_run_id,
                        IN_FLIGHT_WAIT,
                    )
                    continue
            summary = completed_summary(self.store, flow_run_id, p.spec.request)
            if summary is None:
                continue
            record = record_from_summary(p, summary, summary.plan_source)
            with suppress(StorageError):
                self.record(record)
            log.info("line %d completed in an earlier attempt, run %s: recorded, not run again", p.line, flow_run_id)
            return record
        return None
