"""Waiting for a condition with a bound, never for a fixed time: what another thread, process or server does
becomes visible when it does, and a busy machine only makes the wait longer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(condition: Callable[[], T], *, timeout: float = 30.0, every: float = 0.05, what: str = "") -> T:
    """``condition()`` again until it returns something true, which is returned; ``AssertionError`` naming
    ``what`` once ``timeout`` seconds have passed without."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout:g} s: {what or condition}")
        time.sleep(every)


def returns_within(call: Callable[[], T], *, timeout: float = 30.0, what: str = "") -> T:
    """``call()``'s value (or its exception), or ``AssertionError`` naming ``what`` when it has not returned after
    ``timeout`` seconds: for calls that must end on their own (a timeout firing, a refusal before any I/O) and would
    hang if they did not. The bound is far above what the call needs, so a busy machine does not reach it."""
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # raised in the caller below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"returns within: {what or call}", daemon=True).start()
    if not done.wait(timeout):
        raise AssertionError(f"did not return within {timeout:g} s: {what or call}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


class FakeClock:
    """A clock that moves only when something sleeps on it: ``clock()`` reads it, ``clock.sleep(s)`` records the
    wait and moves it on by ``s`` at once. ``limit`` waits at most, so a loop that never stops fails instead."""

    def __init__(self, start: float = 1000.0, limit: int = 100) -> None:
        self.now = start
        self.waits: list[float] = []
        self.limit = limit

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert len(self.waits) < self.limit, f"more than {self.limit} waits: {self.waits[:10]} ..."
        self.waits.append(seconds)
        self.now += seconds
