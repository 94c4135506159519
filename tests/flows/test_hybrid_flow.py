"""Hybrid endpoints in a whole request: availability before choice, fallback, and a node served remotely."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from flows.request import run_request
from tasks.schemas import RequestSpec
from tasks.settings import RunOptions
from tests.llm_server import plan_json
from tests.tasks.experts.test_experts_remote import (
    MP4,
    InferenceServer,
    Reply,
    png_bytes,
    point_hub_at,
    serve_video_model,
)

pytestmark = pytest.mark.usefixtures("prefect_server")


@pytest.fixture
def inference_server() -> Iterator[InferenceServer]:
    server = InferenceServer().start()
    yield server
    server.stop()


def _catalog(tmp_path: Path, tiny_catalog: Path, *extra: dict) -> Path:
    path = tmp_path / "catalog.jsonl"
    path.write_text(tiny_catalog.read_text() + "".join(json.dumps(e) + "\n" for e in extra))
    return path


def test_missing_weights_are_never_offered_and_a_failing_model_falls_back(
    env: Path, llm, sample_files, tiny_catalog: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "vit"}')  # a proven architecture, no weights
    catalog = _catalog(
        tmp_path,
        tiny_catalog,
        {
            "id": "acme/popular-but-broken",
            "task": "image-classification",
            "downloads": 10**9,
            "local_path": str(broken),
        },
        {"id": "acme/weights-gone", "task": "image-classification", "downloads": 10**10, "local_path": "/nowhere/x"},
        {"id": "acme/hub-only", "task": "image-classification", "downloads": 10**11},
    )
    photo = str(sample_files["photo"])
    llm.set(
        plan=plan_json({"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": photo}}),
        select=json.dumps({"choices": [{"id": 0, "model": "acme/popular-but-broken", "reason": "most popular"}]}),
    )
    summary = run_request(
        RequestSpec(request="What is in the photo?", inputs=[photo]), RunOptions(catalog=str(catalog))
    )

    offered = llm.stage_requests("select")[0]["messages"][-1]["content"]
    assert "acme/popular-but-broken" in offered and "tiny/image-classification" in offered
    assert "acme/weights-gone" not in offered and "acme/hub-only" not in offered  # cannot run here: never offered

    assert summary.status == "completed"
    (result,) = summary.results
    assert result.model == "tiny/image-classification" and result.backend == "local"
    assert [(a.model, a.ok) for a in result.attempts] == [
        ("acme/popular-but-broken", False),
        ("tiny/image-classification", True),
    ]
    assert "acme/popular-but-broken" in result.attempts[0].error
    stored = json.loads(Path(summary.storage_uri, "summary.json").read_text())
    assert [a["model"] for a in stored["results"][0]["attempts"]] == [
        "acme/popular-but-broken",
        "tiny/image-classification",
    ]
    assert summary.assignments[0].model == "acme/popular-but-broken"
    assert [f.id for f in summary.assignments[0].fallbacks] == ["tiny/image-classification"]


def test_a_node_served_by_an_endpoint(env: Path, llm, tiny_catalog: Path, tmp_path: Path, inference_server) -> None:
    url = inference_server.add("/sd", Reply(png_bytes(Image.new("RGB", (32, 24), (9, 9, 9))), content_type="image/png"))
    catalog = _catalog(tmp_path, tiny_catalog, {"id": "acme/painter", "task": "text-to-image", "endpoint": url})
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "text-to-image", "dep": [-1], "args": {"text": "a red house"}},
            {"id": 1, "task": "image-classification", "dep": [0], "args": {"image": "<GENERATED>-0"}},
        )
    )
    summary = run_request("Draw a red house, then tell me what the drawing shows", RunOptions(catalog=str(catalog)))
    assert summary.status == "completed", summary.error
    planned = llm.stage_requests("plan")[0]["messages"][0]["content"]
    assert "- text-to-image(text: text) -> image" in planned  # offered: a model can run it here
    drawn, classified = summary.results
    assert (drawn.model, drawn.backend) == ("acme/painter", "remote")
    assert Image.open(drawn.outputs["image"]).size == (32, 24)
    assert classified.backend == "local" and classified.outputs["text"]
    assert json.loads(inference_server.received("/sd")[0].body)["inputs"] == "a red house"


def test_remote_only_task_without_endpoint_is_not_offered_offline(env: Path, llm) -> None:
    llm.set(plan='{"tasks": []}')
    run_request("hello")
    planned = llm.stage_requests("plan")[0]["messages"][0]["content"]
    assert "text-to-video" not in planned and "- image-classification(" in planned


def test_text_to_video_through_an_inference_provider(
    env: Path, llm, tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, inference_server
) -> None:
    """Online, with a Hugging Face token: a text-to-video node runs through Inference Providers (the Hub's model API
    and the router answered on 127.0.0.1), its MP4 lands in storage, and a text-to-video candidate behind an
    endpoint URL (which the client cannot send text-to-video to) is removed before the choice."""
    point_hub_at(inference_server, monkeypatch)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    serve_video_model(inference_server, "acme/tiny-video", "novita")
    catalog = _catalog(
        tmp_path,
        tiny_catalog,
        {"id": "acme/tiny-video", "task": "text-to-video", "provider": "novita", "downloads": 10**10},
        {
            "id": "acme/video-endpoint",
            "task": "text-to-video",
            "endpoint": inference_server.url("/v"),
            "downloads": 10**11,
        },
    )
    llm.set(
        plan=plan_json({"id": 0, "task": "text-to-video", "dep": [-1], "args": {"text": "a cat surfing"}}),
        select=lambda body: json.dumps({"choices": [{"id": 0, "model": "acme/tiny-video", "reason": "fits"}]}),
    )
    summary = run_request("Make a short video of a cat surfing", RunOptions(catalog=str(catalog)))
    assert summary.status == "completed", summary.error
    planned = llm.stage_requests("plan")[0]["messages"][0]["content"]
    assert "- text-to-video(text: text) -> video" in planned
    for body in llm.stage_requests("select"):
        assert "acme/video-endpoint" not in body["messages"][-1]["content"]
    assert "acme/video-endpoint" not in summary.assignments[0].candidates
    (video,) = summary.results
    assert (video.model, video.backend) == ("acme/tiny-video", "remote")
    assert video.outputs["video"].endswith(".mp4") and Path(video.outputs["video"]).read_bytes() == MP4
    assert inference_server.received("/v") == []
    (sent,) = inference_server.received("/router/novita/v3/hf/novita-tiny-video")
    assert sent.json() == {"prompt": "a cat surfing"}
