"""The local backend's registry: each task type's loader and runner, registered once by the modality modules.

A modality module (``text``, ``vision``, ``audio``, ``multimodal``) decorates each runner with
:func:`local_task`, naming the task type and the loader that builds what the runner takes. The backend, the list of
supported tasks and the tests all read :data:`REGISTRY`; nothing else lists the local tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tasks.experts.base import ExpertInputs, ExpertOutput, ModelSpec
from tasks.task_types import NOT_SERVED_LOCALLY, TASK_TYPES


class LocalOptions(Protocol):
    """The settings a loader or runner reads (the :class:`~tasks.experts.local.LocalBackend`'s)."""

    device: str
    max_new_tokens: int
    token: str | None
    trust_remote_code: bool
    detection_threshold: float
    max_audio_seconds: float
    top_k: int
    speecht5_vocoder: str
    speaker_embeddings: str | None


Loader = Callable[[LocalOptions, ModelSpec], Any]
Runner = Callable[[LocalOptions, Any, ExpertInputs], ExpertOutput]
#: Says why a request cannot be served locally (``None`` when it can), before any model is loaded.
Refusal = Callable[[ExpertInputs], str | None]


@dataclass(frozen=True)
class LocalTask:
    """How the local backend runs one task type."""

    name: str
    load: Loader
    run: Runner
    refuse: Refusal | None = None


REGISTRY: dict[str, LocalTask] = {}


def local_task(name: str, load: Loader, refuse: Refusal | None = None) -> Callable[[Runner], Runner]:
    """Register the decorated runner for task type ``name``, with the loader that builds what it takes.

    ``refuse`` (optional) looks at a request before anything is loaded and says why this backend cannot honour it.
    """
    if name not in TASK_TYPES:
        raise ValueError(f"{name!r} is not a task type of the task table")
    if name in NOT_SERVED_LOCALLY:
        raise ValueError(f"{name!r} is not served locally: {NOT_SERVED_LOCALLY[name]}")

    def register(run: Runner) -> Runner:
        if name in REGISTRY:
            raise ValueError(f"task {name!r} is registered twice")
        REGISTRY[name] = LocalTask(name=name, load=load, run=run, refuse=refuse)
        return run

    return register
