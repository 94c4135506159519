"""The ``hugginggpt`` command, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tasks.schemas import RequestSpec
from tests.llm_server import plan_json

pytestmark = pytest.mark.usefixtures("prefect_server")

CAPTION_AND_SPEAK = plan_json(
    {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.png"}},
    {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
)


def _command() -> list[str]:
    script = Path(sys.executable).parent / "hugginggpt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


@pytest.mark.llm_http  # the CLI runs in another process
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
    # progress on stderr, as plain lines (stderr is not a terminal), from the run's own events, in order
    err = proc.stderr
    # the models load ahead of their nodes (prefetch), reported against the nodes they are for
    for expected in (
        ["image-to-text#0 waiting -> tiny/image-to-text", "image-to-text#0 loading", "image-to-text#0 done in "],
        ["image-to-text#0 waiting -> tiny/image-to-text", "image-to-text#0 running", "image-to-text#0 done in "],
        ["text-to-speech#1 waiting -> tiny/text-to-speech", "text-to-speech#1 loading", "text-to-speech#1 done in "],
        ["image-to-text#0 done in ", "text-to-speech#1 running", "text-to-speech#1 done in "],
    ):
        positions = [err.find(line) for line in expected]
        assert -1 not in positions and positions == sorted(positions), err[-3000:]
    # Prefect's run logs stay in Prefect (its API), off the terminal
    assert "Beginning flow run" not in err and "Task run 'image-to-text#0'" not in err


def test_cli_without_llm_says_what_to_set(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no .env here
    assert main(["run", "Describe photo.jpg"]) == 2
    err = capsys.readouterr().err
    assert "Set OPENAI_API_KEY" in err and "OPENAI_BASE_URL" in err and "Traceback" not in err


def _run_cli(*args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    return subprocess.run(
        [*_command(), *args],
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


HOSTILE_ANSWER = (
    "Done [/json] and [link=http://attacker.example]click here[/link] [bold red]loud[/] "
    "\x1b[31mred\x1b]0;owned\x07 \x9b2J \u202eevil"
)


@pytest.mark.llm_http  # the CLI runs in another process
def test_cli_never_interprets_markup_or_escapes_from_the_llm(env: Path, llm) -> None:
    """Issue 14 item 4: the answer is printed as text, whatever markup or escape sequences it holds."""
    llm.set(plan='{"tasks": []}', respond=HOSTILE_ANSWER)
    proc = _run_cli("run", "Say hello [bold]now[/bold]", COLUMNS="400")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "Traceback" not in proc.stderr
    for literal in ("[/json]", "[link=http://attacker.example]click here[/link]", "[bold red]loud[/]"):
        assert literal in out
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in out and raw not in proc.stderr
    assert "\\x1b[31mred" in out and "\\x9b2J" in out  # shown, visibly escaped

    proc = _run_cli("run", "Say hello", "--json")
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["answer"] == HOSTILE_ANSWER
    for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
        assert raw not in proc.stdout and raw not in proc.stderr


def test_cli_unreachable_llm_one_clear_message(env: Path) -> None:
    proc = _run_cli(
        "run", "Summarize this: a b c", OPENAI_BASE_URL="http://127.0.0.1:9/v1", HUGGINGGPT_LLM_MAX_RETRIES="0"
    )
    assert proc.returncode == 2  # a setting to change, as every configuration problem
    both = proc.stdout + proc.stderr
    assert both.count("could not reach the LLM at http://127.0.0.1:9/v1") == 1, both[-3000:]
    assert "Connection error. Set OPENAI_BASE_URL" in both and ".." not in both
    assert "Traceback" not in both and "Answer" not in proc.stdout  # no answer panel claiming results


@pytest.mark.llm_http  # the CLI runs in another process
def test_cli_failed_node_prints_no_stray_traceback(env: Path, llm, sample_files) -> None:
    llm.set(
        plan=plan_json({"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "gone.png"}}),
        respond="It failed.",
    )
    proc = _run_cli("run", "Classify gone.png")
    assert proc.returncode == 1
    assert "image-classification#0 failed: input file gone.png does not exist" in proc.stderr, proc.stderr[-3000:]
    assert "NoneType: None" not in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.llm_http  # an endpoint that cannot be reached
def test_cli_unreachable_llm_says_what_to_set(env: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert main(["run", "Summarize this: a b c", "--json"]) == 2  # a configuration problem
    out = json.loads(capsys.readouterr().out)
    assert "could not reach the LLM at http://127.0.0.1:9/v1" in out["error"]
    assert out["error_kind"] == "configuration"
    assert "Set OPENAI_BASE_URL" in out["error"]


def test_cli_rejects_missing_input_bad_pin_and_bad_plan_before_any_llm_call(env: Path, llm, tmp_path, capsys) -> None:
    assert main(["run", "Describe nothing.png", "--input", "nothing.png"]) == 2
    assert "input file(s) not found: nothing.png" in capsys.readouterr().err
    assert main(["run", "Describe", "--model", "image-to-text"]) == 2
    assert "TASK=MODEL_ID" in capsys.readouterr().err
    plan = tmp_path / "plan.yaml"
    plan.write_text("- {id: 0, task: no-such-task, dep: [-1], args: {text: hi}}\n")
    assert main(["run", "Do it", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert f"plan {plan}:" in err and "no-such-task" in err and "Traceback" not in err
    assert sum(llm.calls.values()) == 0  # nothing reached the LLM


def test_cli_checks_a_request_once_and_the_flow_it_runs_in_process_trusts_that(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    import tasks.runs

    checked: list[str] = []
    real = tasks.runs.check_request

    def counted(request: str) -> str:
        checked.append(request)
        return real(request)

    monkeypatch.setattr(tasks.runs, "check_request", counted)
    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "a lovely day"}}),
        respond="It is positive.",
    )
    assert main(["run", "Rate: a lovely day", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "It is positive."
    assert checked == ["Rate: a lovely day"]  # by the CLI, before Prefect; the flow took its checked request


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


@pytest.mark.llm_http  # the CLI runs in another process
def test_chat_turns_share_history_and_files(env: Path, llm, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hugginggpt chat` on a pipe: each line one flow run tagged with the session; the next turn sees the last
    HUGGINGGPT_CHAT_HISTORY turns and can use the files they produced."""
    import asyncio
    import re

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    def transcribe_the_earlier_audio(body: dict) -> str:
        text = json.dumps(body["messages"])
        wav = re.search(r"[^\"\s,()]*/audio\.wav", text)
        assert wav, "the earlier turn's file was not offered to the planner"
        return plan_json({"id": 0, "task": "automatic-speech-recognition", "dep": [-1], "args": {"audio": wav.group()}})

    llm.set(
        plan=[
            plan_json({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello there"}}),
            transcribe_the_earlier_audio,
            '{"tasks": []}',
        ],
        respond=["Here it is, read aloud.", "It says hello.", "You are welcome."],
    )
    turns = "Read 'hello there' aloud\n\nNow transcribe that audio\nThanks a lot\n"
    from prefect.settings import PREFECT_API_URL

    proc = subprocess.run(
        [*_command(), "chat", "--json"],
        input=turns,
        env={**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "HUGGINGGPT_CHAT_HISTORY": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [s["answer"] for s in summaries] == ["Here it is, read aloud.", "It says hello.", "You are welcome."]
    wav = summaries[0]["results"][0]["outputs"]["audio"]
    asr = summaries[1]["results"][0]
    assert asr["task"] == "automatic-speech-recognition" and asr["status"] == "completed"
    assert wav in summaries[1]["inputs"]  # the earlier file became an input of the later turn
    plans = [json.dumps(r["messages"]) for r in llm.stage_requests("plan")]
    assert "Read 'hello there' aloud" in plans[1]  # history: the previous turn
    assert "Now transcribe that audio" in plans[2] and "Read 'hello there' aloud" not in plans[2]  # bounded to 1
    session = re.search(r"session (\w+): 3 turn\(s\), 0 failed", proc.stderr)
    assert session, proc.stderr[-2000:]

    async def tags_of(ids: list[str]) -> list[set[str]]:
        async with get_client() as client:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            return [set(r.tags) for r in runs]

    for run_tags in asyncio.run(tags_of([s["flow_run_id"] for s in summaries])):
        assert {"hugginggpt", f"chat-{session.group(1)}"} <= run_tags


def test_cli_quiet_shows_no_progress(env: Path, llm, capsys) -> None:
    llm.set(plan='{"tasks": []}', respond="Hi.")
    assert main(["run", "Say hi", "--json"]) == 0
    assert "plan: no task, the LLM answers directly" in capsys.readouterr().err
    assert main(["run", "Say hi", "--json", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["answer"] == "Hi." and "plan: no task" not in captured.err


def _chat(turns: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys) -> tuple[int, list[dict], str]:
    """``hugginggpt chat --json ARGS`` in this process, reading ``turns`` from a pipe."""
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(turns))
    code = main(["chat", "--json", *args])
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_chat_pins_hold_for_the_turns_that_use_them(env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """A session's ``--model`` pin is used by the turns whose plan has its task; a turn without it is not refused."""
    llm.set(
        plan=[
            plan_json({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello there"}}),
            plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "so lovely"}}),
        ],
        respond=["Read aloud.", "Positive."],
    )
    code, summaries, err = _chat(
        "Read 'hello there' aloud\nIs 'so lovely' positive?\n",
        ["-m", "text-to-speech=tiny/text-to-speech"],
        monkeypatch,
        capsys,
    )
    assert [s["status"] for s in summaries] == ["completed", "completed"], [
        (s["error"], [r["error"] for r in s["results"]]) for s in summaries
    ]
    assert code == 0, err[-2000:]
    assert summaries[0]["assignments"][0]["reason"].startswith("pinned by the user")
    assert summaries[1]["results"][0]["task"] == "text-classification"
    # a single run still refuses a pin its plan does not use (the user asked for that model)
    llm.set(plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "so lovely"}}))
    assert main(["run", "Is 'so lovely' positive?", "-m", "text-to-speech=tiny/text-to-speech", "--json"]) == 1
    assert "pins task(s) text-to-speech that the plan does not use" in json.loads(capsys.readouterr().out)["error"]


def test_chat_reads_the_files_it_produced_with_storage_anywhere(
    env: Path, llm, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Storage outside the working directory and outside HUGGINGGPT_INPUT_ROOTS: a later turn still reads the
    files an earlier turn stored; a file the user never gave is refused naming the input, not the LLM's plan."""
    monkeypatch.setenv("HUGGINGGPT_INPUT_ROOTS", "[]")
    assert not env.resolve().is_relative_to(Path.cwd().resolve())

    def transcribe_the_earlier_audio(body: dict) -> str:
        wav = re.search(r"[^\"\s,()]*/audio\.wav", json.dumps(body["messages"]))
        assert wav, "the earlier turn's file was not offered to the planner"
        return plan_json({"id": 0, "task": "automatic-speech-recognition", "dep": [-1], "args": {"audio": wav.group()}})

    llm.set(
        plan=[
            plan_json({"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello there"}}),
            transcribe_the_earlier_audio,
        ],
        respond=["Read aloud.", "It says hello."],
    )
    code, summaries, _ = _chat("Read 'hello there' aloud\nNow transcribe that audio\n", [], monkeypatch, capsys)
    assert code == 0, [s["error"] for s in summaries]
    assert summaries[1]["results"][0]["status"] == "completed"

    outside = env.parent / "elsewhere.wav"
    outside.write_bytes(Path(summaries[0]["results"][0]["outputs"]["audio"]).read_bytes())
    from flows.request import run_request

    refused = run_request(RequestSpec(request="Transcribe elsewhere.wav", inputs=[str(outside)]))
    assert refused.status == "failed" and f"input {outside} is outside the folders" in (refused.error or "")
    assert "plan" not in (refused.error or "")


def test_summary_into_a_pipe_keeps_paths_whole_and_clips_long_outputs(capsys) -> None:
    """Printed into a pipe (capsys is no terminal): no wrapping at 80 columns that would split a path or a model id;
    a long text output is clipped in the table with a marker saying where the whole is, and kept whole in the
    summary."""
    from flows.cli import print_summary
    from tasks.schemas import Assignment, ModelSpec, NodeResult, PlanNode, RunSummary

    folder = "/data/" + "very-long-folder-name/" * 6 + "runs/0123456789abcdef/nodes/1-text-to-speech/audio.wav"
    model = "an-organisation-with-a-long-name/a-text-generation-model-with-an-even-longer-name-v2"
    story = " ".join(f"word{i}" for i in range(3000))
    summary = RunSummary(
        request="Write a story and read it aloud",
        plan=[
            PlanNode(id=0, task="text-generation", dep=[], args={"text": "a story"}),
            PlanNode(id=1, task="text-to-speech", dep=[0], args={"text": "<GENERATED>-0"}),
        ],
        assignments=[
            Assignment(
                node_id=0,
                task="text-generation",
                model=model,
                reason="r",
                spec=ModelSpec(id=model, task="text-generation"),
            )
        ],
        results=[
            NodeResult(id=0, task="text-generation", status="completed", outputs={"text": story}, model=model),
            NodeResult(id=1, task="text-to-speech", status="completed", outputs={"audio": folder}),
        ],
        answer="Here it is.",
        flow_run_id="run-1",
        storage_uri="/data/runs/run-1",
    )
    print_summary(summary)
    out = capsys.readouterr().out
    assert folder in out and model in out  # whole, on one line each
    assert "word9 word10" in out and "word2999" not in out
    assert f"[{len(story) - 240} more characters in summary.json]" in out
    assert len(out.splitlines()) < 20
    assert summary.results[0].outputs["text"] == story


def test_a_model_load_that_outlives_the_run_prints_no_bar_after_the_summary(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A load a run started ahead (a prefetch for a node that never ran) may end after the run has printed its
    summary: its transformers bar is folded into the progress channel, not printed below the summary."""
    import threading

    from transformers.utils import logging as hf_logging

    from flows import cli

    def late_load() -> None:
        for _ in hf_logging.tqdm(range(3), desc="Loading weights"):
            pass

    def run(args: object) -> int:
        print("the summary")
        loader = threading.Thread(target=late_load)  # the load a prefetch left running
        loader.start()
        loader.join()
        return 0

    monkeypatch.setattr(cli, "cmd_run", run)
    assert cli.main(["run", "Caption photo.jpg"]) == 0
    shown = capsys.readouterr()
    assert "the summary" in shown.out and "Loading weights" not in shown.err + shown.out
    # outside a command that runs requests the libraries' bars print as usual
    late_load()
    assert "Loading weights" in capsys.readouterr().err
