"""Stage 3, execution of one node: resolve its inputs, run its model, store its outputs.

:func:`execute_node` is the core (no Prefect); :func:`run_node` is the Prefect task
the flow submits once per node, named after it, with its upstream futures.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State

from tasks.experts.base import Audio, ExpertBackend, ExpertError, ExpertOutput
from tasks.inputs import InputError, decode_audio, decode_image, decode_text, load_input
from tasks.plan import GENERATED_RE
from tasks.schemas import Assignment, NodeResult, PlanNode
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


class UpstreamMissingError(RuntimeError):
    """A ``<GENERATED>-k`` could not be resolved from node k's outputs."""


# ---------------------------------------------------------------------------
# resolving inputs
# ---------------------------------------------------------------------------
def _decode_stored(uri: str, modality: Modality) -> Any:
    data = read_uri(uri)
    if modality == Modality.IMAGE:
        return decode_image(data, uri)
    if modality == Modality.AUDIO:
        return decode_audio(data, uri)
    if modality == Modality.TEXT:
        return decode_text(data, uri)
    return data


def upstream_value(result: NodeResult, modality: Modality) -> Any:
    """Node ``result``'s output of ``modality``: text inline, files read back from storage and decoded."""
    value = result.outputs.get(str(modality))
    if value is None:
        have = ", ".join(result.outputs) or "nothing"
        raise UpstreamMissingError(
            f"task {result.id} ({result.task}) produced no {modality} output (it produced {have})"
        )
    if modality in FILE_MODALITIES:
        return _decode_stored(value, modality)
    return value


def resolve_args(node: PlanNode, upstream: Mapping[int, NodeResult], *, input_timeout: float = 30.0) -> dict[str, Any]:
    """Each argument of ``node`` as the value its model takes (``<GENERATED>-k`` replaced by node k's output)."""
    tt = TASK_TYPES[node.task]
    resolved: dict[str, Any] = {}
    for name, raw in node.args.items():
        spec = tt.arg(name)
        modality = spec.modality if spec else Modality.TEXT
        refs = [int(k) for k in GENERATED_RE.findall(raw)]
        if refs and modality in FILE_MODALITIES:
            resolved[name] = upstream_value(upstream[refs[0]], modality)
        elif refs:

            def _sub(m: Any) -> str:
                return str(upstream_value(upstream[int(m.group(1))], Modality.TEXT))

            resolved[name] = GENERATED_RE.sub(_sub, raw)
        elif modality in FILE_MODALITIES:
            resolved[name] = load_input(raw, modality, timeout=input_timeout)
        else:
            resolved[name] = raw
    return resolved


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
    folder = f"nodes/{node.id}-{node.task}"
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
    backend: ExpertBackend,
    *,
    unassigned_reason: str | None = None,
    input_timeout: float = 30.0,
) -> NodeResult:
    """Run one node; never raises for the node's own failures: they come back as a failed result."""
    started = _now()
    t0 = time.perf_counter()
    base = {"id": node.id, "task": node.task, "model": assignment.model if assignment else None, "started_at": started}

    blocked = [upstream[d] for d in node.dep if d in upstream and upstream[d].status != "completed"]
    missing = [d for d in node.dep if d not in upstream]
    if blocked or missing:
        why = "; ".join(f"task {r.id} ({r.task}) {r.status}" for r in blocked)
        why += "; ".join(f"task {d} has no result" for d in missing)
        return NodeResult(**base, status="skipped", error=f"skipped because upstream {why}", finished_at=_now())
    if assignment is None:
        return NodeResult(
            **base, status="failed", error=unassigned_reason or "no model was assigned", finished_at=_now()
        )
    try:
        inputs = resolve_args(node, upstream, input_timeout=input_timeout)
        output = backend.run(node.task, assignment.spec, inputs)
        outputs = store_outputs(node, output, store)
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
    return NodeResult(**base, status="completed", outputs=outputs, seconds=time.perf_counter() - t0, finished_at=_now())


# ---------------------------------------------------------------------------
# backends, one set per process
# ---------------------------------------------------------------------------
_backend_lock = threading.Lock()
_backends: dict[tuple[Any, ...], ExpertBackend] = {}


def backend_for(settings: Settings) -> ExpertBackend:
    """The process-wide local backend for these settings (models stay loaded across nodes and requests)."""
    from tasks.experts.cache import ModelCache
    from tasks.experts.local import LocalBackend

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    key = (settings.resolved_device(), settings.max_models, settings.max_new_tokens, token)
    with _backend_lock:
        backend = _backends.get(key)
        if backend is None:
            backend = LocalBackend(
                cache=ModelCache(max_models=settings.max_models),
                device=key[0],
                max_new_tokens=settings.max_new_tokens,
                token=token,
            )
            _backends[key] = backend
        return backend


# ---------------------------------------------------------------------------
# the Prefect task
# ---------------------------------------------------------------------------
@task(name="run-node", cache_policy=NO_CACHE)
def run_node(
    node: PlanNode,
    assignment: Assignment | None,
    upstream: Sequence[NodeResult],
    settings: Settings,
    run_id: str,
    unassigned_reason: str | None = None,
) -> State:
    """Prefect task: one plan node. Ends Completed, Failed (with its result as data), or Completed named Skipped."""
    log = get_run_logger()
    store = ArtifactStore(settings.storage, run_id, settings.storage_options)
    by_id = {r.id: r for r in upstream if isinstance(r, NodeResult)}
    result = execute_node(
        node,
        assignment,
        by_id,
        store,
        backend_for(settings),
        unassigned_reason=unassigned_reason,
        input_timeout=settings.input_timeout,
    )
    if result.status == "completed":
        shown = ", ".join(f"{k}={_clip(v)}" for k, v in result.outputs.items())
        log.info("%s completed in %.2f s with %s: %s", node.name, result.seconds, result.model, shown)
        return Completed(data=result, message=f"{node.name} completed")
    if result.status == "skipped":
        log.warning("%s %s", node.name, result.error)
        return Completed(data=result, name="Skipped", message=result.error)
    log.error("%s failed: %s", node.name, result.error)
    return Failed(data=result, message=result.error)


def _clip(text: str, limit: int = 80) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
