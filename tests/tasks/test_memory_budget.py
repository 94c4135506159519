"""The memory budget (:mod:`tasks.memory_budget`): how large a model this machine runs locally by default.

How the availability rule refuses a model over the budget is tested in ``tests/tasks/test_availability.py``.
"""

from __future__ import annotations

import pytest

from tasks import memory_budget
from tasks.memory_budget import default_max_local_params, local_budget
from tasks.settings import Settings

GIB = 2**30


def test_the_default_budget_follows_the_machine_memory() -> None:
    assert default_max_local_params(24 * GIB) == 2 * GIB  # 24 GB holds 2B float32 params with headroom
    assert 5 * 10**8 < default_max_local_params(8 * GIB) < 10**9  # 8 GB still runs a 0.5B chat model
    assert default_max_local_params(48 * GIB) == 2 * default_max_local_params(24 * GIB)


def test_the_setting_overrides_the_machine_and_each_budget_says_where_it_comes_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory_budget, "total_memory", lambda: 24 * GIB)
    assert local_budget(Settings()) == (
        2 * GIB,
        "the default for 24 GiB of memory; raise HUGGINGGPT_MAX_LOCAL_PARAMS to allow more",
    )
    monkeypatch.setattr(memory_budget, "total_memory", lambda: 8 * GIB)
    assert local_budget(Settings())[0] == default_max_local_params(8 * GIB)
    assert local_budget(Settings(max_local_params=12345)) == (12345, "HUGGINGGPT_MAX_LOCAL_PARAMS")
    monkeypatch.setattr(memory_budget, "total_memory", lambda: None)
    assert local_budget(Settings())[0] is None, "no memory figure from the OS: no default budget"
