"""Which backend runs a model, and falling back to the next candidate when a model fails.

Plain functions, no Prefect:

* :func:`can_run` decides, for one model, which backend can run it in an inference mode (``local``, ``remote`` or
  ``hybrid``) and why, without loading anything;
* :func:`make_chooser` binds its settings once, giving the ``choose`` function the other two take;
* :func:`available_candidates` keeps the candidates that can run (what the LLM is offered) and says why the others
  were removed;
* :func:`run_with_fallback` runs the candidates in order until one works, recording every attempt;
* :func:`estimate_params` / :func:`size_hint` estimate a model's parameter count from its weight files on disk.

Hybrid prefers local when the model's weights are on this machine, or when its size is known to fit the device
budget (``max_local_params``); otherwise remote, when remote can serve it; otherwise local after all (weights
downloaded from the Hub, size unknown).

Skipped candidates (``choose`` says no backend can run them, or loading one ran out of memory:
:class:`~tasks.experts.base.CannotRunHereError`) are recorded as attempts with ``skipped=True`` and the reason, and
are not counted against ``max_attempts``: the bound is on models actually tried (loaded and run), which is what
costs time.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from tasks import timebound
from tasks.experts.base import CannotRunHereError, ExpertBackend, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.task_types import normalize_task_name

InferenceMode = Literal["local", "remote", "hybrid"]
BackendName = Literal["local", "remote"]
Chooser = Callable[[ModelSpec], tuple[str | None, str]]

INFERENCE_MODES: tuple[str, ...] = ("local", "remote", "hybrid")

#: Weight files counted by :func:`estimate_params`, by preference (a repo often ships the same weights twice).
_WEIGHT_SUFFIXES: tuple[tuple[str, ...], ...] = ((".safetensors",), (".bin", ".pt", ".pth"))
_BYTES_PER_DTYPE: dict[str, float] = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
}


class Attempt(BaseModel):
    """One candidate considered for a node: run (``ok`` or with an ``error``) or skipped with the reason."""

    model: str
    backend: str | None = None
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    skipped: bool = False

    def describe(self) -> str:
        if self.ok:
            return f"{self.model} [{self.backend}]: ok in {self.seconds:.2f} s"
        if self.skipped:
            return f"{self.model}: skipped ({self.error})"
        return f"{self.model} [{self.backend}]: failed after {self.seconds:.2f} s: {self.error}"


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


# --- can a model run here, and where ------------------------------------------------------------------------------


def can_run(
    spec: ModelSpec,
    mode: InferenceMode,
    *,
    offline: bool,
    local_tasks: set[str] | frozenset[str],
    remote_tasks: set[str] | frozenset[str],
    max_local_params: int | None,
    size_hint: int | None,
    token_available: bool | None = None,
) -> tuple[BackendName | None, str]:
    """The backend that should run ``spec`` in ``mode`` (``None`` when none can), and why.

    ``size_hint`` is the model's parameter count when known (see :func:`size_hint`); ``token_available`` whether a
    Hugging Face token is configured (``None``: ask huggingface_hub), which Inference Providers need.
    """
    if mode not in INFERENCE_MODES:
        raise ValueError(f"unknown inference mode {mode!r}; expected one of {', '.join(INFERENCE_MODES)}")
    task = normalize_task_name(spec.task)
    local_ok, local_why, weights_here = _local_possible(
        spec, task, offline=offline, local_tasks=local_tasks, max_local_params=max_local_params, size_hint=size_hint
    )
    remote_ok, remote_why = _remote_possible(
        spec, task, offline=offline, remote_tasks=remote_tasks, token_available=token_available
    )
    if mode == "local":
        return ("local", local_why) if local_ok else (None, f"local mode: {local_why}")
    if mode == "remote":
        return ("remote", remote_why) if remote_ok else (None, f"remote mode: {remote_why}")
    fits = size_hint is not None and max_local_params is not None and size_hint <= max_local_params
    if local_ok and (weights_here or fits):
        return "local", local_why
    if remote_ok:
        return "remote", f"{remote_why} (local: {local_why})"
    if local_ok:
        return "local", f"{local_why} (remote: {remote_why})"
    return None, f"local: {local_why}; remote: {remote_why}"


def _local_possible(
    spec: ModelSpec,
    task: str,
    *,
    offline: bool,
    local_tasks: set[str] | frozenset[str],
    max_local_params: int | None,
    size_hint: int | None,
) -> tuple[bool, str, bool]:
    """(possible, reason, weights already on this machine)."""
    if task not in local_tasks:
        return False, f"task {task} is not served by the local backend", False
    if spec.local_path:
        if not Path(spec.local_path).is_dir():
            return False, f"the local weights folder {spec.local_path} does not exist", False
        where, here = f"weights in {spec.local_path}", True
    elif in_hf_cache(spec.id, spec.revision):
        where, here = "weights in the Hugging Face cache", True
    elif offline:
        return False, "no local weights and the Hub is offline", False
    else:
        where, here = "weights downloadable from the Hub", False
    if max_local_params is not None and size_hint is not None and size_hint > max_local_params:
        return False, f"too large for the device budget ({size_hint:,} params > {max_local_params:,})", here
    size = f", about {size_hint:,} params" if size_hint is not None else ""
    return True, f"{where}{size}", here


def _remote_possible(
    spec: ModelSpec,
    task: str,
    *,
    offline: bool,
    remote_tasks: set[str] | frozenset[str],
    token_available: bool | None,
) -> tuple[bool, str]:
    if task not in remote_tasks:
        return False, f"task {task} is not served by the remote backend"
    if spec.endpoint:
        return True, f"endpoint {spec.endpoint}"
    if offline:
        return False, "no endpoint and the Hub is offline"
    if token_available is None:
        token_available = _token_configured()
    if not token_available:
        return False, "no endpoint and remote inference needs HF_TOKEN or an endpoint"
    return True, "Inference Providers"


def make_chooser(
    mode: InferenceMode,
    *,
    offline: bool,
    local_tasks: set[str] | frozenset[str],
    remote_tasks: set[str] | frozenset[str],
    max_local_params: int | None = None,
    sizes: Callable[[ModelSpec], int | None] | None = None,
    token_available: bool | None = None,
) -> Chooser:
    """``choose(spec) -> (backend or None, reason)`` for :func:`run_with_fallback` and :func:`available_candidates`.

    ``sizes`` gives a model's parameter count (default: :func:`size_hint`, from weight files on disk).
    """
    size_of = sizes or size_hint
    if token_available is None:
        token_available = _token_configured()

    def choose(spec: ModelSpec) -> tuple[str | None, str]:
        return can_run(
            spec,
            mode,
            offline=offline,
            local_tasks=local_tasks,
            remote_tasks=remote_tasks,
            max_local_params=max_local_params,
            size_hint=size_of(spec) if max_local_params is not None else None,
            token_available=token_available,
        )

    return choose


def available_candidates(
    specs: Sequence[ModelSpec], choose: Chooser
) -> tuple[list[tuple[ModelSpec, str, str]], list[tuple[ModelSpec, str]]]:
    """Split ``specs`` into those that can run (``(spec, backend, reason)``) and those that cannot (``(spec, reason)``),
    keeping their order."""
    kept: list[tuple[ModelSpec, str, str]] = []
    removed: list[tuple[ModelSpec, str]] = []
    for spec in specs:
        backend, reason = choose(spec)
        if backend is None:
            removed.append((spec, reason))
        else:
            kept.append((spec, backend, reason))
    return kept, removed


# --- running with fallback ----------------------------------------------------------------------------------------


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


# --- sizes ----------------------------------------------------------------------------------------------------------


def estimate_params(folder: str | Path) -> int | None:
    """The parameter count of the weights in ``folder``, or ``None`` when it holds none.

    safetensors files are counted exactly from their headers (no tensor is read); other weight files (``.bin``,
    ``.pt``, ``.pth``) are estimated as their size in bytes / 4 (float32). When a folder has both, only the
    safetensors files count (they hold the same weights).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = [f for f in folder.iterdir() if f.is_file()]
    for suffixes in _WEIGHT_SUFFIXES:
        weights = [f for f in files if f.name.endswith(suffixes) and not f.name.startswith("training_args")]
        if not weights:
            continue
        total = 0
        for weight in weights:
            counted = _safetensors_params(weight) if weight.suffix == ".safetensors" else None
            total += counted if counted is not None else weight.stat().st_size // 4
        return total
    return None


def size_hint(spec: ModelSpec) -> int | None:
    """:func:`estimate_params` of the model's local folder, or of its snapshot in the Hugging Face cache."""
    if spec.local_path:
        return estimate_params(spec.local_path)
    folder = _hf_cache_folder(spec.id, spec.revision)
    return estimate_params(folder) if folder is not None else None


def _safetensors_params(path: Path) -> int | None:
    """Parameters in a safetensors file, from its JSON header; ``None`` when the header cannot be read."""
    try:
        with path.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length <= 0 or length > 100_000_000:
                return None
            header = json.loads(fh.read(length))
    except (OSError, ValueError, struct.error):
        return None
    total = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        shape = info.get("shape") or []
        count = 1
        for dim in shape:
            count *= int(dim)
        offsets = info.get("data_offsets")
        width = _BYTES_PER_DTYPE.get(str(info.get("dtype")))
        if not shape and isinstance(offsets, list) and width:
            count = int((offsets[1] - offsets[0]) / width)
        total += count
    return total


# --- the Hugging Face cache and token -------------------------------------------------------------------------------


def in_hf_cache(repo_id: str, revision: str | None = None) -> bool:
    """Whether the model's ``config.json`` is in the Hugging Face cache (no network)."""
    return _hf_cache_folder(repo_id, revision) is not None


def _hf_cache_folder(repo_id: str, revision: str | None) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def _token_configured() -> bool:
    from huggingface_hub import get_token

    try:
        return bool(get_token())
    except Exception:
        return False


def attempts_summary(attempts: Sequence[Attempt]) -> list[dict[str, Any]]:
    """Attempts as plain dicts (for a node result or the run summary)."""
    return [a.model_dump() for a in attempts]
