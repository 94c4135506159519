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

Tasks: every task type of the task table that ``InferenceClient`` has a call for (:data:`SUPPORTED_TASKS`);
conversational goes through ``chat_completion`` and text2text-generation through ``text_generation``.
Not served (:data:`NOT_SERVED_REMOTELY`): depth-estimation, for which ``InferenceClient`` has no call.
text-to-video goes through Inference Providers only: through an endpoint URL it is refused before sending
(:data:`NOT_SERVED_BY_ENDPOINTS`), since the client sends URL requests as HF Inference requests and HF Inference has
no text-to-video; the availability check removes such candidates before selection.

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
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from tasks import timebound
from tasks.experts.arguments import (
    audio_input,
    image_input,
    language_code,
    language_pair_from_name,
    parse_csv_table,
    parse_labels,
    text_input,
)
from tasks.experts.base import Audio, CannotRunHereError, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.outputs import (
    format_audio_classification,
    format_document_question_answering,
    format_feature_extraction,
    format_image_classification,
    format_image_segmentation,
    format_object_detection,
    format_question_answering,
    format_sentence_similarity,
    format_tabular_classification,
    format_text_classification,
    format_token_classification,
    format_visual_question_answering,
    format_zero_shot_classification,
    waveform_audio,
)
from tasks.task_types import TASK_TYPES, normalize_task_name

logger = logging.getLogger(__name__)

#: Task types of the task table this backend does not run, and why.
NOT_SERVED_REMOTELY: dict[str, str] = {
    "depth-estimation": "huggingface_hub's InferenceClient has no depth-estimation call",
}

#: Tasks this backend runs: every task type of the table but those of :data:`NOT_SERVED_REMOTELY`.
SUPPORTED_TASKS: tuple[str, ...] = tuple(t for t in TASK_TYPES if t not in NOT_SERVED_REMOTELY)

#: Tasks an endpoint URL cannot serve through ``InferenceClient``, and why.
NOT_SERVED_BY_ENDPOINTS: dict[str, str] = {
    "text-to-video": (
        "InferenceClient sends requests to an endpoint URL as HF Inference requests, and HF Inference has no "
        "text-to-video; give the model id with an Inference Provider that serves it (fal-ai, novita, replicate, "
        "together, ...) instead"
    ),
}

#: HTTP statuses worth asking again.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

_Call = Callable[[Any, ExpertInputs, ModelSpec], ExpertOutput]


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
        self._calls: dict[str, _Call] = {
            "text-classification": self._text_classification,
            "token-classification": self._token_classification,
            "text2text-generation": self._text2text_generation,
            "summarization": self._summarization,
            "translation": self._translation,
            "question-answering": self._question_answering,
            "conversational": self._conversational,
            "text-generation": self._text_generation,
            "sentence-similarity": self._sentence_similarity,
            "zero-shot-classification": self._zero_shot_classification,
            "feature-extraction": self._feature_extraction,
            "tabular-classification": self._tabular_classification,
            "object-detection": self._object_detection,
            "image-classification": self._image_classification,
            "image-to-image": self._image_to_image,
            "image-to-text": self._image_to_text,
            "text-to-image": self._text_to_image,
            "text-to-video": self._text_to_video,
            "visual-question-answering": self._visual_question_answering,
            "document-question-answering": self._document_question_answering,
            "image-segmentation": self._image_segmentation,
            "text-to-speech": self._text_to_speech,
            "automatic-speech-recognition": self._automatic_speech_recognition,
            "audio-to-audio": self._audio_to_audio,
            "audio-classification": self._audio_classification,
        }

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
        return frozenset(self._calls)

    def supports(self, task: str) -> bool:
        return normalize_task_name(task) in self._calls

    def refusal(self, task: str, model: ModelSpec) -> str | None:
        """Why ``task`` cannot be sent where :meth:`target` sends ``model``'s requests, or ``None``."""
        task_name = normalize_task_name(task)
        if task_name in NOT_SERVED_BY_ENDPOINTS and _is_url(url := self.target(model)):
            return f"sent to {url}: {NOT_SERVED_BY_ENDPOINTS[task_name]}"
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
        call = self._calls.get(task_name)
        if call is None:
            why = NOT_SERVED_REMOTELY.get(task_name)
            raise ExpertError(
                f"the remote backend cannot run task {task!r} (model {model.id!r})"
                + (f": {why}" if why else "")
                + f"; supported tasks: {', '.join(SUPPORTED_TASKS)}"
            )
        target = self.target(model)
        where = self._where(model, target)
        refused = self.refusal(task_name, model)
        if refused:
            raise ExpertError(f"{where} cannot run {task_name}: {refused}")
        unable = _cannot_honour(task_name, model, inputs)
        if unable:
            raise CannotRunHereError(f"{where} cannot run {task_name}: {unable}")
        from tasks.availability import hub_offline  # it imports this module

        if _is_url(target):
            if self.endpoints_when_offline and hub_offline() and not _is_hub_url(target):
                allow_endpoints_when_offline()
        elif hub_offline():
            raise ExpertError(
                f"{where} cannot run {task_name}: it has no endpoint and the Hub is offline (HF_HUB_OFFLINE=1); "
                "Inference Providers are reached through the Hub"
            )
        from huggingface_hub import InferenceClient

        client = InferenceClient(
            model=target,
            provider=None if _is_url(target) else self.provider_for(model),  # type: ignore[arg-type]
            token=self.token,
            timeout=self.timeout,
        )

        def attempt() -> ExpertOutput:
            if _is_url(target):
                return call(client, inputs, model)
            # some providers queue the job and the client polls it with no end of its own
            return within(self.job_timeout, lambda: call(client, inputs, model), f"{where} ({task_name})")

        start = time.perf_counter()
        try:
            output = self._with_retries(attempt, where, task_name)
        finally:
            client.close()
        output.extra.setdefault("model", model.id)
        output.extra.setdefault("backend", self.name)
        output.extra.setdefault(
            "endpoint" if _is_url(target) else "provider", target if _is_url(target) else self.provider_for(model)
        )
        output.extra.setdefault("remote_seconds", round(time.perf_counter() - start, 3))
        return output

    # --- errors, retries and waits ------------------------------------------------------------------------------

    def _where(self, model: ModelSpec, target: str) -> str:
        if _is_url(target):
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
                failure = _classify(exc)
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

    def _message(self, failure: _Failure, where: str, task: str, retries: int) -> str:
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
                f"{where} refused the request with HTTP {status}{_colon(failure.message)}; set HF_TOKEN to a "
                "Hugging Face token that may use this model or endpoint"
            )
        if status == 404:
            return f"{where} is not served there (HTTP 404){_colon(failure.message)}"
        if status in (400, 422):
            return f"{where} rejected the {task} input (HTTP {status}){_colon(failure.message)}"
        if status is not None:
            return f"{where} failed on {task} with HTTP {status}{tried}{_colon(failure.message)}"
        return f"{where} failed on {task}: {failure.message}"

    # --- one call per task --------------------------------------------------------------------------------------

    def _text_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.text_classification(text_input(inputs, "text"), top_k=self.top_k)
        return format_text_classification(_flat(result))

    def _token_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.token_classification(text_input(inputs, "text"), aggregation_strategy="simple")
        return format_token_classification(_flat(result))

    def _text2text_generation(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        text = client.text_generation(text_input(inputs, "text"), max_new_tokens=self.max_new_tokens)
        return ExpertOutput(text=str(text).strip())

    def _summarization(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.summarization(text_input(inputs, "text"))
        return ExpertOutput(text=str(result.summary_text or "").strip())

    def _translation(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        target = str(inputs.get("target_language") or "").strip()
        pair = language_pair_from_name(model.id)
        # the API takes a target language only with its source: known for a model of one language pair
        languages = {"src_lang": pair[0], "tgt_lang": language_code(target)} if target and pair else {}
        result = client.translation(text_input(inputs, "text"), **languages)
        output = ExpertOutput(text=str(result.translation_text or "").strip())
        if target:
            output.extra["target_language"] = target
        return output

    def _question_answering(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.question_answering(question=text_input(inputs, "text"), context=text_input(inputs, "context"))
        if isinstance(result, list):
            result = max(result, key=lambda r: r.score or 0.0) if result else None
        if result is None:
            return format_question_answering("", 0.0, 0, 0)
        return format_question_answering(
            str(result.answer or "").strip(), float(result.score or 0.0), int(result.start or 0), int(result.end or 0)
        )

    def _conversational(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.chat_completion(
            messages=[{"role": "user", "content": text_input(inputs, "text")}], max_tokens=self.max_new_tokens
        )
        choices = result.choices or []
        content = choices[0].message.content if choices and choices[0].message else ""
        return ExpertOutput(text=str(content or "").strip())

    def _text_generation(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        text = client.text_generation(
            text_input(inputs, "text"), max_new_tokens=self.max_new_tokens, return_full_text=False
        )
        return ExpertOutput(text=str(text))

    def _sentence_similarity(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        scores = client.sentence_similarity(text_input(inputs, "text"), [text_input(inputs, "text2")])
        if not scores:
            raise ExpertError("the server returned no similarity score")
        return format_sentence_similarity(float(scores[0]))

    def _zero_shot_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        labels = parse_labels(text_input(inputs, "labels"))
        result = client.zero_shot_classification(text_input(inputs, "text"), candidate_labels=labels)
        return format_zero_shot_classification(_flat(result))

    def _feature_extraction(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        return format_feature_extraction(client.feature_extraction(text_input(inputs, "text")))

    def _tabular_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        value = inputs.get("table")
        if value is None:
            raise ExpertError(f"missing input 'table' (given: {', '.join(sorted(inputs)) or 'none'})")
        table = value if isinstance(value, dict) else parse_csv_table(value)
        labels = client.tabular_classification(table=table)
        return format_tabular_classification(labels)

    def _object_detection(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        image = image_input(inputs, "image")
        found = client.object_detection(_png(image), threshold=self.detection_threshold)
        return format_object_detection(image, found)

    def _image_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        return format_image_classification(
            client.image_classification(_png(image_input(inputs, "image")), top_k=self.top_k)
        )

    def _image_to_image(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        prompt = str(inputs.get("text") or "").strip() or None
        result = client.image_to_image(_png(image_input(inputs, "image")), prompt=prompt)
        return ExpertOutput(image=_rgb(result))

    def _image_to_text(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.image_to_text(_png(image_input(inputs, "image")))
        return ExpertOutput(text=str(result.generated_text or "").strip())

    def _text_to_image(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        return ExpertOutput(image=_rgb(client.text_to_image(text_input(inputs, "text"))))

    def _text_to_video(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        video = bytes(client.text_to_video(text_input(inputs, "text")) or b"")
        if not video:
            raise ExpertError("the server returned an empty video")
        if not is_mp4(video):
            raise ExpertError(f"the server returned {len(video)} bytes that are not an MP4 video: {video[:16]!r}...")
        return ExpertOutput(video=video)

    def _visual_question_answering(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        answers = client.visual_question_answering(
            image=_png(image_input(inputs, "image")), question=text_input(inputs, "text"), top_k=self.top_k
        )
        return format_visual_question_answering(_flat(answers))

    def _document_question_answering(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        answers = client.document_question_answering(
            image=_png(image_input(inputs, "image")), question=text_input(inputs, "text")
        )
        return format_document_question_answering(_flat(answers))

    def _image_segmentation(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        image = image_input(inputs, "image")
        return format_image_segmentation(image, client.image_segmentation(_png(image)))

    def _text_to_speech(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        return ExpertOutput(audio=self._decode_audio(client.text_to_speech(text_input(inputs, "text"))))

    def _automatic_speech_recognition(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        audio = audio_input(inputs, "audio")
        result = client.automatic_speech_recognition(_wav(audio))
        return ExpertOutput(text=" ".join(str(result.text or "").split()), extra={"seconds": audio.seconds})

    def _audio_to_audio(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        results = client.audio_to_audio(_wav(audio_input(inputs, "audio")))
        if not results:
            raise ExpertError("the server returned no audio")
        output = ExpertOutput(audio=self._decode_audio(results[0].blob))
        output.extra["labels"] = [str(r.label) for r in results]
        return output

    def _audio_classification(self, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
        result = client.audio_classification(_wav(audio_input(inputs, "audio")), top_k=self.top_k)
        return format_audio_classification(_flat(result))

    def _decode_audio(self, data: bytes) -> Audio:
        import soundfile

        try:
            samples, rate = soundfile.read(io.BytesIO(bytes(data)), dtype="float32", always_2d=True)
        except Exception as exc:
            raise ExpertError(f"the server's audio could not be decoded ({len(data)} bytes): {exc}") from exc
        return waveform_audio(samples.mean(axis=1), int(rate), self.max_audio_seconds)


# --- errors ---------------------------------------------------------------------------------------------------------


class _Failure:
    """What went wrong with one request, and whether asking again may help."""

    __slots__ = ("estimated_time", "kind", "message", "retry_after", "status")

    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        estimated_time: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind  # "timeout", "loading", "retry", "offline" or "fail"
        self.message = message
        self.status = status
        self.estimated_time = estimated_time
        self.retry_after = retry_after


def _classify(exc: BaseException) -> _Failure:
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

    if isinstance(exc, InferenceTimeoutError | TimeoutError):
        return _Failure("timeout", str(exc))
    if isinstance(exc, OfflineModeIsEnabled):
        return _Failure("offline", str(exc))
    http_error = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
    if isinstance(http_error, HfHubHTTPError) and http_error.response is not None:
        response = http_error.response
        status = int(response.status_code)
        body = _json_body(response)
        message = _server_message(body, response) or str(exc).splitlines()[0]
        estimated = body.get("estimated_time") if isinstance(body, dict) else None
        if status == 503 and (isinstance(estimated, int | float) or "loading" in message.lower()):
            return _Failure("loading", message, status, float(estimated) if estimated is not None else None)
        if status in RETRY_STATUSES:
            return _Failure("retry", message, status, retry_after=_retry_after(response))
        return _Failure("fail", message, status)
    if _is_connection_error(exc):
        return _Failure("retry", f"{type(exc).__name__}: {exc}")
    return _Failure("fail", f"{type(exc).__name__}: {exc}")


def _json_body(response: Any) -> Any:
    try:
        return response.json()
    except Exception:
        return None


def _server_message(body: Any, response: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error") or body.get("message") or body.get("detail")
        if isinstance(error, list):
            error = "; ".join(str(e) for e in error)
        if error:
            return str(error)[:500]
    try:
        text = str(response.text or "").strip()
    except Exception:
        text = ""
    if text and "html" not in str(response.headers.get("content-type", "")).lower():
        return text[:500]
    return str(getattr(response, "reason_phrase", "") or "")


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import httpx2 as httpx
    except ImportError:  # huggingface_hub before 2.x
        import httpx  # type: ignore[no-redef]
    return isinstance(exc, httpx.TransportError | ConnectionError)


def _colon(message: str) -> str:
    return f": {message}" if message else ""


# --- conversions ----------------------------------------------------------------------------------------------------


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _wav(audio: Audio) -> bytes:
    import soundfile

    buffer = io.BytesIO()
    samples = np.clip(np.asarray(audio.array, dtype=np.float32), -1.0, 1.0)
    soundfile.write(buffer, samples, int(audio.sampling_rate), format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _rgb(image: Any) -> Image.Image:
    if isinstance(image, bytes | bytearray):
        image = Image.open(io.BytesIO(bytes(image)))
    if not isinstance(image, Image.Image):
        raise ExpertError(f"the server returned a {type(image).__name__}, not an image")
    image.load()
    return image.convert("RGB")


def _flat(result: Any) -> list[Any]:
    """A list of result elements, whether the server nested it in another list (``[[...]]``) or not."""
    if result is None:
        return []
    if isinstance(result, dict):
        return [result]
    items = list(result)
    if len(items) == 1 and isinstance(items[0], list):
        items = list(items[0])
    flat: list[Any] = []
    for item in items:
        if isinstance(item, list):
            flat.extend(item)
        else:
            flat.append(item)
    return flat


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


def _cannot_honour(task: str, model: ModelSpec, inputs: ExpertInputs) -> str | None:
    """Why ``model`` cannot do what these inputs ask (a model named after one language pair asked for another
    target language), or ``None``: a node never reports success for work the model did not do."""
    target = str(inputs.get("target_language") or "").strip()
    if task != "translation" or not target:
        return None
    pair = language_pair_from_name(model.id)
    if pair and language_code(pair[1]) != language_code(target):
        return f"it translates {pair[0]} to {pair[1]} only, not into {target}"
    return None


def is_mp4(data: bytes) -> bool:
    """Whether ``data`` starts like an ISO base media file (MP4, MOV): a box, then ``ftyp``."""
    return len(data) >= 12 and data[4:8] == b"ftyp"


# --- URLs and offline mode ------------------------------------------------------------------------------------------


def _is_url(target: str) -> bool:
    return target.startswith(("http://", "https://"))


def _hub_hosts() -> tuple[str, ...]:
    from huggingface_hub import constants

    hosts = {"huggingface.co", "hf.co"}
    endpoint_host = urlparse(constants.ENDPOINT).hostname
    if endpoint_host:
        hosts.add(endpoint_host.lower())
    return tuple(sorted(hosts))


def _is_hub_url(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in _hub_hosts())


_offline_lock = threading.Lock()
_offline_installed = False


def allow_endpoints_when_offline() -> bool:
    """Let huggingface_hub reach endpoints that are not the Hub while it is in offline mode.

    Installs (once per process) an HTTP client whose offline check only refuses the Hub's hosts. Does nothing when
    huggingface_hub already uses an HTTP client factory other than its default one (someone configured it: proxies,
    certificates), and says so in the log. Returns whether the client is installed.
    """
    global _offline_installed
    with _offline_lock:
        if _offline_installed:
            return True
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils import _http

        if getattr(_http, "_GLOBAL_CLIENT_FACTORY", None) is not getattr(_http, "default_client_factory", None):
            logger.warning(
                "huggingface_hub uses a custom HTTP client: in offline mode it may refuse requests to endpoints"
            )
            return False

        def hook(request: Any) -> Any:
            if _is_hub_url(str(request.url)):
                return _http.hf_request_event_hook(request)
            return None

        def factory() -> Any:
            client = _http.default_client_factory()
            client.event_hooks["request"] = [hook]
            return client

        set_client_factory(factory)
        _offline_installed = True
        logger.info("offline mode: requests to endpoints other than the Hub are allowed")
        return True
