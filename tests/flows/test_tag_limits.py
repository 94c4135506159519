"""The limited tags a run reads once, ahead: the read starts with the run and its nodes wait for that answer."""

from __future__ import annotations

import threading

import pytest

import flows.tag_limits
from flows.tag_limits import read_limited_tags, reading_limited_tags


def test_a_run_reads_the_limited_tags_once_in_a_thread_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[str] = []
    release = threading.Event()

    def fake_read() -> frozenset[str]:
        reads.append(threading.current_thread().name)
        assert release.wait(30), "the reader was not released"
        return frozenset({"model:big"})

    monkeypatch.setattr(flows.tag_limits, "_read_limited_tags", fake_read)
    with reading_limited_tags():
        release.set()  # the block went on while the read was held: the read does not hold up the run's start
        assert read_limited_tags() == frozenset({"model:big"})
        assert read_limited_tags() == frozenset({"model:big"})
    assert len(reads) == 1 and reads[0] != threading.current_thread().name
    release.clear()
    monkeypatch.setattr(flows.tag_limits, "_read_limited_tags", lambda: frozenset({"other"}))
    assert read_limited_tags() == frozenset({"other"})  # outside a run: a read of its own


def test_what_the_read_raises_reaches_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> frozenset[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr(flows.tag_limits, "_read_limited_tags", broken)
    with reading_limited_tags(), pytest.raises(KeyboardInterrupt):
        read_limited_tags()
