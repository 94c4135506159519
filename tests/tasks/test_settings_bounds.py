"""Settings under hostile values: non-finite and huge numbers, a device or Dask scheduler that is not there.

Each is refused before any LLM call, with a message naming the variable to set, and exit code 2.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from pydantic import ValidationError

from flows.cli import main
from tasks.settings import (
    MAX_TIMEOUT,
    RunOptions,
    Settings,
    device_problem,
    runtime_problems,
    setting_variable,
)
from tests.llm_server import plan_json

SENTIMENT = plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "I love it"}})

TIMEOUTS_AND_WAITS = [
    "llm_timeout",
    "hub_info_timeout",
    "remote_timeout",
    "remote_job_timeout",
    "input_timeout",
    "model_timeout",
    "storage_retry_wait",
    "node_retry_wait",
    "remote_retry_wait",
    "cache_ttl",
    "hub_info_ttl",
]
INTEGERS = [
    "llm_max_retries",
    "local_llm_max_new_tokens",
    "storage_retries",
    "max_fallbacks",
    "node_retries",
    "chat_history",
    "presign_seconds",
    "max_local_params",
    "remote_retries",
    "top_k",
    "max_models",
    "max_new_tokens",
    "max_workers",
    "max_input_bytes",
    "eval_concurrency",
    "batch_max_in_flight",
    "dask_workers",
]


@pytest.mark.parametrize("field", TIMEOUTS_AND_WAITS)
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e10", "1e308"])
def test_every_timeout_and_wait_is_finite_and_bounded(field: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    variable = setting_variable(field)
    assert variable == f"HUGGINGGPT_{field.upper()}"
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"][0] for e in info.value.errors()] == [field]
    monkeypatch.setenv(variable, "60")  # a sane value of the same variable passes
    assert getattr(Settings(), field) == 60.0


@pytest.mark.parametrize("field", INTEGERS)
def test_every_integer_is_bounded(field: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(setting_variable(field), str(10**20))
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [e["loc"][0] for e in info.value.errors()] == [field]
    monkeypatch.setenv(setting_variable(field), "3")
    assert getattr(Settings(), field) == 3


def test_run_options_are_bounded_like_the_settings() -> None:
    for bad in ({"cache_ttl": float("inf")}, {"max_workers": 10**20}, {"max_new_tokens": 10**20}):
        with pytest.raises(ValidationError):
            RunOptions(**bad)  # type: ignore[arg-type]
    assert Settings(llm_timeout=MAX_TIMEOUT).llm_timeout == MAX_TIMEOUT


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("HUGGINGGPT_LLM_TIMEOUT", "inf", "HUGGINGGPT_LLM_TIMEOUT: Input should be a finite number"),
        ("HUGGINGGPT_MODEL_TIMEOUT", "1e10", "HUGGINGGPT_MODEL_TIMEOUT: Input should be less than or equal to"),
        ("HUGGINGGPT_NODE_RETRY_WAIT", "nan", "HUGGINGGPT_NODE_RETRY_WAIT: Input should be a finite number"),
        ("HUGGINGGPT_MAX_WORKERS", str(10**20), "HUGGINGGPT_MAX_WORKERS: Input should be less than or equal to"),
    ],
)
def test_cli_refuses_non_finite_and_huge_settings_naming_the_variable(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys, variable: str, value: str, said: str
) -> None:
    llm.set(plan=SENTIMENT)
    monkeypatch.setenv(variable, value)
    assert main(["run", "Is this positive: I love it", "--json"]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and "OverflowError" not in err
    assert sum(llm.calls.values()) == 0


def test_device_problems_tell_a_device_from_nonsense() -> None:
    assert device_problem("auto") is None and device_problem("cpu") is None
    banana = device_problem("banana")
    assert banana is not None and "HUGGINGGPT_DEVICE='banana' is not a device" in banana
    import torch

    if not torch.cuda.is_available():
        missing = device_problem("cuda:0")
        assert missing is not None and "no cuda device on this machine" in missing
    else:
        assert device_problem("cuda:0") is None
        beyond = device_problem(f"cuda:{torch.cuda.device_count()}")
        assert beyond is not None and "device(s)" in beyond


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_dask_scheduler_out_of_reach_is_a_runtime_problem() -> None:
    pytest.importorskip("prefect_dask")
    port = _closed_port()
    problems = runtime_problems(Settings(task_runner="dask", dask_address=f"tcp://127.0.0.1:{port}"))
    assert len(problems) == 1 and f"HUGGINGGPT_DASK_ADDRESS=tcp://127.0.0.1:{port} cannot be reached" in problems[0]
    with socket.socket() as listening:  # a scheduler that answers passes
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"tcp://127.0.0.1:{listening.getsockname()[1]}"
        assert runtime_problems(Settings(task_runner="dask", dask_address=address)) == []
    assert runtime_problems(Settings(task_runner="threads", dask_address=f"tcp://127.0.0.1:{port}")) == []


@pytest.mark.usefixtures("prefect_server")
def test_cli_refuses_bad_device_and_unreachable_dask_before_any_llm_call(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path
) -> None:
    llm.set(plan=SENTIMENT, respond="Positive.")
    monkeypatch.setenv("HUGGINGGPT_DEVICE", "banana")
    assert main(["run", "Is this positive: I love it", "--json"]) == 2
    err = capsys.readouterr().err
    assert "HUGGINGGPT_DEVICE='banana' is not a device" in err and "set HUGGINGGPT_DEVICE" in err
    monkeypatch.setenv("HUGGINGGPT_DEVICE", "cpu")
    assert main(["run", "Is this positive: I love it", "--json", "--device", "banana"]) == 2
    assert "is not a device" in capsys.readouterr().err
    requests = tmp_path / "requests.jsonl"
    requests.write_text('{"request": "Is this positive: I love it"}\n')
    monkeypatch.setenv("HUGGINGGPT_DEVICE", "banana")
    assert main(["batch", str(requests)]) == 2
    assert "is not a device" in capsys.readouterr().err
    monkeypatch.setenv("HUGGINGGPT_DEVICE", "cpu")
    pytest.importorskip("prefect_dask")
    monkeypatch.setenv("HUGGINGGPT_TASK_RUNNER", "dask")
    monkeypatch.setenv("HUGGINGGPT_DASK_ADDRESS", f"tcp://127.0.0.1:{_closed_port()}")
    assert main(["run", "Is this positive: I love it", "--json"]) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err and "HUGGINGGPT_TASK_RUNNER=threads" in err
    assert sum(llm.calls.values()) == 0


@pytest.mark.usefixtures("prefect_server")
def test_flow_refuses_bad_device_before_planning(env: Path, llm) -> None:
    from flows.request import run_request

    llm.set(plan=SENTIMENT, respond="Positive.")
    summary = run_request("Is this positive: I love it", options=RunOptions(device="banana"))
    assert summary.status == "failed" and summary.error is not None and "is not a device" in summary.error
    assert summary.results == [] and sum(llm.calls.values()) == 0
