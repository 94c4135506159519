"""The request flow deployed from deployments/prefect.yaml and run by a real process worker.

A deployed run starts from the bare flow in a new process, with only the worker's environment and the
deployment's parameters: whatever the settings say (nodes at once, where Prefect keeps results) must be built by
the flow itself. Two independent nodes fetch their inputs from a server that holds each request until both have
arrived (or a few seconds have passed), so the order of arrivals and answers shows whether they ran at once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from prefect.deployments import run_deployment
from prefect.settings import get_current_settings

from flows.batch import read_summary
from tests.paths import ROOT
from tests.web_server import WebServer

# runs go to workers in other processes
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.llm_http]

HOLD = 25.0  # seconds a request waits for the other (a run process starting on a busy machine; fetches time out at 30)
#: When the nodes must run one at a time, how long the first request is held to show the other does not arrive
#: meanwhile. Both nodes are submitted together in the same process, so at the width of 2 the other one arrives
#: within this; past it the first is answered and the other may come.
ALONE = 5.0
PLAN = [
    {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": "a.png"}},
    {"id": 1, "task": "image-classification", "dep": [-1], "args": {"image": "b.png"}},
]
PINS = {"image-classification": "tiny/image-classification"}


def _prefect(args: list[str], environ: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def deployed(env: Path, llm) -> dict[str, str]:
    """The request deployment of deployments/prefect.yaml, on its process work pool; returns the environment a
    worker gets (the test's, with the Prefect API of the test server)."""
    environ = dict(os.environ)
    environ.update(PREFECT_API_URL=str(get_current_settings().api.url), HUGGINGGPT_PROJECT_DIR=str(ROOT))
    environ.pop("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", None)
    _prefect(["work-pool", "create", "hugginggpt", "--type", "process", "--overwrite"], environ)
    _prefect(
        ["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "request"],
        environ,
    )
    llm.set(respond="Both photos classified.")
    return environ


def _run_deployed(
    environ: dict[str, str], web: WebServer, photo: bytes, options: dict[str, Any], hold: float = HOLD
) -> tuple[Any, Any]:
    """Trigger one deployed run, let one worker pick it up and run it in a process of its own, wait for the end."""
    barrier = web.barrier(["/a.png", "/b.png"], photo, hold)
    flow_run = run_deployment(
        "hugginggpt-request/request",
        parameters={
            "spec": {
                "request": "Classify a.png and b.png",
                "inputs": [web.url("/a.png"), web.url("/b.png")],
                "plan": PLAN,
                "models": PINS,
            },
            "options": options,
        },
        timeout=0,
    )
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "hugginggpt", "--run-once"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )
    summary = read_summary(str(flow_run.id))
    assert summary is not None, f"no summary.json for {flow_run.id}; worker said:\n{worker.stdout}\n{worker.stderr}"
    return summary, barrier


@pytest.mark.slow
def test_a_deployed_run_honours_the_settings_of_its_worker(
    deployed: dict[str, str], web: WebServer, sample_files: dict[str, Path], tmp_path: Path
) -> None:
    photo = sample_files["photo"].read_bytes()
    results = tmp_path / "prefect-results"
    one_at_a_time = dict(deployed, HUGGINGGPT_MAX_WORKERS="1", HUGGINGGPT_RESULTS_STORAGE=str(results))

    summary, barrier = _run_deployed(one_at_a_time, web, photo, {"cache": False}, hold=ALONE)
    assert summary.status == "completed", summary.error
    assert [r.status for r in summary.results] == ["completed", "completed"]
    kinds = [kind for kind, _ in barrier.events]
    assert kinds == ["arrived", "answered", "arrived", "answered"], barrier.events  # one node, then the other
    # Prefect's results of this run (both nodes and the run's summary) are where HUGGINGGPT_RESULTS_STORAGE says
    records = [json.loads(p.read_text()) for p in results.iterdir() if p.is_file()]
    assert sum("tasks.schemas.NodeResult" in json.dumps(r) for r in records) == 2
    assert any(summary.flow_run_id in json.dumps(r) and "tasks.schemas.RunSummary" in json.dumps(r) for r in records)

    default_width = dict(deployed)
    default_width.pop("HUGGINGGPT_MAX_WORKERS", None)
    summary, barrier = _run_deployed(default_width, web, photo, {"cache": False})
    assert summary.status == "completed", summary.error
    kinds = [kind for kind, _ in barrier.events]
    assert kinds == ["arrived", "arrived", "answered", "answered"], barrier.events  # both at once


@pytest.mark.slow
def test_a_deployed_run_takes_its_options_from_the_deployment_parameters(
    deployed: dict[str, str], web: WebServer, sample_files: dict[str, Path]
) -> None:
    """The same width, set by a parameter of the run rather than the worker's environment."""
    photo = sample_files["photo"].read_bytes()
    summary, barrier = _run_deployed(deployed, web, photo, {"cache": False, "max_workers": 1}, hold=ALONE)
    assert summary.status == "completed", summary.error
    assert [kind for kind, _ in barrier.events] == ["arrived", "answered", "arrived", "answered"], barrier.events
