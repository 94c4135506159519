"""Run expert models remotely through huggingface_hub's ``InferenceClient``.

:class:`RemoteBackend` sends one task to one model and turns the answer into the same
:class:`~tasks.experts.base.ExpertOutput` the local backend produces (both use the ``format_*`` functions of
:mod:`tasks.experts.outputs`), so a downstream node cannot tell where an output came from.

Where a request goes, first match wins:

1. the model's ``endpoint`` (``ModelSpec.endpoint``): a dedicated Inference Endpoint URL, a self-hosted
   text-generation-inference (TGI) or text-embeddings-inference (TEI) server, or any server that speaks the
   Hugging Face inference API; ``InferenceClient`` POSTs to that URL as it is (chat goes to
   ``{url}/v1/chat/completions``);
2. the backend's ``base_url``: the same, for every model without an endpoint; a ``{model}`` in it is replaced by
   the model id (``https://proxy.example/models/{model}``), otherwise it is one server for every model;
   a model whose catalog entry names its Inference Provider (``ModelSpec.provider``) goes to that provider instead;
3. the model id, through Hugging Face Inference Providers (the model's ``provider``, else the backend's: ``"auto"``
   when not set, or a named one such as ``"hf-inference"``, ``"together"``, ``"fal-ai"``, ``"replicate"``); the
   client reads the model's provider mapping from the Hub and sends the request through the Hugging Face router
   with an ``hf_`` token, or to the provider's own API with that provider's key.

Tasks: every task type of the task table that ``InferenceClient`` has a call for (:data:`SUPPORTED_TASKS`, read
from :data:`REGISTRY`); conversational goes through ``chat_completion`` and text2text-generation through
``text_generation``. Not served (:data:`~tasks.task_types.NOT_SERVED_REMOTELY`): depth-estimation, for which
``InferenceClient`` has no call. text-to-video goes through Inference Providers only: through an endpoint URL it is
refused before sending (its registry entry's ``not_by_endpoints``), since the client sends URL requests as HF
Inference requests and HF Inference has no text-to-video; the availability check removes such candidates before
selection.

Inputs are sent as the client expects them: images as PNG bytes, audio as 16-bit WAV bytes, tables (CSV bytes) as
``{column: [values]}``. Outputs: images come back as PIL images (RGB), audio through ``soundfile`` as
:class:`~tasks.experts.base.Audio`, video as the MP4 bytes the provider sent (anything else is an error naming what
came back); detection boxes and segmentation masks are drawn on a copy of the input image as the local backend does.

Failures become :class:`~tasks.experts.base.ExpertError` naming the model and where it was sent, and every wait is
bounded:

* HTTP 5xx and 429 (and connection errors): retried ``max_retries`` times, waiting ``retry_wait`` seconds doubled
  each time (or the server's ``Retry-After``), each wait at most ``max_retry_wait``; then an error with the status;
* HTTP 503 "model is loading" (a body with ``estimated_time``): waits the estimated time, in total at most
  ``max_loading_wait`` seconds (``timeout`` by default), then tries again; then an error saying it is still loading;
* a request longer than ``timeout`` seconds: an error saying it timed out after that long (not retried);
* a call through Inference Providers longer than ``job_timeout`` seconds in all (some providers queue the job and
  the client polls it until it is done, with no bound of its own): an error saying so (not retried);
* 401 / 403: an error telling to set ``HF_TOKEN``; 404: the model is not served there; 400 / 422: the server's
  message about the input.

Offline (``HF_HUB_OFFLINE=1``): huggingface_hub refuses every HTTP request it makes in offline mode, endpoints
included. An endpoint of one's own is not the Hub, so unless ``endpoints_when_offline=False`` the backend installs,
once per process and only while huggingface_hub uses its default HTTP client, a client that refuses requests to the
Hub's hosts (``HF_ENDPOINT``, ``*.huggingface.co``, ``*.hf.co``) and lets requests to other hosts through. Models
without an endpoint fail with a message saying the Hub is offline.

The package, one module per concern (the same shape as the local backend's, :mod:`tasks.experts.local`):

==================  ==========================================================================================
``registry``        :data:`REGISTRY`: each task type's ``InferenceClient`` call, registered once with
                    ``@remote_task``: adding a task is one decorated function
``text``            text tasks (classification, tagging, generation, seq2seq, QA, similarity, embeddings, tables)
``vision``          image and video tasks (classification, detection, segmentation, image and video generation)
``multimodal``      image + text tasks (captioning, visual and document question answering)
``audio``           speech recognition, audio classification, text-to-speech, audio-to-audio
``wire``            inputs as the client sends them (PNG, WAV) and answers read back (images, audio, MP4)
``failures``        what went wrong with a request (status, server message, waits) and whether to ask again
``offline``         endpoints of one's own while huggingface_hub is offline; which URLs are the Hub's
==================  ==========================================================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from tasks import timebound
from tasks.experts.base import CannotRunHereError, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.remote import audio, multimodal, text, vision
from tasks.experts.remote.failures import Failure, classify, colon
from tasks.experts.remote.offline import allow_endpoints_when_offline, is_hub_url, is_url
from tasks.experts.remote.registry import REGISTRY, RemoteTask
from tasks.experts.remote.wire import is_mp4
from tasks.hub import hub_offline
from tasks.task_types import NOT_SERVED_REMOTELY, TASK_TYPES, normalize_task_name

__all__ = [
    "NOT_SERVED_REMOTELY",
    "REGISTRY",
    "SUPPORTED_TASKS",
    "RemoteBackend",
    "RemoteTask",
    "allow_endpoints_when_offline",
    "is_mp4",
    "within",
]

logger = logging.getLogger(__name__)

#: The modality modules whose ``@remote_task`` calls fill :data:`REGISTRY`.
MODALITIES = (text, vision, multimodal, audio)

#: Tasks this backend runs, in the task table's order: those registered by the modality modules.
SUPPORTED_TASKS: tuple[str, ...] = tuple(t for t in TASK_TYPES if t in REGISTRY)


class RemoteBackend:
    """Runs the tasks in :data:`SUPPORTED_TASKS` through ``InferenceClient``.

    ``token`` defaults to huggingface_hub's own (``HF_TOKEN`` or the saved login); ``timeout`` bounds each request
    in seconds; ``provider`` picks the Inference Provider for models without an endpoint (``None``: ``"auto"``).
    ``clock`` and ``sleep`` time the waits between retries and for a loading model (tests pass a clock that moves
    when slept on).
    """

    name = "remote"

    def __init__(
        self,
        token: str | None = None,
        timeout: float = 60.0,
        base_url: str | None = None,
        provider: str | None = None,
        max_retries: int = 2,
        retry_wait: float = 1.0,
        *,
        max_loading_wait: float | None = None,
        job_timeout: float = 600.0,
        max_retry_wait: float = 30.0,
        max_new_tokens: int = 48,
        detection_threshold: float = 0.5,
        top_k: int = 5,
        max_audio_seconds: float = 30.0,
        endpoints_when_offline: bool = True,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if timeout <= 0 or job_timeout <= 0:
            raise ValueError(f"timeouts must be positive, got {timeout} and {job_timeout}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be at least 0, got {max_retries}")
        if retry_wait < 0 or max_retry_wait < 0:
            raise ValueError("retry waits cannot be negative")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.token = token
        self.timeout = float(timeout)
        self.base_url = base_url.rstrip("/") if base_url else None
        self.provider = provider
        self.max_retries = max_retries
        self.retry_wait = float(retry_wait)
        self.max_loading_wait = float(timeout if max_loading_wait is None else max_loading_wait)
        self.job_timeout = float(job_timeout)
        self.max_retry_wait = float(max_retry_wait)
        self.max_new_tokens = max_new_tokens
        self.detection_threshold = detection_threshold
        self.top_k = top_k
        self.max_audio_seconds = max_audio_seconds
        self.endpoints_when_offline = endpoints_when_offline
        self.clock = clock
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: Any) -> RemoteBackend:
        """A backend as the settings describe it (token, timeouts, endpoint, provider, retries); the process shares
        one per settings through :func:`tasks.services.remote_backend_for`."""
        token = settings.hf_token.get_secret_value() if settings.hf_token else None
        return cls(
            token=token,
            timeout=settings.remote_timeout,
            job_timeout=settings.remote_job_timeout,
            base_url=settings.hf_inference_url,
            provider=settings.hf_provider,
            max_retries=settings.remote_retries,
            retry_wait=settings.remote_retry_wait,
            max_new_tokens=settings.max_new_tokens,
        )

    # --- public -----------------------------------------------------------------------------------------------

    @property
    def tasks(self) -> frozenset[str]:
        """The task types this backend runs."""
        return frozenset(REGISTRY)

    def supports(self, task: str) -> bool:
        return normalize_task_name(task) in REGISTRY

    def entry(self, task: str, model: ModelSpec | None = None) -> RemoteTask:
        """The registry entry for ``task``; an :class:`ExpertError` naming the task (and why, when the table says)
        and the tasks this backend runs when it has none."""
        task_name = normalize_task_name(task)
        found = REGISTRY.get(task_name)
        if found is None:
            why = NOT_SERVED_REMOTELY.get(task_name)
            raise ExpertError(
                f"the remote backend cannot run task {task!r}"
                + (f" (model {model.id!r})" if model is not None else "")
                + (f": {why}" if why else "")
                + f"; supported tasks: {', '.join(SUPPORTED_TASKS)}"
            )
        return found

    def refusal(self, task: str, model: ModelSpec) -> str | None:
        """Why ``task`` cannot be sent where :meth:`target` sends ``model``'s requests, or ``None``."""
        found = REGISTRY.get(normalize_task_name(task))
        if found is not None and found.not_by_endpoints and is_url(url := self.target(model)):
            return f"sent to {url}: {found.not_by_endpoints}"
        return None

    def target(self, model: ModelSpec) -> str:
        """Where requests for ``model`` go: its endpoint, else its Hub id when it names its provider, else the
        backend's base URL, else its Hub id."""
        if model.endpoint:
            return model.endpoint
        if self.base_url and not model.provider:
            return self.base_url.replace("{model}", model.id)
        return model.id

    def run(self, task: str, model: ModelSpec, inputs: ExpertInputs) -> ExpertOutput:
        """Run ``task`` with ``model`` on ``inputs``; raise :class:`ExpertError` naming the model on any failure."""
        task_name = normalize_task_name(task)
        entry = self.entry(task, model)
        target = self.target(model)
        where = self._where(model, target)
        refused = self.refusal(task_name, model)
        if refused:
            raise ExpertError(f"{where} cannot run {task_name}: {refused}")
        unable = entry.refuse(inputs, model) if entry.refuse is not None else None
        if unable:
            raise CannotRunHereError(f"{where} cannot run {task_name}: {unable}")
        if is_url(target):
            if self.endpoints_when_offline and hub_offline() and not is_hub_url(target):
                allow_endpoints_when_offline()
        elif hub_offline():
            raise ExpertError(
                f"{where} cannot run {task_name}: it has no endpoint and the Hub is offline (HF_HUB_OFFLINE=1); "
                "Inference Providers are reached through the Hub"
            )
        from huggingface_hub import InferenceClient

        client = InferenceClient(
            model=target,
            provider=None if is_url(target) else self.provider_for(model),  # type: ignore[arg-type]
            token=self.token,
            timeout=self.timeout,
        )

        def call() -> ExpertOutput:
            return entry.call(self, client, inputs, model)

        def attempt() -> ExpertOutput:
            if is_url(target):
                return call()
            # some providers queue the job and the client polls it with no end of its own
            return within(self.job_timeout, call, f"{where} ({task_name})")

        start = time.perf_counter()
        try:
            output = self._with_retries(attempt, where, task_name)
        finally:
            client.close()
        output.extra.setdefault("model", model.id)
        output.extra.setdefault("backend", self.name)
        output.extra.setdefault(
            "endpoint" if is_url(target) else "provider", target if is_url(target) else self.provider_for(model)
        )
        output.extra.setdefault("remote_seconds", round(time.perf_counter() - start, 3))
        return output

    # --- errors, retries and waits ------------------------------------------------------------------------------

    def _where(self, model: ModelSpec, target: str) -> str:
        if is_url(target):
            return f"model {model.id!r} at {target}"
        return f"model {model.id!r} (Inference Providers, provider {self.provider_for(model)})"

    def provider_for(self, model: ModelSpec) -> str:
        """The Inference Provider for ``model`` when it has no endpoint: its own, else the backend's, else auto."""
        return model.provider or self.provider or "auto"

    def _with_retries(self, call: Callable[[], ExpertOutput], where: str, task: str) -> ExpertOutput:
        loading_deadline = self.clock() + self.max_loading_wait
        retries = 0
        while True:
            try:
                return call()
            except ExpertError as exc:
                raise ExpertError(f"{where} cannot run {task}: {exc}") from exc
            except Exception as exc:
                failure = classify(exc)
                if self.token:  # a server may echo the credentials it was sent
                    failure.message = failure.message.replace(self.token, "***")
                if failure.kind == "loading":
                    remaining = loading_deadline - self.clock()
                    if remaining <= 0:
                        estimate = f" (it estimated {failure.estimated_time:g} s)" if failure.estimated_time else ""
                        raise ExpertError(
                            f"{where} is still loading the model after waiting {self.max_loading_wait:g} s"
                            f"{estimate}: HTTP 503 {failure.message}"
                        ) from exc
                    wait = min(max(failure.estimated_time or self.retry_wait, 0.05), remaining)
                    logger.info("%s is loading; waiting %.1f s before asking again", where, wait)
                    self.sleep(wait)
                    continue
                if failure.kind == "retry" and retries < self.max_retries:
                    wait = min(failure.retry_after or self.retry_wait * 2**retries, self.max_retry_wait)
                    retries += 1
                    logger.warning(
                        "%s failed (%s); retry %d/%d in %.1f s", where, failure.message, retries, self.max_retries, wait
                    )
                    self.sleep(wait)
                    continue
                raise ExpertError(self._message(failure, where, task, retries)) from exc

    def _message(self, failure: Failure, where: str, task: str, retries: int) -> str:
        status = failure.status
        if failure.kind == "timeout":
            return f"{where} timed out after {self.timeout:g} s on {task}"
        if failure.kind == "offline":
            return f"{where} cannot be reached: the Hub is offline (HF_HUB_OFFLINE=1): {failure.message}"
        tried = f" (tried {retries + 1} times)" if retries else ""
        if failure.kind == "retry" and status is None:
            return f"cannot reach {where}{tried}: {failure.message}"
        if status in (401, 403):
            return (
                f"{where} refused the request with HTTP {status}{colon(failure.message)}; set HF_TOKEN to a "
                "Hugging Face token that may use this model or endpoint"
            )
        if status == 404:
            return f"{where} is not served there (HTTP 404){colon(failure.message)}"
        if status in (400, 422):
            return f"{where} rejected the {task} input (HTTP {status}){colon(failure.message)}"
        if status is not None:
            return f"{where} failed on {task} with HTTP {status}{tried}{colon(failure.message)}"
        return f"{where} failed on {task}: {failure.message}"


def within(seconds: float, call: Callable[[], ExpertOutput], what: str) -> ExpertOutput:
    """``call()``, or an :class:`ExpertError` once ``seconds`` have passed without its result.

    For calls with no bound of their own: huggingface_hub polls a provider's job queue (fal-ai's text-to-video,
    image-to-image and image-segmentation) until the job says it is complete, however long that takes.
    """
    return timebound.within(
        seconds,
        call,
        f"remote call: {what}",
        lambda: ExpertError(
            f"no result after {seconds:g} s (HUGGINGGPT_REMOTE_JOB_TIMEOUT); the provider's job may still be running"
        ),
    )
