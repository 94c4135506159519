"""Run a call within a number of seconds: the one bound for calls that have no total-time bound of their own."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T], what: str, on_timeout: Callable[[], BaseException]) -> T:
    """``call()``, or ``on_timeout()`` raised once ``seconds`` have passed without its result.

    For calls whose own timeouts bound each read, not the whole call (an HTTP client reading a server that sends
    one byte a second), or that have no bound at all (a provider's job queue, a local model stuck loading). The
    call runs in a daemon thread; when the time is up the caller moves on and the thread is left to end with its
    call. An exception the call raised is raised here. The call sees the caller's context variables (the run it
    belongs to, what records its model waits and progress).
    """
    context = contextvars.copy_context()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            outcome["value"] = context.run(call)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=run, name=f"bounded call: {what}", daemon=True).start()
    if not done.wait(seconds):
        raise on_timeout()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
