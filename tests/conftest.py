"""Fixtures that start the real components: Prefect's test server, a scripted OpenAI-compatible
server on 127.0.0.1, and tiny random models saved to disk. Nothing reaches the network."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.services import override
from tests.fake_hub import FakeHub
from tests.llm_server import ScriptedLLM
from tests.web_server import WebServer

#: The environment of the whole suite, set before any test module is imported (``pytest_configure``) and restored
#: when pytest ends: offline, so any attempt to reach the Hub fails instead of downloading, and the Hub's answers
#: not kept (each test asks its own stand-in).
SUITE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HUGGINGGPT_HUB_INFO_TTL": "0",
}
#: Unset for the suite: the endpoint, token, catalog or storage of the shell that runs it never reaches a test.
SUITE_UNSET = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HF_TOKEN", "HUGGINGGPT_CATALOG", "HUGGINGGPT_STORAGE")

_suite_environment = pytest.MonkeyPatch()


def pytest_configure(config: pytest.Config) -> None:
    for name, value in SUITE_ENVIRONMENT.items():
        _suite_environment.setenv(name, value)
    for name in SUITE_UNSET:
        _suite_environment.delenv(name, raising=False)


def pytest_unconfigure(config: pytest.Config) -> None:
    _suite_environment.undo()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The long tests (marked ``slow``) first: the suite runs on two workers (``-n 2`` in pyproject.toml), and a
    long test started last would run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def _inputs_from_test_folders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Tests give inputs from pytest's temporary folders and from servers on 127.0.0.1 (and memory://): allow them
    for the suite. tests/system/test_security.py checks the default, refusing behaviour with these unset."""
    with pytest.MonkeyPatch.context() as suite:
        suite.setenv("HUGGINGGPT_INPUT_ROOTS", json.dumps([str(tmp_path_factory.getbasetemp())]))
        suite.setenv("HUGGINGGPT_ALLOW_PRIVATE_URLS", "true")
        suite.setenv("HUGGINGGPT_ALLOWED_URL_SCHEMES", "http,https,memory")
        yield


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def _llm_server() -> Iterator[ScriptedLLM]:
    server = ScriptedLLM().start()
    yield server
    server.stop()


@pytest.fixture
def llm_http(_llm_server: ScriptedLLM, monkeypatch: pytest.MonkeyPatch) -> ScriptedLLM:
    """The scripted LLM over HTTP, reset, with the environment pointing at it: for tests where the wire matters
    (HTTP faults and retries, streaming through the OpenAI client, a CLI or worker in another process, the served
    API's threads)."""
    _llm_server.reset()
    monkeypatch.setenv("OPENAI_BASE_URL", _llm_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    monkeypatch.setenv("HUGGINGGPT_LLM_MODEL", "scripted")
    monkeypatch.setenv("HUGGINGGPT_LLM_MAX_RETRIES", "0")
    monkeypatch.setenv("HUGGINGGPT_LLM_TIMEOUT", "10")
    return _llm_server


@pytest.fixture
def llm(request: pytest.FixtureRequest) -> Iterator[ScriptedLLM]:
    """The scripted LLM, fresh: in process, given to every run inside the test by :func:`tasks.services.override`
    (threads of Prefect task runs included), with no server and no environment variable.

    A test marked ``@pytest.mark.llm_http`` (or that asks for ``llm_http``) gets the HTTP server instead."""
    if request.node.get_closest_marker("llm_http") is not None or "llm_http" in request.fixturenames:
        yield request.getfixturevalue("llm_http")
        return
    scripted = ScriptedLLM()
    with override(chat_model=scripted.chat_model()):
        yield scripted


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny_models import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_catalog(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog file with one tiny model per task, plus a second text-classification candidate."""
    from tests.tiny_models import tiny_catalog_entries

    entries = tiny_catalog_entries(tiny_models)
    second = dict(next(e for e in entries if e["task"] == "text-classification"))
    second.update(id="tiny/text-classification-b", downloads=10, description="second tiny sentiment model")
    entries.append(second)
    path = tmp_path_factory.mktemp("catalog") / "catalog.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return path


@pytest.fixture
def env(llm: ScriptedLLM, tiny_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """LLM, catalog and a fresh storage folder configured through the environment; returns the storage folder."""
    storage = tmp_path / "runs"
    monkeypatch.setenv("HUGGINGGPT_CATALOG", str(tiny_catalog))
    monkeypatch.setenv("HUGGINGGPT_STORAGE", str(storage))
    return storage


@pytest.fixture(scope="session")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A photo (PNG) and a one-second WAV to feed the models."""
    import numpy as np
    import soundfile as sf
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    img = Image.new("RGB", (64, 48), (200, 120, 40))
    for x in range(10, 30):
        for y in range(10, 30):
            img.putpixel((x, y), (20, 40, 220))
    photo = root / "photo.png"
    img.save(photo)
    t = np.linspace(0, 1, 16000, endpoint=False)
    speech = root / "speech.wav"
    sf.write(speech, (0.3 * np.sin(2 * np.pi * 440 * t)).astype("float32"), 16000)
    return {"photo": photo, "speech": speech}


@pytest.fixture
def web(tmp_path: Path, sample_files: dict[str, Path]) -> Iterator[WebServer]:
    """A plain HTTP server on 127.0.0.1 serving a folder that holds the sample photo as ``photo.png``."""
    root = tmp_path / "www"
    root.mkdir()
    shutil.copy(sample_files["photo"], root / "photo.png")
    server = WebServer(root)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def _fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub().start()
    yield hub
    hub.stop()


@pytest.fixture
def hub(_fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The stand-in for the Hub's HTTP API, empty and answering at once, with huggingface_hub online and pointed at
    it (a test module may define a ``hub`` of its own)."""
    from huggingface_hub import constants

    _fake_hub.models.clear()
    _fake_hub.requests.clear()
    _fake_hub.info_delay = 0.0
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", _fake_hub.url)
    return _fake_hub
