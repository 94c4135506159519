"""The remote backend's registry: each task type's ``InferenceClient`` call, registered once by the modality modules.

A modality module (``text``, ``vision``, ``audio``, ``multimodal``) decorates each call with :func:`remote_task`,
naming the task type. A call builds the request from the node's inputs, makes the one ``InferenceClient`` call and
turns the answer into an :class:`~tasks.experts.base.ExpertOutput`; retries, waits, errors and where the request goes
are the backend's (:class:`~tasks.experts.remote.RemoteBackend`), the same for every task. The backend, the list of
supported tasks and the tests all read :data:`REGISTRY`; nothing else lists the remote tasks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tasks.experts.base import ExpertInputs, ExpertOutput, ModelSpec
from tasks.task_types import NOT_SERVED_REMOTELY, TASK_TYPES


class RemoteOptions(Protocol):
    """The settings a call reads (the :class:`~tasks.experts.remote.RemoteBackend`'s)."""

    max_new_tokens: int
    detection_threshold: float
    top_k: int
    max_audio_seconds: float


#: ``call(options, client, inputs, model)``: one request through the ``InferenceClient`` ``client``, its answer read.
Call = Callable[[RemoteOptions, Any, ExpertInputs, ModelSpec], ExpertOutput]
#: Says why ``model`` cannot honour a request (``None`` when it can), before anything is sent.
Refusal = Callable[[ExpertInputs, ModelSpec], str | None]


@dataclass(frozen=True)
class RemoteTask:
    """How the remote backend runs one task type."""

    name: str
    call: Call
    refuse: Refusal | None = None
    #: why an endpoint URL cannot serve this task (only Inference Providers can), or ``None`` when it can
    not_by_endpoints: str | None = None


REGISTRY: dict[str, RemoteTask] = {}


def remote_task(
    name: str, refuse: Refusal | None = None, *, not_by_endpoints: str | None = None
) -> Callable[[Call], Call]:
    """Register the decorated call for task type ``name``.

    ``refuse`` (optional) looks at a request before anything is sent and says why the model cannot honour it;
    ``not_by_endpoints`` says why the task is refused for a model whose requests go to an endpoint URL.
    """
    if name not in TASK_TYPES:
        raise ValueError(f"{name!r} is not a task type of the task table")
    if name in NOT_SERVED_REMOTELY:
        raise ValueError(f"{name!r} is not served remotely: {NOT_SERVED_REMOTELY[name]}")

    def register(call: Call) -> Call:
        if name in REGISTRY:
            raise ValueError(f"task {name!r} is registered twice")
        REGISTRY[name] = RemoteTask(name=name, call=call, refuse=refuse, not_by_endpoints=not_by_endpoints)
        return call

    return register
