"""Stage 3, execution of one node: resolve its inputs, run its model (falling back to the next candidate when one
fails), store its outputs.

:func:`execute_node` is the core (no Prefect); :func:`run_node` is the Prefect task
the flow submits once per node, named after it, with its upstream futures.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.states import Cancelled, Completed, Failed, State

from tasks import timebound
from tasks.experts.base import (
    Audio,
    CannotRunHereError,
    Chooser,
    ExpertBackend,
    ExpertError,
    ExpertInputs,
    ExpertOutput,
)
from tasks.experts.cache import track_model_wait
from tasks.inputs import InputError, InputPolicy, decode, read_input_bytes
from tasks.parsing import clip
from tasks.result_cache import ResultCache, digest_bytes, digest_text, node_cache_key
from tasks.schemas import CACHED_SUFFIX, GENERATED_RE, Assignment, Attempt, ModelSpec, NodeResult, PlanNode
from tasks.services import services_for
from tasks.settings import Settings
from tasks.storage import ArtifactStore, StorageError, read_uri
from tasks.task_types import FILE_MODALITIES, TASK_TYPES, Modality

logger = logging.getLogger(__name__)

_FILE_NAMES = {
    Modality.IMAGE: "image.png",
    Modality.AUDIO: "audio.wav",
    Modality.VIDEO: "video.mp4",
    Modality.JSON: "result.json",
    Modality.TABLE: "table.csv",
}


# --- falling back to the next candidate when a model fails ----------------------------------------------------
# :func:`run_with_fallback` runs the candidates in order until one works, recording every attempt; which backend
# runs each candidate (or none) is the ``choose`` function's answer, from :mod:`tasks.availability`.
# Skipped candidates (``choose`` says no backend can run them, or loading one ran out of memory:
# :class:`~tasks.experts.base.CannotRunHereError`) are recorded as attempts with ``skipped=True`` and the reason, and
# are not counted against ``max_attempts``: the bound is on models actually tried (loaded and run), which is what
# costs time.


class AllCandidatesFailed(ExpertError):
    """No candidate of a node could run; ``attempts`` says what happened to each."""

    def __init__(self, task: str, attempts: Sequence[Attempt], untried: int = 0) -> None:
        self.task = task
        self.attempts = list(attempts)
        self.untried = untried
        if not self.attempts:
            message = f"no model candidates for {task}"
        else:
            lines = "; ".join(f"{n}) {a.describe()}" for n, a in enumerate(self.attempts, 1))
            message = f"every model candidate for {task} failed: {lines}"
        if untried:
            message += f"; {untried} more not tried (attempt limit reached)"
        super().__init__(message)


def run_with_fallback(
    task: str,
    candidates: Sequence[ModelSpec],
    inputs: ExpertInputs,
    *,
    backends: Mapping[str, ExpertBackend],
    choose: Chooser,
    max_attempts: int,
    local_timeout: float | None = None,
) -> tuple[ExpertOutput, list[Attempt]]:
    """Run ``task`` with the first candidate that works, in order; return its output and every attempt.

    With ``local_timeout``, a candidate run by the local backend (loading its model included) that has no result
    after that many seconds fails with an error naming ``HUGGINGGPT_MODEL_TIMEOUT``, and the next one is tried.

    A candidate ``choose`` rejects is recorded as skipped (not counted against ``max_attempts``); one whose backend
    raises is recorded with the error and the next is tried, until ``max_attempts`` candidates have been run.
    Raises :class:`AllCandidatesFailed` (an :class:`ExpertError`) listing every attempt when none works.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    attempts: list[Attempt] = []
    tried = 0
    for index, spec in enumerate(candidates):
        if tried >= max_attempts:
            raise AllCandidatesFailed(task, attempts, untried=len(candidates) - index)
        backend_name, reason = choose(spec)
        if backend_name is None:
            attempts.append(Attempt(model=spec.id, ok=False, error=reason, skipped=True))
            continue
        backend = backends.get(backend_name)
        if backend is None:
            attempts.append(
                Attempt(
                    model=spec.id, backend=backend_name, error=f"no {backend_name} backend is configured", skipped=True
                )
            )
            continue
        tried += 1
        start = time.perf_counter()
        try:
            output = _run_bounded(backend, backend_name, task, spec, inputs, local_timeout)
        except CannotRunHereError as exc:  # e.g. out of memory while loading: as if ``choose`` had said no
            tried -= 1
            attempts.append(
                Attempt(
                    model=spec.id,
                    backend=backend_name,
                    error=f"cannot run here: {exc}",
                    seconds=time.perf_counter() - start,
                    skipped=True,
                )
            )
            continue
        except Exception as exc:
            error = str(exc) if isinstance(exc, ExpertError) else f"{type(exc).__name__}: {exc}"
            attempts.append(
                Attempt(model=spec.id, backend=backend_name, error=error, seconds=time.perf_counter() - start)
            )
            continue
        attempts.append(Attempt(model=spec.id, backend=backend_name, ok=True, seconds=time.perf_counter() - start))
        output.extra.setdefault("model", spec.id)
        output.extra.setdefault("backend", backend_name)
        output.extra["attempts"] = [a.model_dump() for a in attempts]
        return output, attempts
    raise AllCandidatesFailed(task, attempts)


def _run_bounded(
    backend: ExpertBackend,
    backend_name: str,
    task: str,
    spec: ModelSpec,
    inputs: ExpertInputs,
    local_timeout: float | None,
) -> ExpertOutput:
    if local_timeout is None or backend_name != "local":
        return backend.run(task, spec, inputs)
    return timebound.within(
        local_timeout,
        lambda: backend.run(task, spec, inputs),
        f"{task} with {spec.id}",
        lambda: ExpertError(
            f"{spec.id} did not load and run {task} within {local_timeout:g} s (HUGGINGGPT_MODEL_TIMEOUT)"
        ),
    )


class UpstreamMissingError(RuntimeError):
    """A ``<GENERATED>-k`` could not be resolved from node k's outputs."""


# ---------------------------------------------------------------------------
# resolving inputs
# ---------------------------------------------------------------------------
def _upstream_output(result: NodeResult, modality: Modality) -> str:
    value = result.outputs.get(str(modality))
    if value is None:
        have = ", ".join(result.outputs) or "nothing"
        raise UpstreamMissingError(
            f"task {result.id} ({result.task}) produced no {modality} output (it produced {have})"
        )
    return value


def resolve_args(
    node: PlanNode,
    upstream: Mapping[int, NodeResult],
    store: ArtifactStore | None = None,
    *,
    input_timeout: float | None = None,
    input_policy: InputPolicy | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each argument of ``node`` as the value its model takes (``<GENERATED>-k`` replaced by node k's output),
    and the content digest of each (what the result cache keys on). Inputs the node names itself are read under
    ``input_policy`` (default: the current settings'; see :mod:`tasks.inputs`)."""
    tt = TASK_TYPES[node.task]
    values: dict[str, Any] = {}
    digests: dict[str, str] = {}
    for name, raw in node.args.items():
        spec = tt.arg(name)
        modality = spec.modality if spec else Modality.TEXT
        refs = [int(k) for k in GENERATED_RE.findall(raw)]
        if modality in FILE_MODALITIES:
            if refs:
                ref = _upstream_output(upstream[refs[0]], modality)
                data = store.read_bytes(ref) if store is not None else read_uri(ref)
            else:
                ref = raw
                data = read_input_bytes(raw, timeout=input_timeout, policy=input_policy)
            values[name] = decode(data, modality, ref)
            digests[name] = digest_bytes(data)
        else:
            text = GENERATED_RE.sub(lambda m: _upstream_output(upstream[int(m.group(1))], Modality.TEXT), raw)
            values[name] = text
            digests[name] = digest_text(text)
    return values, digests


# ---------------------------------------------------------------------------
# storing outputs
# ---------------------------------------------------------------------------
def encode_output(modality: Modality, value: Any) -> bytes:
    if modality == Modality.IMAGE:
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    if modality == Modality.AUDIO:
        import soundfile as sf

        assert isinstance(value, Audio)
        buf = io.BytesIO()
        sf.write(buf, value.array, value.sampling_rate, format="WAV", subtype="PCM_16")
        return buf.getvalue()
    if modality == Modality.JSON:
        return json.dumps(value, indent=2, ensure_ascii=False, default=_json_default).encode("utf-8")
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def store_outputs(node: PlanNode, output: ExpertOutput, store: ArtifactStore) -> dict[str, str]:
    """Text inline; every other produced modality written to the node's folder, referred to by URI."""
    folder = node_folder(node)
    outputs: dict[str, str] = {}
    for modality in TASK_TYPES[node.task].outputs:
        value = getattr(output, str(modality), None)
        if value is None:
            continue
        if modality == Modality.TEXT:
            outputs["text"] = str(value)
        else:
            outputs[str(modality)] = store.put_bytes(
                f"{folder}/{_FILE_NAMES[modality]}", encode_output(modality, value)
            )
    return outputs


# ---------------------------------------------------------------------------
# the core
# ---------------------------------------------------------------------------
def _now() -> datetime:
    return datetime.now(UTC)


def execute_node(
    node: PlanNode,
    assignment: Assignment | None,
    upstream: Mapping[int, NodeResult],
    store: ArtifactStore,
    backend: ExpertBackend | Mapping[str, ExpertBackend],
    *,
    unassigned_reason: str | None = None,
    input_timeout: float | None = None,
    input_policy: InputPolicy | None = None,
    cache: ResultCache | None = None,
    cache_params: Mapping[str, Any] | None = None,
    choose: Chooser | None = None,
    max_attempts: int = 1,
    model_timeout: float | None = None,
) -> NodeResult:
    """Run one node; never raises for the node's own failures: they come back as a failed result.

    With ``cache``, a node whose task, model and input contents match an earlier completed node reuses
    that node's outputs; a completed node is recorded for later ones. Each finished node's result is
    also written beside its files (``nodes/{id}-{task}/node.json``), which is what a resume reads.
    """
    started = _now()
    t0 = time.perf_counter()
    base = {"id": node.id, "task": node.task, "model": assignment.model if assignment else None, "started_at": started}

    blocked = [upstream[d] for d in node.dep if d in upstream and upstream[d].status != "completed"]
    missing = [d for d in node.dep if d not in upstream]
    if blocked or missing:
        why = "; ".join(
            [f"task {r.id} ({r.task}) {r.status}" for r in blocked] + [f"task {d} has no result" for d in missing]
        )
        return NodeResult(**base, status="skipped", error=f"skipped because upstream {why}", finished_at=_now())
    if assignment is None:
        return NodeResult(
            **base, status="failed", error=unassigned_reason or "no model was assigned", finished_at=_now()
        )
    key: str | None = None
    try:
        inputs, digests = resolve_args(node, upstream, store, input_timeout=input_timeout, input_policy=input_policy)
        if cache is not None:
            key = node_cache_key(node, assignment, digests, cache_params or {})
            hit = cache.lookup(key)
            if hit is not None:
                logger.info("%s: reusing the outputs of run %s", node.name, hit.run_id)
                return NodeResult(
                    **base,
                    status="completed",
                    outputs=hit.result.outputs,
                    seconds=time.perf_counter() - t0,
                    finished_at=_now(),
                    cached=True,
                    reused_from=hit.run_id,
                    cache_key=key,
                )
        backends = backend if isinstance(backend, Mapping) else {assignment.backend: backend}
        output, attempts = run_with_fallback(
            node.task,
            [assignment.spec, *assignment.fallbacks],
            inputs,
            backends=backends,
            choose=choose or (lambda spec: (assignment.backend, "as assigned")),
            max_attempts=max(1, max_attempts),
            local_timeout=model_timeout,
        )
        ran = next(a for a in reversed(attempts) if a.ok)
        base.update(model=ran.model, backend=ran.backend, attempts=attempts)
        outputs = store_outputs(node, output, store)
    except AllCandidatesFailed as exc:
        error = str(exc) if len(exc.attempts) > 1 else (exc.attempts[0].error if exc.attempts else str(exc))
        return NodeResult(
            **base,
            status="failed",
            error=error or str(exc),
            attempts=exc.attempts,
            seconds=time.perf_counter() - t0,
            finished_at=_now(),
        )
    except (ExpertError, InputError, StorageError, UpstreamMissingError) as exc:
        return NodeResult(**base, status="failed", error=str(exc), seconds=time.perf_counter() - t0, finished_at=_now())
    except Exception as exc:
        logger.exception("task %s failed unexpectedly", node.name)
        return NodeResult(
            **base,
            status="failed",
            error=f"{type(exc).__name__}: {exc}",
            seconds=time.perf_counter() - t0,
            finished_at=_now(),
        )
    result = NodeResult(
        **base,
        status="completed",
        outputs=outputs,
        seconds=time.perf_counter() - t0,
        finished_at=_now(),
        cache_key=key,
    )
    try:
        store.put_text(f"{node_folder(node)}/node.json", result.model_dump_json(indent=2))
        if cache is not None and key is not None:
            cache.record(key, result)
    except StorageError as exc:
        return result.model_copy(update={"status": "failed", "error": f"outputs stored, but not the result: {exc}"})
    return result


def node_folder(node: PlanNode) -> str:
    return f"nodes/{node.id}-{node.task}"


def reuse_prior(node: PlanNode, prior: NodeResult | None, store: ArtifactStore, run_id: str) -> NodeResult | None:
    """A completed result of this node from an earlier attempt of the run, if its files are all still there."""
    if prior is None or prior.status != "completed" or prior.task != node.task or prior.id != node.id:
        return None
    files = [uri for modality, uri in prior.outputs.items() if modality != "text"]
    if not all(store.exists(uri) for uri in files):
        return None
    return prior.model_copy(update={"cached": True, "reused_from": prior.reused_from or run_id})


def answered_ahead(
    settings: Settings,
    nodes: Sequence[PlanNode],
    assignments: Sequence[Assignment],
    store: ArtifactStore,
    prior: Mapping[int, NodeResult] | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> set[int]:
    """The nodes that will run no model: completed in an earlier attempt (``prior``), or whose outputs the result
    cache already holds (looked up as :func:`execute_node` will, for nodes whose inputs are files or text given
    here or the outputs of nodes answered so). A prefetch leaves their models alone. Never raises: a node that
    cannot be judged here counts as one that will run. ``clock`` ages cache entries (the run's, as the nodes')."""
    by_node = {a.node_id: a for a in assignments}
    answered: dict[int, NodeResult] = {n: r for n, r in (prior or {}).items() if r.ok}
    cache = ResultCache(store, ttl=settings.cache_ttl, clock=clock) if settings.cache else None
    for node in nodes:  # in dependency order
        assignment = by_node.get(node.id)
        if cache is None or node.id in answered or assignment is None or any(d not in answered for d in node.dep):
            continue
        if any(str(v).startswith(("http://", "https://")) for v in node.args.values()):
            continue  # fetched once, by the node itself
        try:
            _, digests = resolve_args(
                node,
                answered,
                store,
                input_timeout=settings.input_timeout,
                input_policy=InputPolicy.from_settings(settings),
            )
            hit = cache.lookup(node_cache_key(node, assignment, digests, cache_params(settings)))
        except Exception as exc:
            logger.debug("%s: cache not looked up ahead: %s", node.name, exc)
            continue
        if hit is not None:
            answered[node.id] = hit.result
    return set(answered)


# ---------------------------------------------------------------------------
# the Prefect task
# ---------------------------------------------------------------------------
def _task_run_key(ctx: Any, inputs: dict[str, Any]) -> str:
    """One result record per task run attempt: persisted task results are never read back as a cache (outputs
    are reused through :mod:`tasks.result_cache`, which never keeps failures), not even by a retry."""
    return f"hugginggpt-node-{ctx.task_run.id}-{ctx.task_run.run_count}"  # a retry is not a cache hit


_TRANSIENT = re.compile(
    r"timed? ?out|timeout|connection|connect|temporar|unavailable|too many requests|rate.?limit|reset by peer"
    r"|\b(?:429|500|502|503|504)\b",
    re.IGNORECASE,
)


def is_transient(result: NodeResult) -> bool:
    """Whether a failed node failed for a reason that may pass (a timeout, a refused or reset connection, a 429 or
    5xx answer, a storage hiccup): worth a Prefect retry. Bad inputs, missing models and model errors are not."""
    errors = [result.error or ""] + [a.error or "" for a in result.attempts if not a.skipped]
    return result.status == "failed" and any(_TRANSIENT.search(e) for e in errors if e)


def retry_transient(task: Any, task_run: Any, state: State) -> bool:
    """Prefect's ``retry_condition_fn`` of :func:`run_node`: retry only a node that failed transiently."""
    value = state.data
    value = getattr(value, "result", value)  # a persisted result record holds the result
    if isinstance(value, NodeResult):
        return is_transient(value)
    return False  # an exception out of the task is a bug, not a passing condition


def node_tags(node: PlanNode, assignment: Assignment | None) -> set[str]:
    """The tags of a node's task run (``task:image-to-text``, ``model:...``, ``backend:local``): a tag-based
    concurrency limit (``prefect concurrency-limit create model:big/model 1``) then bounds them."""
    tags = {"hugginggpt", f"task:{node.task}"}
    if assignment is not None:
        tags |= {f"model:{assignment.model}", f"backend:{assignment.backend}"}
    return tags


@task(name="run-node", cache_key_fn=_task_run_key, retry_condition_fn=retry_transient)
def run_node(
    node: PlanNode,
    assignment: Assignment | None,
    upstream: Sequence[NodeResult],
    settings: Settings,
    run_id: str,
    unassigned_reason: str | None = None,
    prior: NodeResult | None = None,
) -> State:
    """Prefect task: one plan node, run with the services :func:`tasks.services.services_for` resolves (the
    backends, availability and store of the caller's :func:`~tasks.services.override`, else the settings').

    Ends Completed; Completed named Cached when it reused earlier outputs; Cancelled named Skipped when an
    upstream node did not complete (never ran: grey in the UI, not green); or Failed with its result as data
    (retried by Prefect, with ``retries`` set, when :func:`is_transient`).
    """
    log = get_run_logger()
    services = services_for(settings)
    store = services.store(run_id)
    reused = reuse_prior(node, prior, store, run_id)
    if reused is not None:
        result = reused
    else:
        by_id = {r.id: r for r in upstream if isinstance(r, NodeResult)}
        model_wait = track_model_wait()
        result = execute_node(
            node,
            assignment,
            by_id,
            store,
            services.backends(),
            unassigned_reason=unassigned_reason,
            input_timeout=settings.input_timeout,
            input_policy=InputPolicy.from_settings(settings),
            cache=ResultCache(store, ttl=settings.cache_ttl, clock=services.clock) if settings.cache else None,
            cache_params=cache_params(settings),
            choose=services.availability.choose,
            max_attempts=1 + settings.max_fallbacks,
            model_timeout=settings.model_timeout,
        )
        result.model_wait_seconds = model_wait.seconds
    if result.status == "completed":
        shown = ", ".join(f"{k}={clip(v, 80)}" for k, v in result.outputs.items())
        if result.cached:
            log.info("%s reused the outputs of run %s: %s", node.name, result.reused_from, shown)
            _mark_cached(node)
            return Completed(data=result, name="Cached", message=f"{node.name} reused run {result.reused_from}")
        if len(result.attempts) > 1:
            log.warning("%s: %s", node.name, "; ".join(a.describe() for a in result.attempts))
        log.info(
            "%s completed in %.2f s with %s (%s): %s", node.name, result.seconds, result.model, result.backend, shown
        )
        return Completed(data=result, message=f"{node.name} completed")
    if result.status == "skipped":
        log.warning("%s %s", node.name, result.error)
        return Cancelled(data=result, name="Skipped", message=result.error)
    log.error("%s failed: %s", node.name, result.error)
    return Failed(data=result, message=result.error)


def _mark_cached(node: PlanNode) -> None:
    """Name the running task run ``{node} (cached)``: its final state reports the name to the API, and the run
    graph shows it (a Cached state is coloured like any Completed one)."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run is not None:
        ctx.task_run.name = node.name + CACHED_SUFFIX


def cache_params(settings: Settings) -> dict[str, Any]:
    """Settings that change what a model produces, so part of the cache key."""
    return {"max_new_tokens": settings.max_new_tokens}
