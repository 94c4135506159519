"""``hugginggpt serve --deployment``: a request to the server becomes a run of the request deployment of
deployments/prefect.yaml, picked up by a real process worker in a process of its own; the server waits for its end
and answers with its summary, read back from storage."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from prefect.client.orchestration import get_client
from prefect.settings import get_current_settings

from flows.serve import Server, serving_in_background
from tasks.serving.config import ServeSettings
from tasks.settings import load_settings
from tests.paths import ROOT
from tests.waiting import wait_for

# runs go to workers in other processes
pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.llm_http]

KEY = "deploy-key-0123456789"
PLAN = [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "I loved it"}}]
PINS = {"text-classification": "tiny/text-classification"}


def _prefect(args: list[str], environ: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"


def test_a_request_to_the_server_runs_on_a_worker_of_the_deployment(env: Path, llm, tiny_catalog: Path) -> None:
    environ = dict(os.environ)
    environ.update(PREFECT_API_URL=str(get_current_settings().api.url), HUGGINGGPT_PROJECT_DIR=str(ROOT))
    environ.pop("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", None)
    _prefect(["work-pool", "create", "hugginggpt", "--type", "process", "--overwrite"], environ)
    _prefect(["--no-prompt", "deploy", "--prefect-file", "deployments/prefect.yaml", "--name", "request"], environ)
    llm.set(respond="Classified by a worker.")

    server = Server(load_settings(), ServeSettings(api_keys=[KEY]), deployment="hugginggpt-request/request")
    with get_client(sync_client=True) as prefect:
        before = {r.id for r in prefect.read_flow_runs()}
    with serving_in_background(server) as url, ThreadPoolExecutor(1) as pool:
        api = openai.OpenAI(base_url=url + "/v1", api_key=KEY, max_retries=0, timeout=300)
        stream = pool.submit(
            lambda: list(
                api.chat.completions.create(
                    model="hugginggpt",
                    messages=[{"role": "user", "content": "Is this review positive?"}],
                    stream=True,
                    extra_body={"plan": PLAN, "models": PINS},
                )
            )
        )

        def created() -> list:
            if stream.done():  # the request ended before any run: say how (the server's error, or its reply)
                raise AssertionError(f"the request ended before a run was created: {stream.result()}")
            with get_client(sync_client=True) as prefect:
                return [r for r in prefect.read_flow_runs() if r.id not in before and r.deployment_id is not None]

        # creating the run may wait out the Prefect client's retries of a busy SQLite API (2 + 4 + ... + 32 s)
        (flow_run,) = wait_for(created, timeout=180, what="the server created a run of the deployment")
        worker = subprocess.run(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "hugginggpt", "--run-once"],
            cwd=ROOT,
            env=environ,
            capture_output=True,
            text=True,
            timeout=300,
        )
        chunks = stream.result(300)
    events = [c.model_extra["hugginggpt"] for c in chunks if c.model_extra.get("hugginggpt")]
    answer = events[-1]
    assert answer["event"] == "answer", f"{events}\nworker said:\n{worker.stdout}\n{worker.stderr}"
    assert answer["status"] == "completed" and answer["flow_run_id"] == str(flow_run.id)
    assert "Classified by a worker." in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert ("node", "text-classification#0", "done") in [(e["event"], e.get("node"), e.get("state")) for e in events]
    assert flow_run.name.startswith("Is this review positive?")
    assert "hugginggpt-serve" in flow_run.tags
