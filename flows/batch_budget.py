"""A batch's budgets: LLM tokens for the whole attempt, and lines started per minute.

``max_llm_tokens``: once the lines finished in this attempt (and the batch's shared planning calls) have used that
many LLM tokens, no further line starts; the lines already running finish, and every line not started is recorded
as ``not started`` with the reason. Such lines are not kept as done: a rerun of the batch runs them (and only them),
under a budget of its own. ``max_lines_per_minute``: no more than that many lines start in any 60 seconds; the batch
waits for the window to allow the next one (a rate, as an API quota counts it, rather than a total).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from pydantic import BaseModel, Field


class Budgets(BaseModel):
    """The limits one attempt of a batch runs under (``None``: no limit)."""

    max_llm_tokens: int | None = Field(default=None, ge=1, description="LLM tokens (prompt and completion)")
    max_lines_per_minute: int | None = Field(default=None, ge=1, description="lines started in any 60 seconds")


class BudgetMeter:
    """What the batch has spent against its :class:`Budgets`; :meth:`stop_reason` says why no line may start."""

    def __init__(self, budgets: Budgets | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.budgets = budgets or Budgets()
        self.clock = clock
        self.tokens = 0
        self.started: deque[float] = deque()
        self.reason: str | None = None

    def spend(self, tokens: int) -> None:
        self.tokens += max(tokens, 0)

    def start(self) -> None:
        self.started.append(self.clock())

    def stop_reason(self) -> str | None:
        """Why no further line may start, or ``None``. Once the budget is spent the batch stays stopped."""
        if self.reason is None:
            limit = self.budgets.max_llm_tokens
            if limit is not None and self.tokens >= limit:
                self.reason = (
                    f"not started: the batch's LLM token budget was spent ({self.tokens} tokens used, "
                    f"--max-llm-tokens {limit}); run the batch again to run this line"
                )
        return self.reason

    def wait(self) -> float:
        """Seconds before the next line may start under ``max_lines_per_minute`` (0: now)."""
        rate = self.budgets.max_lines_per_minute
        if rate is None:
            return 0.0
        now = self.clock()
        while self.started and now - self.started[0] >= 60.0:
            self.started.popleft()
        return 0.0 if len(self.started) < rate else 60.0 - (now - self.started[0])
