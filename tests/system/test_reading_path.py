"""Following one request from ``hugginggpt run`` to ``summary.json``: the product files a reader goes through, those
on the call stack at each of the request's steps, stay few."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from flows.cli import main
from tasks.experts.local import LocalBackend
from tasks.experts.remote import RemoteBackend
from tasks.llm import FunctionModel
from tests.llm_server import plan_json

pytestmark = pytest.mark.usefixtures("prefect_server")

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = tuple(str(ROOT / part) + "/" for part in ("flows", "tasks", "models_catalog"))
MOST_FILES = 12


def _product_files(frame: FrameType | None) -> list[str]:
    """The product files on the stack under ``frame``, outermost first, each once."""
    files: list[str] = []
    while frame is not None:
        name = frame.f_code.co_filename
        if name.startswith(PRODUCT):
            rel = str(Path(name).relative_to(ROOT))
            if rel not in files:
                files.append(rel)
        frame = frame.f_back
    return files[::-1]


class StackRecorder:
    """Records the product files on the call stack at each step of a request: every call of the chat model (plan,
    selection, response), of an expert backend (a node's model), and of a product function handed a
    ``.../summary.json`` path.

    Work handed to another thread (a thread started, or a call submitted to a thread pool, as Prefect's task runner
    does) carries the files of the stack that handed it over, so a step's files are the whole way from the command
    to it: the way a reader follows."""

    def __init__(self) -> None:
        backends = {LocalBackend.run.__code__, RemoteBackend.run.__code__}
        self.codes = backends | {FunctionModel.chat.__code__, FunctionModel.stream.__code__}
        self.steps: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._patch = pytest.MonkeyPatch()

    def _chain(self, frame: FrameType | None) -> list[str]:
        chain = list(getattr(self._local, "parent", []))
        return chain + [f for f in _product_files(frame) if f not in chain]

    def _carry(self, chain: list[str], call: Callable[[], Any]) -> Any:
        before = getattr(self._local, "parent", [])
        self._local.parent = chain
        try:
            return call()
        finally:
            self._local.parent = before

    def _profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        code = frame.f_code
        if code in self.codes:
            step = code.co_name
        elif code.co_filename.startswith(PRODUCT) and any(
            isinstance(v, str) and v.endswith("/summary.json") for v in frame.f_locals.values()
        ):
            step = "summary.json"
        else:
            return
        files = self._chain(frame)
        with self._lock:
            self.steps.append((step, files))

    def __enter__(self) -> StackRecorder:
        recorder = self
        thread_start, thread_run, pool_submit = threading.Thread.start, threading.Thread.run, ThreadPoolExecutor.submit

        def start(thread: threading.Thread) -> None:
            thread._handed_from = recorder._chain(sys._getframe(1))  # type: ignore[attr-defined]
            thread_start(thread)

        def run(thread: threading.Thread) -> None:
            recorder._carry(getattr(thread, "_handed_from", []), lambda: thread_run(thread))

        def submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
            chain = recorder._chain(sys._getframe(1))
            return pool_submit(pool, lambda: recorder._carry(chain, lambda: fn(*args, **kwargs)))

        self._patch.setattr(threading.Thread, "start", start)
        self._patch.setattr(threading.Thread, "run", run)
        self._patch.setattr(ThreadPoolExecutor, "submit", submit)
        threading.setprofile(self._profile)  # threads started from now on
        sys.setprofile(self._profile)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)
        threading.setprofile(None)  # type: ignore[arg-type]
        self._patch.undo()

    def files(self) -> list[str]:
        seen: list[str] = []
        for _, files in self.steps:
            seen += [f for f in files if f not in seen]
        return seen


def test_one_request_is_followed_in_at_most_twelve_files(env: Path, llm, capsys) -> None:
    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "a lovely day"}}),
        select=json.dumps({"choices": [{"id": 0, "model": "tiny/text-classification-b", "reason": "fits"}]}),
        respond="It is positive.",
    )
    with StackRecorder() as recorder:
        assert main(["run", "Rate: a lovely day", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "It is positive."
    steps = [step for step, _ in recorder.steps]
    # every step was seen: the plan (streamed), the selection and the response, the node's model, the summary
    assert steps.count("stream") == 1 and steps.count("chat") == 2 and "run" in steps and "summary.json" in steps
    files = recorder.files()
    assert files[:2] == ["flows/cli.py", "flows/request.py"]
    for stage in ("tasks/plan.py", "tasks/select.py", "tasks/execute.py", "tasks/respond.py", "flows/artifacts.py"):
        assert stage in files
    assert len(files) <= MOST_FILES, "\n".join(f"{step}: {' -> '.join(chain)}" for step, chain in recorder.steps)
