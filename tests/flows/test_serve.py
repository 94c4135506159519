"""``hugginggpt serve``: the real server on a free port of 127.0.0.1, called with the official ``openai`` client and
plain HTTP. The controller is an in-process chat model given to the server (no LLM server); plans are explicit or
scripted, models tiny."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest

from flows.serve import Server, serving_in_background
from tasks.llm import ChatCall, FunctionModel
from tasks.services import Services
from tasks.serving.config import ServeSettings
from tasks.settings import load_settings

pytestmark = pytest.mark.usefixtures("prefect_server")

KEY = "test-key-0123456789"
CLASSIFY = [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "I loved it"}}]
SPEAK = [{"id": 0, "task": "text-to-speech", "dep": [-1], "args": {"text": "hello there"}}]
PINS = {"text-classification": "tiny/text-classification"}
SPEAK_PINS = {"text-to-speech": "tiny/text-to-speech"}


def answer_of(call: ChatCall) -> str:
    """The in-process controller: a plan for 'plan', nothing chosen for 'select', and an answer naming the
    request's first word for 'respond', so two requests get two different answers."""
    text = json.dumps([m.get("content", "") for m in call.messages])
    if call.stage == "plan":
        return json.dumps({"tasks": CLASSIFY})
    if call.stage == "select":
        return '{"choices": []}'
    for word in ("alpha", "beta", "gamma", "speak", "photo"):
        if word in text:
            return f"The answer about {word}."
    return "An answer."


@pytest.fixture
def chat_model() -> FunctionModel:
    return FunctionModel(answer_of)


def _server(env: Path, chat_model: Any, **serve: Any) -> Server:
    settings = load_settings()
    limits = {"api_keys": [KEY], "serve_max_in_flight": 4, "serve_max_runs": 4, **serve}
    return Server(settings, ServeSettings(**limits), services=Services(settings, chat_model=chat_model))


@pytest.fixture
def served(env: Path, tiny_catalog: Path, chat_model: FunctionModel) -> Iterator[tuple[str, Server]]:
    server = _server(env, chat_model, serve_max_body_bytes=64 * 1024, serve_max_upload_bytes=256 * 1024)
    with serving_in_background(server) as url:
        yield url, server


def client(url: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=120)


def test_models_and_a_plain_completion_per_request(served: tuple[str, Server]) -> None:
    url, _ = served
    api = client(url)
    assert [m.id for m in api.models.list()] == ["hugginggpt"]
    replies = [
        api.chat.completions.create(
            model="hugginggpt",
            messages=[{"role": "user", "content": f"Classify the review, {word}"}],
            extra_body={"plan": CLASSIFY, "models": PINS},
        )
        for word in ("alpha", "beta")
    ]
    answers = [r.choices[0].message.content.split("\n\nFiles:\n")[0] for r in replies]
    assert answers == ["The answer about alpha.", "The answer about beta."]
    assert "[result.json](http://127.0.0.1:" in replies[0].choices[0].message.content  # the node's JSON, linked
    infos = [r.model_extra["hugginggpt"] for r in replies]
    assert infos[0]["flow_run_id"] != infos[1]["flow_run_id"]
    assert [i["status"] for i in infos] == ["completed", "completed"]
    assert infos[0]["results"][0]["node"] == "text-classification#0"
    assert infos[0]["results"][0]["text"]  # the label the tiny model gave


def test_a_streamed_completion_shows_the_plan_and_nodes_before_the_answer(served: tuple[str, Server]) -> None:
    url, _ = served
    stream = client(url).chat.completions.create(
        model="hugginggpt",
        messages=[
            {"role": "user", "content": "earlier question"},
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": "Read this aloud: speak"},
        ],
        stream=True,
        extra_body={"plan": SPEAK, "models": SPEAK_PINS},
    )
    events, text = [], ""
    for chunk in stream:
        text += chunk.choices[0].delta.content or "" if chunk.choices else ""
        if chunk.model_extra.get("hugginggpt"):
            events.append(chunk.model_extra["hugginggpt"])
    kinds = [(e["event"], e.get("node"), e.get("state")) for e in events]
    plan = kinds.index(("plan", None, None))
    running = kinds.index(("node", "text-to-speech#0", "running"))
    done = kinds.index(("node", "text-to-speech#0", "done"))
    answer = kinds.index(("answer", None, None))
    assert plan < running < done < answer == len(kinds) - 1
    assert "✓ text-to-speech#0 done" in text and text.rstrip().endswith(")")  # the audio file's link ends it
    assert "The answer about speak." in text
    assert [f["modality"] for f in events[-1]["files"]] == ["audio"]


def test_an_uploaded_image_is_an_input(served: tuple[str, Server], sample_files: dict[str, Path]) -> None:
    url, _ = served
    api = client(url)
    uploaded = api.files.create(file=("photo.png", sample_files["photo"].read_bytes()), purpose="user_data")
    assert uploaded.id.startswith("file-") and uploaded.filename == "photo.png"
    plan = [{"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "photo.png"}}]
    reply = api.chat.completions.create(
        model="hugginggpt",
        messages=[{"role": "user", "content": f"What is in {uploaded.id}? (photo)"}],
        extra_body={"plan": plan, "models": {"image-classification": "tiny/image-classification"}},
    )
    info = reply.model_extra["hugginggpt"]
    assert info["status"] == "completed", info
    assert info["plan"][0]["args"]["image"].endswith(f"uploads/{uploaded.id}/photo.png")
    with pytest.raises(openai.NotFoundError, match="no file"):
        api.chat.completions.create(
            model="hugginggpt", messages=[{"role": "user", "content": "What is in file-0123456789abcdef?"}]
        )


def test_keys_sizes_and_errors(served: tuple[str, Server]) -> None:
    url, _ = served
    with pytest.raises(openai.AuthenticationError):
        client(url, key="wrong-key-0000").models.list()
    no_key = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    assert no_key.status_code == 401 and "API key" in no_key.json()["error"]["message"]
    api = client(url)
    with pytest.raises(openai.APIStatusError) as big:
        api.chat.completions.create(model="hugginggpt", messages=[{"role": "user", "content": "x" * 70_000}])
    assert big.value.status_code == 413
    with pytest.raises(openai.APIStatusError) as big_file:
        api.files.create(file=("big.bin", b"0" * 300_000), purpose="user_data")
    assert big_file.value.status_code == 413
    broken = httpx.post(url + "/v1/chat/completions", content=b"{not json", headers={"Authorization": f"Bearer {KEY}"})
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in broken.text


def test_past_the_limit_of_requests_in_flight_a_key_gets_429(env: Path, tiny_catalog: Path) -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(call: ChatCall) -> str:
        if call.stage == "respond":
            entered.set()
            release.wait(60)
        return answer_of(call)

    server = _server(env, FunctionModel(slow), serve_max_in_flight=1)
    with serving_in_background(server) as url, ThreadPoolExecutor(1) as pool:
        api = client(url)
        first = pool.submit(
            api.chat.completions.create,
            model="hugginggpt",
            messages=[{"role": "user", "content": "alpha"}],
            extra_body={"plan": []},
        )
        assert entered.wait(60)
        with pytest.raises(openai.RateLimitError, match="in flight"):
            api.chat.completions.create(model="hugginggpt", messages=[{"role": "user", "content": "beta"}])
        release.set()
        assert first.result(60).choices[0].message.content == "The answer about alpha."
        # the slot is free again
        again = api.chat.completions.create(
            model="hugginggpt", messages=[{"role": "user", "content": "gamma"}], extra_body={"plan": []}
        )
        assert again.choices[0].message.content == "The answer about gamma."


def test_a_file_link_works_until_it_expires_and_not_when_altered(served: tuple[str, Server], env: Path) -> None:
    url, server = served
    reply = client(url).chat.completions.create(
        model="hugginggpt",
        messages=[{"role": "user", "content": "speak"}],
        extra_body={"plan": SPEAK, "models": SPEAK_PINS},
    )
    (audio,) = reply.model_extra["hugginggpt"]["files"]
    link = audio["url"]
    got = httpx.get(link)
    assert got.status_code == 200 and got.headers["content-type"].startswith("audio/")
    path = urlsplit(link).path.removeprefix("/files/")
    assert got.content == (env / path).read_bytes()
    query = parse_qs(urlsplit(link).query)
    exp, sig = query["exp"][0], query["sig"][0]
    altered_sig = httpx.get(f"{url}/files/{path}?exp={exp}&sig={'0' * len(sig)}")
    altered_exp = httpx.get(f"{url}/files/{path}?exp={int(exp) + 1}&sig={sig}")
    other_file = httpx.get(f"{url}/files/{path.rsplit('/', 1)[0]}/node.json?exp={exp}&sig={sig}")
    expired = httpx.get(server.signer.link(path, base_url=url, now=time.time() - server.signer.seconds - 1))
    outside = httpx.get(f"{url}/files/../{path}?exp={exp}&sig={sig}")
    for refused in (altered_sig, altered_exp, other_file, expired):
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["code"] == "invalid_link"
    assert "expired" in expired.json()["error"]["message"]
    assert outside.status_code in (403, 404)


def test_the_input_policy_of_the_cli_applies(env: Path, tiny_catalog: Path, chat_model: FunctionModel) -> None:
    settings = load_settings().with_overrides(allow_private_urls=False)
    server = Server(settings, ServeSettings(), services=Services(settings, chat_model=chat_model))
    with serving_in_background(server) as url, pytest.raises(openai.BadRequestError) as refused:
        client(url, key="none").chat.completions.create(
            model="hugginggpt",
            messages=[{"role": "user", "content": "Describe http://127.0.0.1:9/secret.png"}],
        )
    assert "127.0.0.1" in str(refused.value) and refused.value.body["code"] == "input_refused"


def test_the_jarvis_endpoints(served: tuple[str, Server], env: Path) -> None:
    url, _ = served
    auth = {"Authorization": f"Bearer {KEY}"}
    messages = {"messages": [{"role": "user", "content": "Classify: alpha"}]}

    def runs() -> set[str]:
        return {p.name for p in env.iterdir()} if env.exists() else set()

    runs_before = runs()
    tasks = httpx.post(url + "/tasks", json=messages, headers=auth, timeout=60)
    assert tasks.status_code == 200
    assert tasks.json() == [{"task": "text-classification", "id": 0, "dep": [-1], "args": {"text": "I loved it"}}]
    assert runs() == runs_before  # planning only: no run  # planning only: no run
    answer = httpx.post(url + "/hugginggpt", json={**messages, "models": PINS}, headers=auth, timeout=120)
    assert answer.status_code == 200 and answer.json()["message"].startswith("The answer about alpha.\n\nFiles:")
    results = httpx.post(url + "/results", json={**messages, "models": PINS}, headers=auth, timeout=120).json()
    assert list(results) == ["0"]
    assert results["0"]["task"]["task"] == "text-classification"
    assert results["0"]["choose model result"]["id"] == "tiny/text-classification"
    assert results["0"]["inference result"]["text"] and results["0"]["status"] == "completed"
    assert "message" not in results


@pytest.mark.slow
def test_fifty_concurrent_requests_are_fifty_flow_runs(env: Path, tiny_catalog: Path, chat_model: Any) -> None:
    """Explicit empty plans (the answer only): what is measured is the server and the flow runs, not models."""
    server = _server(env, chat_model, serve_max_in_flight=50, serve_max_runs=8)
    with serving_in_background(server) as url, ThreadPoolExecutor(50) as pool:
        api = client(url)

        def ask(i: int) -> Any:
            return api.chat.completions.create(
                model="hugginggpt",
                messages=[{"role": "user", "content": f"Request {i}: alpha"}],
                extra_body={"plan": []},
            )

        replies = list(pool.map(ask, range(50)))
    infos = [r.model_extra["hugginggpt"] for r in replies]
    assert [i["status"] for i in infos] == ["completed"] * 50
    ids = {i["flow_run_id"] for i in infos}
    assert len(ids) == 50
    assert all((env / run_id / "summary.json").is_file() for run_id in ids)
    assert all(r.choices[0].message.content == "The answer about alpha." for r in replies)


def test_serve_refuses_to_listen_beyond_this_machine_without_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from flows.cli import main

    monkeypatch.delenv("HUGGINGGPT_API_KEYS", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--port", "8123"]) == 2
    assert "HUGGINGGPT_API_KEYS" in capsys.readouterr().err


def test_with_a_public_url_the_summary_artifact_links_files_through_the_server(
    env: Path, tiny_catalog: Path, chat_model: FunctionModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from tests.prefect_api import api_until

    secret = "shared-secret-0123456789"
    monkeypatch.setenv("HUGGINGGPT_PUBLIC_URL", "https://hugginggpt.example")
    monkeypatch.setenv("HUGGINGGPT_FILE_SECRET", secret)
    server = _server(env, chat_model)
    with serving_in_background(server) as url:
        reply = client(url).chat.completions.create(
            model="hugginggpt",
            messages=[{"role": "user", "content": "speak"}],
            extra_body={"plan": SPEAK, "models": SPEAK_PINS},
        )
        info = reply.model_extra["hugginggpt"]
        assert info["files"][0]["url"].startswith("https://hugginggpt.example/files/")
        by_run = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[info["flow_run_id"]]))
        keys = {"hugginggpt-request-summary", "hugginggpt-request-text-to-speech-audio"}
        artifacts = api_until(
            lambda prefect: prefect.read_artifacts(artifact_filter=by_run),
            lambda found: keys <= {a.key for a in found},
            what=f"the artifacts {sorted(keys)}",
        )
        summary = next(a for a in artifacts if a.key == "hugginggpt-request-summary")
        link_artifact = next(a for a in artifacts if a.key == "hugginggpt-request-text-to-speech-audio")
        assert "](https://hugginggpt.example/files/" in str(summary.data)
        link = re.search(r"\((https://hugginggpt\.example/files/[^)]+)\)", str(link_artifact.data))
        assert link is not None, link_artifact.data
        # the flow signed it with the shared secret: the server opens it
        opened = httpx.get(url + link.group(1).removeprefix("https://hugginggpt.example"))
        assert opened.status_code == 200 and opened.headers["content-type"].startswith("audio/")
