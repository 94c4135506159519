"""A batch's budgets (flows/batch_budget.py), on a clock the test moves."""

from __future__ import annotations

from flows.batch_budget import BudgetMeter, Budgets


def test_lines_per_minute_waits_for_the_window() -> None:
    now = [0.0]
    meter = BudgetMeter(Budgets(max_lines_per_minute=2), clock=lambda: now[0])
    assert meter.wait() == 0.0
    meter.start()
    now[0] = 10.0
    meter.start()
    now[0] = 20.0
    assert meter.wait() == 40.0  # the first start leaves the window at 60 s
    now[0] = 60.0
    assert meter.wait() == 0.0 and meter.stop_reason() is None


def test_tokens_stop_the_batch_for_good() -> None:
    meter = BudgetMeter(Budgets(max_llm_tokens=100))
    meter.spend(60)
    assert meter.stop_reason() is None
    meter.spend(40)
    reason = meter.stop_reason()
    assert reason is not None and "100 tokens used" in reason and "--max-llm-tokens 100" in reason
    assert BudgetMeter(None).stop_reason() is None and BudgetMeter(None).wait() == 0.0
