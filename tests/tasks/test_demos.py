"""The demo library and the demos picked per request (tasks/demos.py), in planning and on the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main
from tasks.demos import (
    Demo,
    LexicalRanker,
    add_run_demo,
    builtin_demos,
    demo_library,
    pick_demos,
    taskbench_demos,
    user_demos,
)
from tasks.evaluation.dataset import load_dataset
from tasks.llm import FunctionModel, scripted
from tasks.plan import demos_for, plan_request
from tasks.schemas import PlanNode, RunSummary
from tasks.settings import Settings
from tasks.storage import ArtifactStore

DATA = Path(__file__).parents[2] / "tasks" / "evaluation" / "data"


def _store(root: Path) -> ArtifactStore:
    return ArtifactStore(str(root), "demos")


def _summary(root: Path, run_id: str, **fields: object) -> None:
    summary = RunSummary(
        request="Make the birthday card card.png sound festive: describe it, then read the description aloud",
        inputs=["card.png"],
        plan=[
            PlanNode(id=0, task="image-to-text", dep=[], args={"image": "card.png"}),
            PlanNode(id=1, task="text-to-speech", dep=[0], args={"text": "<GENERATED>-0"}),
        ],
        flow_run_id=run_id,
        **fields,
    )
    (root / run_id).mkdir(parents=True)
    (root / run_id / "summary.json").write_text(summary.model_dump_json())


def test_library_holds_taskbench_plans_but_not_the_held_out_ones() -> None:
    library = demo_library()
    tb = [d for d in library if d.source.startswith("taskbench:")]
    assert len(tb) == len(taskbench_demos()) == 24 and len(library) == len(builtin_demos()) + 24
    held_out = {item.request for item in load_dataset(DATA / "taskbench_heldout.jsonl", "taskbench").items}
    assert len(held_out) == 18 and not held_out & {d.request for d in library}
    chain = next(d for d in tb if d.source == "taskbench:27826108")
    assert chain.plan == [
        {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "example.jpg"}},
        {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]


def test_lexical_ranking_puts_the_closest_demo_last() -> None:
    pool = [
        Demo(request="Translate this sentence into German"),
        Demo(request="Transcribe the meeting recording meeting.wav into text"),
        Demo(request="Draw a picture of a red bicycle"),
    ]
    ranker = LexicalRanker(pool)
    assert ranker("Please transcribe my recording talk.wav", 2)[-1] is pool[1]
    assert ranker("Draw a bicycle for me", 1) == [pool[2]]
    library = demo_library()
    picked = LexicalRanker(library)(
        "Could you enhance the audio quality of noisy.wav and remove the background noise?", 3
    )
    assert picked[-1].source == "taskbench:14030108" and picked[-1].plan[0]["task"] == "audio-to-audio"


def test_a_completed_run_becomes_a_demo_and_is_picked_for_a_similar_request(tmp_path: Path) -> None:
    _summary(tmp_path, "run-1")
    demo, uri = add_run_demo(_store(tmp_path), "run-1")
    assert demo.source == "run:run-1" and [n["task"] for n in demo.plan] == ["image-to-text", "text-to-speech"]
    assert Path(uri) == tmp_path / "demos" / "run-1.json"
    assert user_demos(_store(tmp_path)) == [demo]
    picked = pick_demos("Describe the birthday card card.png and read it aloud, festive", 3, _store(tmp_path))
    assert picked[-1] == demo  # the closest, right before the request
    assert demo not in pick_demos("Describe the birthday card card.png and read it aloud, festive", 3)


def test_only_a_completed_run_with_a_valid_plan_makes_a_demo(tmp_path: Path) -> None:
    from tasks.demos import DemoError

    _summary(tmp_path, "run-2", status="failed", error="a node failed")
    with pytest.raises(DemoError, match="did not complete"):
        add_run_demo(_store(tmp_path), "run-2")
    with pytest.raises(DemoError, match=r"no summary\.json"):
        add_run_demo(_store(tmp_path), "nowhere")
    (tmp_path / "demos").mkdir()
    (tmp_path / "demos" / "broken.json").write_text('{"request": "x", "plan": [{"task": "teleport"}]}')
    assert user_demos(_store(tmp_path)) == []  # an invalid stored demo is left out


def test_planning_shows_the_demos_the_settings_ask_for(tmp_path: Path) -> None:
    request = "Transcribe the interview interview.wav for me"
    assert demos_for(Settings(demos="fixed", storage=str(tmp_path)), request) is None
    picked = demos_for(Settings(demos="similar", n_demos=3, storage=str(tmp_path)), request)
    assert picked is not None and len(picked) == 3
    assert picked[-1]["plan"][0]["task"] == "automatic-speech-recognition"
    model = FunctionModel(scripted())
    plan_request(model, request, inputs=["interview.wav"], demos=picked)
    shown = [m["content"] for m in model.calls[0].messages[1:-1] if m["role"] == "user"]
    assert shown == [f"Request: {d['request']}\nInputs: {', '.join(d['inputs']) or 'none'}" for d in picked]


def test_demos_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HUGGINGGPT_STORAGE", str(tmp_path))
    _summary(tmp_path, "run-3")
    assert main(["demos", "add", "run-3"]) == 0
    out = capsys.readouterr().out
    assert "demo added" in out and "image-to-text, text-to-speech" in out
    assert main(["demos", "list", "--json"]) == 0
    sources = [json.loads(line)["source"] for line in capsys.readouterr().out.splitlines()]
    assert "run:run-3" in sources and "taskbench:17990278" in sources
    assert main(["demos", "add", "missing-run"]) == 2
    assert "no summary.json" in capsys.readouterr().err
