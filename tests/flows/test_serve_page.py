"""The chat page at ``/`` in headless Chromium: a two-turn conversation (a dropped photo and its depth map, then the
description read aloud) against the real server, checked in the DOM. Skipped where Chromium is not installed."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.serve import Server, serving_in_background
from tasks.llm import FunctionModel
from tasks.services import Services
from tasks.serving.config import ServeSettings
from tasks.settings import load_settings
from tests.chat_page import chromium, chromium_path, page_controller, two_turns

pytestmark = [
    pytest.mark.usefixtures("prefect_server"),
    pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install -y chromium)"),
]
KEY = "page-key-0123456789"


def test_the_page_shows_the_plan_the_nodes_and_the_outputs(
    env: Path, tiny_catalog: Path, sample_files: dict[str, Path]
) -> None:
    settings = load_settings()
    model = FunctionModel(page_controller)
    server = Server(settings, ServeSettings(api_keys=[KEY]), services=Services(settings, chat_model=model))
    with serving_in_background(server) as url, chromium() as page:
        two_turns(page, url, KEY, sample_files["photo"].read_bytes())
        turns = page.evaluate(
            """[...document.querySelectorAll('.msg.assistant')].map((m) => ({
                status: m.dataset.status,
                text: m.querySelector('.text').textContent,
                nodes: [...m.querySelectorAll('.plan li[data-node]')].map((li) => [li.dataset.node, li.dataset.state]),
                images: [...m.querySelectorAll('.output img')].map((i) => [i.getAttribute('src'), i.naturalWidth]),
                audio: [...m.querySelectorAll('.output audio')].map((a) => [a.getAttribute('src'), a.duration]),
                run: m.querySelector('.meta').textContent,
            }))"""
        )
        user = page.evaluate("[...document.querySelectorAll('.msg.user .text')].map((t) => t.textContent)")
    assert user == ["Show the depth of photo.png", "Now read the description aloud"]
    first, second = turns
    assert first["status"] == second["status"] == "completed"
    assert first["text"] == "Here is the depth map of photo.png: nearer parts are brighter."
    assert second["text"] == "Here is the description, read aloud."
    assert first["nodes"] == [["depth-estimation#0", "done"]]
    assert second["nodes"] == [["text-to-speech#0", "done"]]
    ((image_src, width),) = first["images"]
    assert "/files/" in image_src and "sig=" in image_src and width > 0  # the depth map, loaded through its link
    assert first["audio"] == [] and second["images"] == []
    ((audio_src, duration),) = second["audio"]
    assert "/files/" in audio_src and duration > 0  # a playable player
    assert "flow run" in first["run"] and first["run"] != second["run"]
    # the second turn was planned with the first as history
    plan_calls = [c for c in model.calls if c.stage == "plan"]
    assert "nearer parts are brighter" in str(plan_calls[-1].messages)
    assert "nearer parts are brighter" not in str(plan_calls[0].messages)
