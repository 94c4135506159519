"""The README's main command on real weights from the Hugging Face Hub: ``pytest -m online``.

Skipped when the Hub cannot be reached (the rest of the suite is offline). The LLM is the scripted server on
127.0.0.1 (planning the README's two tasks, choosing among the recommended candidates, answering); the experts are
the recommended models the selection picks, downloaded into the Hugging Face cache on first use:
``Salesforce/blip-image-captioning-base`` (BLIP, about 1 GB) and ``facebook/mms-tts-eng`` (VITS, about 150 MB).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.llm_server import plan_json
from tests.paths import ROOT

pytestmark = [pytest.mark.online, pytest.mark.llm_http]  # the CLI runs in another process

REQUEST = "Describe photo.jpg, then read the description aloud"
CAPTIONER = "Salesforce/blip-image-captioning-base"
SPEAKER = "facebook/mms-tts-eng"


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


@pytest.fixture(scope="module")
def hub_reachable() -> None:
    import httpx

    try:
        httpx.head(f"{_hub_endpoint()}/api/models/{SPEAKER}", timeout=5.0, follow_redirects=True).raise_for_status()
    except httpx.HTTPError as exc:
        pytest.skip(f"the Hugging Face Hub cannot be reached ({exc})")


def test_readme_main_command_on_real_weights(
    hub_reachable: None, llm, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from prefect.settings import PREFECT_API_URL

    request.getfixturevalue("prefect_server")  # started only once the Hub is known to answer

    photo = tmp_path / "photo.jpg"
    shutil.copy(ROOT / "deployments" / "examples" / "photo.jpg", photo)
    llm.set(
        plan=plan_json(
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": str(photo)}},
            {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
        ),
        select=json.dumps(
            {
                "choices": [
                    {"id": 0, "model": CAPTIONER, "reason": "recommended captioner"},
                    {"id": 1, "model": SPEAKER, "reason": "recommended speech"},
                ]
            }
        ),
        respond="Described and read aloud.",
    )
    environment = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HUGGINGGPT_INFERENCE_MODE": "local",
        "HUGGINGGPT_STORAGE": str(tmp_path / "runs"),
    }
    environment.pop("HUGGINGGPT_CATALOG", None)  # the built-in catalog, as a user gets it
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", REQUEST, "--input", str(photo), "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert [(a["task"], a["model"], a["backend"]) for a in summary["assignments"]] == [
        ("image-to-text", CAPTIONER, "local"),
        ("text-to-speech", SPEAKER, "local"),
    ]
    caption, speech = summary["results"]
    assert caption["status"] == "completed" and len(caption["outputs"]["text"].split()) >= 2
    wav = Path(speech["outputs"]["audio"])
    assert speech["status"] == "completed" and wav.read_bytes()[:4] == b"RIFF" and wav.stat().st_size > 10_000


def test_readme_main_command_with_the_embedded_controller(
    hub_reachable: None, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """No LLM configured, as on a fresh machine: the embedded controller (downloaded on first use) plans, selects
    and answers."""
    from prefect.settings import PREFECT_API_URL

    request.getfixturevalue("prefect_server")
    photo = tmp_path / "photo.jpg"
    shutil.copy(ROOT / "deployments" / "examples" / "photo.jpg", photo)
    environment = {
        **os.environ,
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HUGGINGGPT_STORAGE": str(tmp_path / "runs"),
    }
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "HUGGINGGPT_CATALOG", "HUGGINGGPT_LOCAL_LLM"):
        environment.pop(name, None)
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", REQUEST, "--input", str(photo), "--json"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=3600,
        cwd=tmp_path,
    )
    assert "controller:" in proc.stderr, proc.stderr[-4000:]  # says once which controller it uses
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)
    assert summary["answer"].strip() and summary["llm"]["calls"] >= 2
    assert all(r["status"] == "completed" for r in summary["results"])
