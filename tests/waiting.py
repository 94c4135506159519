"""Waiting for a condition with a bound, never for a fixed time: what another thread, process or server does
becomes visible when it does, and a busy machine only makes the wait longer."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

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
