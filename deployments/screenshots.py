"""Screenshots of the Prefect UI showing HuggingGPT runs: a request's graph, its summary artifact, a batch run.

    python deployments/screenshots.py --out screenshots/

Starts a real ``prefect server`` on 127.0.0.1 (its own PREFECT_HOME, SQLite), the scripted OpenAI-compatible
server of the tests and tiny random models (nothing reaches the network), then runs through the ``hugginggpt``
command, against that server:

1. a request whose plan has completed nodes, a failed one and its skipped dependent;
2. the same request again with one more node: its successful nodes are reused (Cached, named ``... (cached)``), the
   new one runs (Completed);
3. a batch of three lines;

and takes headless-Chromium screenshots (Debian's ``chromium``) of the first run's graph, its summary artifact,
the second run's graph and two of its task runs (one Cached, one Skipped), the batch run, and the summary key's
history (every run's summary under one key).
Needs the test helpers (``tests/``) of a checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--hide-scrollbars",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(api: str, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"prefect server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"prefect server at {api} not healthy after {timeout:g} s")


def _api(api: str, path: str, body: dict[str, Any]) -> Any:
    request = urllib.request.Request(
        f"{api}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _hugginggpt(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "flows.cli", *args, "--json"]
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    sys.stderr.write(proc.stderr)
    return json.loads(proc.stdout)


def screenshot(url: str, out: Path, *, size: str = "1600,1000", wait_ms: int = 30000, attempts: int = 3) -> Path:
    """A PNG of ``url`` taken by headless Chromium after ``wait_ms`` of (virtual) time for the page's scripts.

    The UI fetches its data after the page has loaded, and on a busy machine a shot can come before the data (an
    empty panel) or mid fade-in: of ``attempts`` shots the one with the most content (the largest PNG) is kept.
    """
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise RuntimeError("chromium is not installed (Debian: apt-get install chromium)")
    best = b""
    for _ in range(attempts):
        with tempfile.TemporaryDirectory() as profile:
            shot = Path(profile) / "shot.png"
            subprocess.run(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={profile}",
                    f"--window-size={size}",
                    f"--virtual-time-budget={wait_ms}",
                    f"--screenshot={shot}",
                    url,
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
            data = shot.read_bytes()
        if len(data) > len(best):
            best = data
    out.write_bytes(best)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="folder for the PNGs")
    parser.add_argument("--port", type=int, default=0, help="port of the Prefect server (default: a free one)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)

    sys.path.insert(0, str(ROOT))
    from tests.llm_server import ScriptedLLM, plan_json
    from tests.tiny_models import build_tiny_models, tiny_catalog_entries

    work = Path(tempfile.mkdtemp(prefix="hugginggpt-screens-"))
    port = args.port or _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_API_URL": api,  # set before the server starts: its UI reads it
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HUGGINGGPT_STORAGE": str(work / "runs"),
        "HUGGINGGPT_INPUT_ROOTS": str(work),
        "HUGGINGGPT_ALLOW_PRIVATE_URLS": "true",
        "HUGGINGGPT_LLM_MODEL": "scripted",
        "OPENAI_API_KEY": "sk-screenshots",
        "COLUMNS": "200",
    }
    print(f"building tiny models in {work}", file=sys.stderr)
    models = build_tiny_models(work / "models")
    catalog = work / "catalog.jsonl"
    catalog.write_text("".join(json.dumps(e) + "\n" for e in tiny_catalog_entries(models)), encoding="utf-8")
    env["HUGGINGGPT_CATALOG"] = str(catalog)
    from PIL import Image, ImageDraw

    photo = work / "photo.png"
    image = Image.new("RGB", (160, 120), (235, 190, 120))
    ImageDraw.Draw(image).ellipse((40, 20, 120, 100), fill=(40, 90, 200))
    image.save(photo)

    llm = ScriptedLLM().start()
    env["OPENAI_BASE_URL"] = llm.base_url
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shots: list[Path] = []
    try:
        _wait_healthy(api, server)
        unreachable = "http://127.0.0.1:9/gone.png"
        nodes = [
            {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": str(photo)}},
            {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
            {"id": 2, "task": "image-classification", "dep": [-1], "args": {"image": str(photo)}},
            {"id": 3, "task": "image-segmentation", "dep": [-1], "args": {"image": str(photo)}},
            {"id": 4, "task": "object-detection", "dep": [-1], "args": {"image": unreachable}},
            {"id": 5, "task": "image-to-text", "dep": [4], "args": {"image": "<GENERATED>-4"}},
        ]
        answer = (
            "The photo shows a blue circle on a sand-coloured background; its caption was read aloud. "
            "The second picture could not be fetched, so its objects were not detected."
        )
        llm.set(plan=plan_json(*nodes), respond=answer)
        request = f"Caption {photo.name} and read it aloud, classify and segment it, and find objects in gone.png"
        inputs = ["--input", str(photo), "--input", unreachable]
        first = _hugginggpt(["run", request, *inputs], env, work)
        # the same again, and one new node: its reused nodes end Cached, the new one runs (Completed)
        rate = {"id": 6, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}
        llm.set(plan=plan_json(*nodes, rate), respond=answer)
        second = _hugginggpt(["run", request + ", and rate 'what a lovely day'", *inputs], env, work)

        requests = work / "requests.jsonl"
        lines = [
            {"id": f"photo-{n}", "request": f"Classify {photo.name}", "inputs": [str(photo)]} for n in range(1, 3)
        ] + [{"id": "review", "request": "Is 'what a lovely day' positive?"}]
        requests.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
        llm.set(
            plan=lambda body: plan_json(
                {"id": 0, "task": "image-classification", "dep": [-1], "args": {"image": str(photo)}}
                if "photo" in json.dumps(body)
                else {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}
            ),
            respond="Done.",
        )
        batch = _hugginggpt(["batch", str(requests), "--max-in-flight", "1"], env, work)

        ui = f"http://127.0.0.1:{port}"
        summary_artifact = _api(
            api, "/artifacts/filter", {"artifacts": {"key": {"any_": ["hugginggpt-request-summary"]}}, "limit": 5}
        )
        first_artifact = next(a for a in summary_artifact if a["flow_run_id"] == first["flow_run_id"])
        shots.append(screenshot(f"{ui}/runs/flow-run/{first['flow_run_id']}", out / "request-graph.png"))
        shots.append(
            screenshot(
                f"{ui}/artifacts/artifact/{first_artifact['id']}", out / "summary-artifact.png", size="1400,2000"
            )
        )
        shots.append(screenshot(f"{ui}/runs/flow-run/{second['flow_run_id']}", out / "request-cached-graph.png"))
        task_runs = _api(api, "/task_runs/filter", {"flow_runs": {"id": {"any_": [second["flow_run_id"]]}}})
        for name, file in (("image-to-text#0 (cached)", "cached-node.png"), ("image-to-text#5", "skipped-node.png")):
            task_run = next(t for t in task_runs if t["name"] == name)
            shots.append(screenshot(f"{ui}/runs/task-run/{task_run['id']}", out / file))
        shots.append(screenshot(f"{ui}/runs/flow-run/{batch['flow_run_id']}", out / "batch-run.png"))
        shots.append(
            screenshot(f"{ui}/artifacts/key/hugginggpt-request-summary", out / "summary-history.png", wait_ms=60000)
        )
    finally:
        server.terminate()
        server.wait(timeout=60)
        llm.stop()
    for shot in shots:
        print(f"{shot} ({shot.stat().st_size // 1024} KB)")
    print(f"runs: request {first['flow_run_id']}, again {second['flow_run_id']}, batch {batch['flow_run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
