"""The ``hugginggpt`` command, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tests.llm_server import plan_json

pytestmark = pytest.mark.usefixtures("prefect_server")

CAPTION_AND_SPEAK = plan_json(
    {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.png"}},
    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
)


def _command() -> list[str]:
    script = Path(sys.executable).parent / "hugginggpt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


def test_cli_json_end_to_end(env: Path, llm, sample_files) -> None:
    from prefect.settings import PREFECT_API_URL

    llm.set(plan=CAPTION_AND_SPEAK, respond="A photo, read aloud.")
    photo = str(sample_files["photo"])
    proc = subprocess.run(
        [*_command(), "run", "Describe photo.png, then read the description aloud", "--input", photo, "--json"],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # stdout is only the JSON document
    for key in ("request", "plan", "assignments", "results", "answer", "llm", "flow_run_id", "storage_uri"):
        assert key in summary
    assert summary["answer"] == "A photo, read aloud."
    assert summary["llm"] == {
        "calls": 2,
        "prompt_tokens": summary["llm"]["prompt_tokens"],
        "completion_tokens": summary["llm"]["completion_tokens"],
    }
    results = summary["results"]
    assert [(r["id"], r["task"], r["model"], r["status"]) for r in results] == [
        (0, "image-to-text", "tiny/image-to-text", "completed"),
        (1, "text-to-speech", "tiny/text-to-speech", "completed"),
    ]
    for r in results:
        assert set(r) >= {"id", "task", "model", "status", "outputs", "error", "seconds"}
    wav = Path(results[1]["outputs"]["audio"])
    assert wav.is_file() and wav.is_relative_to(env) and wav.read_bytes()[:4] == b"RIFF"
    assert "image-to-text#0" not in proc.stderr  # --json quiets the INFO progress; warnings still go to stderr


def test_cli_without_llm_says_what_to_set(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert main(["run", "Describe photo.jpg"]) == 2
    err = capsys.readouterr().err
    assert "Set OPENAI_API_KEY" in err and "OPENAI_BASE_URL" in err and "Traceback" not in err


def test_cli_unreachable_llm_says_what_to_set(env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["run", "Summarize this: a b c", "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert "could not reach the LLM at http://127.0.0.1:9/v1" in out["error"]
    assert "Set OPENAI_BASE_URL" in out["error"]


def test_cli_rejects_missing_input_and_bad_pin(env: Path, llm, capsys) -> None:
    assert main(["run", "Describe nothing.png", "--input", "nothing.png"]) == 2
    assert "input file(s) not found: nothing.png" in capsys.readouterr().err
    assert main(["run", "Describe", "--model", "image-to-text"]) == 2
    assert "TASK=MODEL_ID" in capsys.readouterr().err


def test_cli_human_output_and_exit_code_on_failure(
    env: Path, llm, sample_files, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "missing-later.png"}},
            {"id": 1, "task": "text-classification", "dep": [-1], "args": {"text": "so good"}},
        ),
        respond="One task failed.",
    )
    code = main(["run", "Classify missing-later.png and 'so good'"])
    out = capsys.readouterr().out
    assert code == 1
    assert "One task failed." in out and "image-classification#0" in out and "failed" in out
    assert "input file missing-later.png does not exist" in out


def test_cli_unreachable_prefect_api_says_what_to_set(env: Path, llm, capsys) -> None:
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"api.url": "http://127.0.0.1:9/api", "client.max_retries": 0}):
        code = main(["run", "Summarize: a b c"])
    err = capsys.readouterr().err
    assert code == 2
    assert "could not reach the Prefect API at http://127.0.0.1:9/api" in err and "PREFECT_API_URL" in err
    assert "Traceback" not in err
