"""Where a model can run under the current settings, and the backends that run it.

One chooser per settings decides, for every catalog candidate, ``local``, ``remote`` or not at all
(``HUGGINGGPT_INFERENCE_MODE``): selection drops the candidates it rejects before the LLM sees them,
the planner is only offered task types with at least one runnable candidate, and execution uses it to
walk the fallback candidates.
"""

from __future__ import annotations

import threading
from typing import Any

from models_catalog.catalog import LOCAL_LIBRARIES, Catalog, hub_offline
from tasks.experts.base import ExpertBackend, ModelSpec
from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS
from tasks.experts.remote import SUPPORTED_TASKS as REMOTE_TASKS
from tasks.experts.router import Chooser, make_chooser
from tasks.settings import Settings


def chooser_for(settings: Settings) -> Chooser:
    """``choose(spec) -> (backend or None, reason)`` for these settings; models of other libraries
    (speechbrain, espnet, diffusers, ...) can only run remotely."""
    common: dict[str, Any] = {
        "offline": hub_offline(),
        "remote_tasks": frozenset(REMOTE_TASKS),
        "max_local_params": settings.max_local_params,
        "token_available": settings.hf_token is not None or None,
    }
    with_local = make_chooser(settings.inference_mode, local_tasks=frozenset(LOCAL_TASKS), **common)
    remote_only = make_chooser(settings.inference_mode, local_tasks=frozenset(), **common)

    def choose(spec: ModelSpec) -> tuple[str | None, str]:
        if spec.library not in LOCAL_LIBRARIES:
            backend, reason = remote_only(spec)
            if backend is None:
                return None, f"{reason} (a {spec.library} model: transformers cannot load it)"
        else:
            backend, reason = with_local(spec)
        if backend == "remote":
            refused = remote_backend_for(settings).refusal(spec.task, spec)
            if refused:
                return None, refused
        return backend, reason

    return choose


def runnable_tasks(catalog: Catalog, choose: Chooser) -> set[str]:
    """Task types with at least one catalog model that can run under ``choose``."""
    runnable: set[str] = set()
    for task in catalog.tasks():
        if any(choose(e.spec())[0] is not None for e in catalog.for_task(task)):
            runnable.add(task)
    return runnable


_lock = threading.Lock()
_remote: dict[tuple[Any, ...], ExpertBackend] = {}


def remote_backend_for(settings: Settings) -> ExpertBackend:
    """The process-wide remote backend for these settings."""
    from tasks.experts.remote import RemoteBackend

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    key = (
        token,
        settings.remote_timeout,
        settings.remote_job_timeout,
        settings.hf_inference_url,
        settings.hf_provider,
        settings.remote_retries,
        settings.remote_retry_wait,
        settings.max_new_tokens,
    )
    with _lock:
        backend = _remote.get(key)
        if backend is None:
            backend = RemoteBackend(
                token=token,
                timeout=settings.remote_timeout,
                job_timeout=settings.remote_job_timeout,
                base_url=settings.hf_inference_url,
                provider=settings.hf_provider,
                max_retries=settings.remote_retries,
                retry_wait=settings.remote_retry_wait,
                max_new_tokens=settings.max_new_tokens,
            )
            _remote[key] = backend
        return backend
