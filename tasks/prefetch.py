"""Models ready before their nodes: download and load the plan's local models while upstream nodes run.

Without this, a node downloads and loads its model only once its upstream nodes are done, so a chain pays every
download and load one after another. With it:

- while the selection call is still running, :func:`start_candidate_downloads` downloads the top-ranked runnable
  candidate of each planned task into the Hugging Face cache (no load; a model the LLM does not choose stays in
  the cache for later);
- as soon as selection has chosen, :func:`prefetch_models` downloads every local Hub model of the plan at once
  (one thread per model) and loads them, one after another in node order (transformers loads one model at a time
  per process), into the model cache of the run's local backend (:class:`tasks.services.Services`). Each load is
  announced to the cache (:meth:`~tasks.experts.cache.ModelCache.expect`), so a node whose model is still on its
  way waits for that one model only, and never loads it a second time.

Loads are bounded: at most ``HUGGINGGPT_MAX_MODELS`` models (the cache size: loading more would evict the first
before their nodes ran) and, when ``HUGGINGGPT_MAX_LOCAL_PARAMS`` is set, models whose known sizes add up to no
more than it; the plan's other models are only downloaded. A prefetch never evicts a model: it loads only into
free room in the cache (in a process serving many requests at once, a full cache keeps the models other requests
are using, and the nodes load their own models as they come). A prefetch that fails is silent: the node loads the
model itself and reports the error under its own name.

Under Dask (``HUGGINGGPT_TASK_RUNNER=dask``) nodes run in worker processes, whose model caches the flow process
cannot fill: the flow only downloads (which serves workers that share its Hugging Face cache, i.e. on the same
machine); workers keep their loaded models from one flow run to the next, and :mod:`flows.runners` sends each
node to a worker that already holds its model.

:func:`plan_prefetch` is the pure core; the other functions start background threads and return at once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from tasks.experts.base import ModelSpec
from tasks.experts.cache import ModelCache
from tasks.schemas import Assignment, PlanNode
from tasks.settings import Settings
from tasks.task_types import normalize_task_name

if TYPE_CHECKING:
    from tasks.availability import Availability

logger = logging.getLogger(__name__)

#: Weight formats transformers does not load (other frameworks, exports): never downloaded ahead.
IGNORED_WEIGHTS: tuple[str, ...] = (
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.ot",
    "*.tflite",
    "*.gguf",
    "*.mlmodel",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.onnx_data",
    "*.tar.gz",
    "*.zip",
    "onnx/*",
    "openvino/*",
    "coreml/*",
)


#: While a prefetch thread downloads or loads a model: the nodes it is for, as ``(flow run id, node names)``, so that
#: progress reporting can show the libraries' download and loading bars against those nodes.
FETCHING_FOR: ContextVar[tuple[str, tuple[str, ...]] | None] = ContextVar("fetching_for", default=None)


@dataclass(frozen=True)
class PrefetchPlan:
    """What to fetch ahead: ``(task, model)`` to load, in node order, and models to download (the Hub ones)."""

    load: list[tuple[str, ModelSpec]] = field(default_factory=list)
    download: list[ModelSpec] = field(default_factory=list)


def plan_prefetch(
    assignments: Iterable[Assignment],
    *,
    max_models: int,
    max_params: int | None = None,
    sizes: Callable[[ModelSpec], int | None] | None = None,
    load: bool = True,
) -> PrefetchPlan:
    """The plan's local models, each once, in node order: the first ``max_models`` to load (while their known
    sizes, from ``sizes``, add up to no more than ``max_params``), and every Hub model among them to download
    (a model with a local folder needs no download). With ``load=False`` nothing is loaded."""
    seen: set[tuple[str, str, str | None]] = set()
    to_load: list[tuple[str, ModelSpec]] = []
    to_download: list[ModelSpec] = []
    downloading: set[tuple[str, str | None]] = set()
    params = 0
    for assignment in assignments:
        if assignment.backend != "local":
            continue
        spec = assignment.spec
        key = (normalize_task_name(assignment.task), spec.source, spec.revision)
        if key in seen:
            continue
        seen.add(key)
        if not spec.local_path and (spec.id, spec.revision) not in downloading:
            downloading.add((spec.id, spec.revision))
            to_download.append(spec)
        if not load or len(to_load) >= max_models:
            continue
        size = sizes(spec) if sizes is not None and max_params is not None else None
        if max_params is not None and size is not None and params + size > max_params:
            continue
        params += size or 0
        to_load.append((key[0], spec))
    return PrefetchPlan(load=to_load, download=to_download)


@dataclass
class Prefetch:
    """The background work one call started: a future per download (by model id) and per load (by cache key)."""

    downloads: dict[tuple[str, str | None], Future[str | None]] = field(default_factory=dict)
    loads: dict[Any, Future[Any]] = field(default_factory=dict)

    def wait(self, timeout: float | None = None) -> None:
        """Block until every download and load has ended (successfully or not)."""
        from concurrent.futures import wait

        wait([*self.downloads.values(), *self.loads.values()], timeout=timeout)


def download(spec: ModelSpec, token: str | None = None) -> str | None:
    """Download ``spec``'s repository into the Hugging Face cache (weights transformers would not load left out);
    its local folder, or ``None`` when the Hub is offline or the download failed (the node will say why)."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.constants import is_offline_mode

    if spec.local_path or is_offline_mode():
        return spec.local_path
    try:
        files = [s.rfilename for s in HfApi().model_info(spec.id, revision=spec.revision, token=token).siblings or []]
        ignore = list(IGNORED_WEIGHTS)
        if any(f.endswith(".safetensors") for f in files):
            ignore.append("*.bin")  # transformers prefers safetensors: the PyTorch pickles would be dead weight
        return snapshot_download(spec.id, revision=spec.revision, token=token, ignore_patterns=ignore)
    except Exception as exc:
        logger.info("prefetch: could not download %s: %s: %s", spec.id, type(exc).__name__, exc)
        return None


#: The nodes each model is fetched for: ``(model id, revision) -> (flow run id, node names)``.
Owners = Mapping[tuple[str, str | None], tuple[str, tuple[str, ...]]]


def owners_of(flow_run_id: str, assignments: Iterable[Assignment]) -> dict[tuple[str, str | None], tuple[str, ...]]:
    """Which nodes of the run each model is for (see :data:`FETCHING_FOR`)."""
    names: dict[tuple[str, str | None], list[str]] = {}
    for a in assignments:
        names.setdefault((a.spec.id, a.spec.revision), []).append(f"{a.task}#{a.node_id}")
    return {model: (flow_run_id, tuple(nodes)) for model, nodes in names.items()}  # type: ignore[misc]


def _for_nodes(owner: tuple[str, tuple[str, ...]] | None, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` with :data:`FETCHING_FOR` naming the nodes it works for."""
    mark = FETCHING_FOR.set(owner)
    try:
        return fn(*args)
    finally:
        FETCHING_FOR.reset(mark)


def start_downloads(specs: Sequence[ModelSpec], *, token: str | None = None, owners: Owners | None = None) -> Prefetch:
    """Download every one of ``specs`` at once, in background threads."""
    prefetch = Prefetch()
    if not specs:
        return prefetch
    owners = owners or {}
    pool = ThreadPoolExecutor(max_workers=len(specs), thread_name_prefix="prefetch-download")
    for spec in specs:
        model = (spec.id, spec.revision)
        prefetch.downloads[model] = pool.submit(_for_nodes, owners.get(model), download, spec, token)
    pool.shutdown(wait=False)
    return prefetch


class LoadingBackend(Protocol):
    """What :func:`start_prefetch` needs of a local backend (:class:`~tasks.experts.local.LocalBackend`)."""

    cache: ModelCache
    device: str

    def load(self, task: str, model: ModelSpec) -> Any: ...


def start_prefetch(
    plan: PrefetchPlan,
    backend: LoadingBackend,
    *,
    token: str | None = None,
    owners: Owners | None = None,
) -> Prefetch:
    """Start ``plan``: all downloads at once, then the loads one after another in order, each after its own
    download, into ``backend``'s cache (each announced to the cache so that a node waits for it)."""
    owners = owners or {}
    prefetch = start_downloads(plan.download, token=token, owners=owners)
    if not plan.load:
        return prefetch
    cache: ModelCache = backend.cache
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch-load")
    for task, spec in plan.load:
        key = (task, spec.source, spec.revision, backend.device)
        if key in cache:
            continue
        fetched = prefetch.downloads.get((spec.id, spec.revision))
        owner = owners.get((spec.id, spec.revision))
        future = loader.submit(_for_nodes, owner, _load, backend, cache, key, task, spec, fetched)
        cache.expect(key, future)
        prefetch.loads[key] = future
    loader.shutdown(wait=False)
    return prefetch


def _load(
    backend: LoadingBackend, cache: ModelCache, key: Any, task: str, spec: ModelSpec, fetched: Future[str | None] | None
) -> bool:
    if fetched is not None:
        fetched.result()
    if key not in cache and len(cache) >= cache.max_models:
        logger.info("prefetch: not loading %s: the model cache is full, and a prefetch evicts nothing", spec.id)
        return False
    try:
        with cache.fulfilling(key):
            backend.load(task, spec)
    except Exception as exc:
        logger.info("prefetch: could not load %s for %s: %s", spec.id, task, exc)
        return False
    return True


# ---------------------------------------------------------------------------
# what the request flow calls
# ---------------------------------------------------------------------------
def _token(settings: Settings) -> str | None:
    return settings.hf_token.get_secret_value() if settings.hf_token else None


def prefetch_models(
    settings: Settings, assignments: Sequence[Assignment], backend: Callable[[], Any], flow_run_id: str | None = None
) -> Prefetch:
    """Start fetching the plan's local models as the settings allow (see the module doc) into the run's local backend
    (``backend()`` gives it); returns at once. Never raises: a prefetch that cannot start (a backend that cannot be
    built, or keeps no models) leaves each node to load its own model."""
    from tasks.memory_budget import local_budget
    from tasks.sizing import size_hint

    try:
        plan = plan_prefetch(
            assignments,
            max_models=settings.max_models,
            max_params=local_budget(settings)[0],
            sizes=size_hint,
            load=settings.task_runner != "dask",
        )
        owners = owners_of(flow_run_id, assignments) if flow_run_id else {}
        if not plan.load:
            return start_downloads(plan.download, token=_token(settings), owners=owners)
        local = backend()
        if not isinstance(getattr(local, "cache", None), ModelCache):  # a backend that keeps no models
            return start_downloads(plan.download, token=_token(settings), owners=owners)
        return start_prefetch(plan, local, token=_token(settings), owners=owners)
    except Exception as exc:
        logger.warning("prefetch not started: %s: %s", type(exc).__name__, exc)
        return Prefetch()


def candidate_downloads(available: Availability, nodes: Sequence[PlanNode], pins: Mapping[str, str]) -> list[ModelSpec]:
    """The model each planned task would most likely get: its pinned model, else its top-ranked runnable
    candidate, when that runs locally from the Hub (no local folder)."""
    specs: list[ModelSpec] = []
    for task in dict.fromkeys(n.task for n in nodes):
        if task in pins:
            entry = available.catalog.get(task, pins[task])
            picked = [(entry, available.choose(entry.spec())[0])] if entry is not None else []
        else:
            picked = available.runnable(task, limit=1)[0]
        specs += [e.spec() for e, backend in picked if backend == "local" and not e.spec().local_path]
    return specs


def start_candidate_downloads(
    settings: Settings, available: Availability, nodes: Sequence[PlanNode], pins: Mapping[str, str]
) -> Prefetch:
    """Download :func:`candidate_downloads` in the background (call it just before the selection call)."""
    from huggingface_hub.constants import is_offline_mode

    if is_offline_mode() or not nodes:
        return Prefetch()
    try:
        specs = candidate_downloads(available, nodes, pins)
    except Exception as exc:  # a bad catalog: selection reports it under its own name
        logger.info("prefetch: no candidates to download: %s", exc)
        return Prefetch()
    return start_downloads(specs, token=_token(settings))
