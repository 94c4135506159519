"""What every benchmark shares: an offline environment, Prefect's own API, the scripted LLM, catalogs, and a
sleeping expert that stands in for a model.

Everything is real except the expert: the request flow runs under a Prefect API started for the bench
(``prefect_test_harness``), the LLM stages talk HTTP to an OpenAI-compatible server on 127.0.0.1, and every
output goes to a temporary storage folder. The sleeping expert is not a task type: it replaces, in the bench
process only, the local backend the executor asks for (:func:`sleeping_experts`), so plans stay ordinary
plans of the task table.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import log
from bench.api import flush_prefect_workers, quiet_prefect_console

#: Environment set before anything imports transformers, huggingface_hub or prefect: nothing may reach the network.
OFFLINE_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}


def set_offline() -> None:
    os.environ.update(OFFLINE_ENV)


set_offline()

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # ``tests`` (the scripted LLM, tiny models) sits beside ``bench``
    sys.path.insert(0, str(_ROOT))


# ---------------------------------------------------------------------------
# the sleeping expert
# ---------------------------------------------------------------------------
class SleepBackend:
    """An expert backend whose every run sleeps ``seconds`` (releasing the GIL, as a model call on an
    accelerator or a remote endpoint would) and returns a short text and JSON output naming its input.

    It records the wall-clock span of every run, so a benchmark can check that independent nodes overlapped.
    """

    name = "local"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.spans: list[tuple[str, float, float]] = []
        self._lock = threading.Lock()

    def run(self, task: str, model: Any, inputs: Mapping[str, Any]) -> Any:
        from tasks.experts.base import ExpertOutput

        start = time.perf_counter()
        if self.seconds > 0:
            time.sleep(self.seconds)
        end = time.perf_counter()
        with self._lock:
            self.spans.append((task, start, end))
        text = str(inputs.get("text", ""))
        return ExpertOutput(text=f"{task} of [{text[-60:]}]", json={"task": task, "chars": len(text)})


@contextlib.contextmanager
def sleeping_experts(seconds: float) -> Iterator[SleepBackend]:
    """Within the block, every node the executor runs locally goes to a :class:`SleepBackend` (this process only:
    :func:`tasks.services.override`)."""
    from tasks.services import override

    backend = SleepBackend(seconds)
    with override(local_backend=backend):
        yield backend


def reset_local_backends() -> None:
    """Drop the process-wide local backends (and the models their caches hold)."""
    import gc

    from tasks.shared import built, clear

    for backend in built("local-backend"):
        cache = getattr(backend, "cache", None)
        if cache is not None:
            cache.clear()
    clear("local-backend")
    gc.collect()


class Sampler:
    """Samples this process's RSS (and ``probe()``, e.g. a cache's size) every ``every`` seconds in a thread."""

    def __init__(self, probe: Callable[[], int] = lambda: 0, every: float = 0.02) -> None:
        import psutil

        self._process = psutil.Process()
        self._probe = probe
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-rss-sampler", daemon=True)
        self.samples: list[tuple[float, int, int]] = []
        self.start_rss = 0

    def rss(self) -> int:
        return int(self._process.memory_info().rss)

    def _sample(self) -> None:
        self.samples.append((time.perf_counter(), self.rss(), int(self._probe())))

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self._every)

    def __enter__(self) -> Sampler:
        self.start_rss = self.rss()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def peak_rss(self) -> int:
        return max(s[1] for s in self.samples)

    @property
    def peak_probe(self) -> int:
        return max(s[2] for s in self.samples)


# ---------------------------------------------------------------------------
# catalogs
# ---------------------------------------------------------------------------
def catalog_record(model_id: str, task: str, local_path: Path, *, downloads: int = 0) -> dict[str, Any]:
    from tasks.experts.local import PROVEN_ARCHITECTURES

    return {
        "id": model_id,
        "task": task,
        "downloads": downloads,
        "likes": 0,
        "tags": ["bench"],
        "description": f"benchmark model for {task}",
        "local_path": str(Path(local_path).resolve()),
        # the folder holds no config.json (the experts that stand in for it sleep): record an architecture the
        # local backend is proven to run for the task
        "architecture": min(PROVEN_ARCHITECTURES[task]),
    }


def write_catalog(path: Path, records: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(dict(r)) + "\n" for r in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------
# the environment of one bench process
# ---------------------------------------------------------------------------
@dataclass
class Bench:
    """What a benchmark runs against; made by :func:`bench_environment`."""

    root: Path
    llm: Any
    quick: bool = False
    postgres: bool = True
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack, repr=False)
    shared: dict[str, Any] = field(default_factory=dict, repr=False)  # what one benchmark leaves for another
    _counter: int = field(default=0, repr=False)
    _postgres_url: str | None = field(default=None, repr=False)
    _postgres_error: str | None = field(default=None, repr=False)

    def fresh_dir(self, name: str) -> Path:
        """A new empty folder under the bench's temporary root."""
        self._counter += 1
        folder = self.root / f"{self._counter:03d}-{name}"
        folder.mkdir(parents=True)
        return folder

    def storage(self, name: str = "runs") -> str:
        return str(self.fresh_dir(name))

    def postgres_api(self) -> str | None:
        """The URL of a Prefect API on PostgreSQL (started on first use, kept until the bench ends), or ``None``
        when PostgreSQL is not installed here or was turned off."""
        if not self.postgres or self._postgres_error is not None:
            return None
        if self._postgres_url is None:
            from bench.servers import find_postgres, postgres_prefect_api

            if find_postgres() is None:
                self._postgres_error = "PostgreSQL is not installed"
                return None
            log("starting a PostgreSQL cluster and a Prefect API on it")
            try:
                self._postgres_url = self.stack.enter_context(postgres_prefect_api(switch=False))
            except Exception as exc:
                self._postgres_error = f"{type(exc).__name__}: {exc}"
                log(f"no PostgreSQL-backed API: {self._postgres_error}")
                return None
        return self._postgres_url

    @property
    def postgres_error(self) -> str | None:
        return self._postgres_error


def counting_llm() -> Any:
    """The scripted OpenAI-compatible server, also recording the token usage of every reply it sends."""
    from tests.llm_server import ScriptedLLM

    class CountingLLM(ScriptedLLM):
        def __init__(self) -> None:
            super().__init__()
            self.usage: list[tuple[str, int, int]] = []  # (stage, prompt tokens, completion tokens) per reply

        def reset(self) -> None:
            super().reset()
            with self._lock:
                self.usage.clear()

        def _answer(self, body: dict[str, Any], stage: str) -> tuple[int, dict[str, Any]]:
            status, payload = super()._answer(body, stage)
            if status == 200:
                used = payload["usage"]
                with self._lock:
                    self.usage.append((stage, used["prompt_tokens"], used["completion_tokens"]))
            return status, payload

        def tokens(self, stage: str | None = None) -> tuple[int, int]:
            """(prompt, completion) tokens of the replies sent, for one stage or all."""
            with self._lock:
                rows = [u for u in self.usage if stage is None or u[0] == stage]
            return sum(r[1] for r in rows), sum(r[2] for r in rows)

    return CountingLLM()


@contextlib.contextmanager
def bench_environment(*, quick: bool = False, postgres: bool = True, keep: bool = False) -> Iterator[Bench]:
    """Prefect's API for this process, the scripted LLM, a temporary root, and the environment pointing at them."""
    from prefect.testing.utilities import prefect_test_harness

    from flows.prefect_setup import prefect_run_settings

    root = Path(tempfile.mkdtemp(prefix="hugginggpt-bench-"))
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    llm = counting_llm().start()
    os.environ.update(
        {
            "OPENAI_BASE_URL": llm.base_url,
            "OPENAI_API_KEY": "sk-bench-not-a-real-key",
            "HUGGINGGPT_LLM_MODEL": "scripted",
            "HUGGINGGPT_LLM_MAX_RETRIES": "0",
            "HUGGINGGPT_LLM_TIMEOUT": "30",
            "HUGGINGGPT_STORAGE": str(root / "default-runs"),
        }
    )
    for var in ("HUGGINGGPT_CATALOG", "HF_TOKEN"):
        os.environ.pop(var, None)
    quiet_transformers()
    try:
        log("starting Prefect's API for this process (10-20 s)")
        t0 = time.perf_counter()
        with prefect_test_harness(server_startup_timeout=90), prefect_run_settings():
            quiet_prefect_console()
            log(f"Prefect API up in {time.perf_counter() - t0:.1f} s")
            bench = Bench(root=root, llm=llm, quick=quick, postgres=postgres)
            with bench.stack:
                yield bench
            flush_prefect_workers()
    finally:
        llm.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def quiet_transformers() -> None:
    """No progress bars from transformers on the bench's stderr."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(Exception):
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()


_ENV_KEYS = (
    "OPENAI_BASE_URL",
    "OPENAI_API_KEY",
    "HUGGINGGPT_LLM_MODEL",
    "HUGGINGGPT_LLM_MAX_RETRIES",
    "HUGGINGGPT_LLM_TIMEOUT",
    "HUGGINGGPT_STORAGE",
    "HUGGINGGPT_CATALOG",
    "HUGGINGGPT_MAX_WORKERS",
    "HUGGINGGPT_MAX_MODELS",
    "HF_TOKEN",
)


@contextlib.contextmanager
def env_vars(**values: str | None) -> Iterator[None]:
    """Environment variables set (or removed, with ``None``) within the block."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------
# running the request flow
# ---------------------------------------------------------------------------
@dataclass
class FlowRun:
    """One run of the request flow as the caller saw it."""

    wall: float
    summary: Any
    state_name: str

    @property
    def ok(self) -> bool:
        return self.summary is not None and self.summary.status == "completed"

    def stage(self, name: str) -> float:
        return float(self.summary.timings.get(name, 0.0)) if self.summary is not None else 0.0


def run_flow(
    request: str,
    *,
    storage: str,
    catalog: Path | None = None,
    plan: Sequence[Any] | None = None,
    models: Mapping[str, str] | None = None,
    max_workers: int = 4,
    inputs: Sequence[str] = (),
    stream_plan: bool | None = None,
) -> FlowRun:
    """Run ``hugginggpt-request`` once (a thread pool of ``max_workers`` for its nodes) and time it from the
    caller's side: flow run creation, every stage, and the final state. ``stream_plan``: start nodes while the plan
    streams (``None``: the setting's default)."""
    from flows.request import hugginggpt_request, summary_of
    from tasks.schemas import PlanNode, RequestSpec, RunSummary
    from tasks.settings import RunOptions

    nodes = [n if isinstance(n, PlanNode) else PlanNode.model_validate(n) for n in plan] if plan is not None else None
    with env_vars(
        HUGGINGGPT_MAX_WORKERS=str(max_workers),
        HUGGINGGPT_STORAGE=storage,
        HUGGINGGPT_CATALOG=str(catalog) if catalog else None,
        # orchestration alone: the stand-in experts load nothing (prefetch is measured by bench/coldstart.py)
        HUGGINGGPT_PREFETCH="false",
        HUGGINGGPT_STREAM_PLAN=None if stream_plan is None else str(stream_plan).lower(),
    ):
        t0 = time.perf_counter()
        state = hugginggpt_request(
            RequestSpec(request=request, inputs=list(inputs), models=dict(models or {}), plan=nodes),
            RunOptions(storage=storage, catalog=str(catalog) if catalog else None),
            return_state=True,
        )
        value = summary_of(state)
        wall = time.perf_counter() - t0
    summary = value if isinstance(value, RunSummary) else None
    return FlowRun(wall=wall, summary=summary, state_name=state.name)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value
