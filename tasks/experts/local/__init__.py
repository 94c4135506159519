"""Run expert models in this process with transformers.

:class:`LocalBackend` loads a model from ``ModelSpec.source`` (a local folder or a Hub id, with the spec's
revision) through transformers' own ``pipeline()`` or Auto classes, so a Hub model and a folder written by
``save_pretrained`` take the same path. Loaded models live in a :class:`~tasks.experts.cache.ModelCache`
keyed by (task, source, revision, device); every call holds the entry's lock while the model runs.

The package, one module per concern:

==================  ==========================================================================================
``registry``        :data:`REGISTRY`: each task type's loader and runner, registered once with ``@local_task``
``text``            text tasks (classification, tagging, generation, seq2seq, extractive QA, embeddings)
``vision``          image tasks (classification, detection, segmentation, depth, super-resolution)
``multimodal``      image + text tasks (captioning, visual and document question answering)
``audio``           speech recognition, audio classification, text-to-speech
``loading``         ``from_pretrained`` arguments, pipelines, limits read from configs and tokenizers
``architectures``   the architectures proven per task type, and :func:`local_refusal` for availability
==================  ==========================================================================================

:data:`SUPPORTED_TASKS` is derived from the registry; the task types it leaves out are those of
:data:`NOT_SERVED_LOCALLY` (which says why; they run through the remote backend). Output formatting shared with the
remote backend lives in :mod:`tasks.experts.outputs`, argument reading in :mod:`tasks.experts.arguments`.

A node never reports success for work it did not do: a request a local model cannot honour (an image edit asked of
a super-resolution model, a translation into a language the model does not produce) raises
:class:`~tasks.experts.base.CannotRunHereError`, so the fallback tries the next candidate.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from tasks.experts.base import CannotRunHereError, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.cache import CacheEntry, ModelCache, default_cache
from tasks.experts.local import audio, multimodal, text, vision
from tasks.experts.local.architectures import (
    PROVEN_ARCHITECTURES,
    SUPPORTED_ARCHITECTURES,
    TESTED_REQUIREMENTS,
    UNTESTED_REQUIREMENTS,
    local_refusal,
    requirement_refusal,
)
from tasks.experts.local.loading import (
    LOAD_LOCK,
    describe,
    hub_unreachable,
    out_of_memory,
    release_accelerator_memory,
)
from tasks.experts.local.registry import REGISTRY, LocalTask
from tasks.experts.local.text import PLAIN_CHAT_PROMPT
from tasks.task_types import NOT_SERVED_LOCALLY, TASK_TYPES, normalize_task_name

__all__ = [
    "NOT_SERVED_LOCALLY",
    "PLAIN_CHAT_PROMPT",
    "PROVEN_ARCHITECTURES",
    "REGISTRY",
    "SUPPORTED_ARCHITECTURES",
    "SUPPORTED_TASKS",
    "TESTED_REQUIREMENTS",
    "UNTESTED_REQUIREMENTS",
    "LocalBackend",
    "local_refusal",
    "requirement_refusal",
]

logger = logging.getLogger(__name__)

#: The modality modules whose ``@local_task`` runners fill :data:`REGISTRY`.
MODALITIES = (text, vision, multimodal, audio)

#: Tasks this backend runs, in the task table's order: those registered by the modality modules.
SUPPORTED_TASKS: tuple[str, ...] = tuple(t for t in TASK_TYPES if t in REGISTRY)


class LocalBackend:
    """Runs the tasks in :data:`SUPPORTED_TASKS` with transformers models loaded in this process.

    ``trust_remote_code`` is this backend's half of a double opt-in: a model's repository code runs only for a
    :class:`ModelSpec` whose catalog entry says ``trust_remote_code`` too. A model that runs out of memory while
    loading, or cannot honour a request, raises :class:`CannotRunHereError` (the next candidate may do).
    ``speecht5_vocoder`` and ``speaker_embeddings`` are what SpeechT5 text-to-speech speaks with (see
    :mod:`tasks.experts.local.audio`).
    """

    name = "local"

    def __init__(
        self,
        cache: ModelCache | None = None,
        device: str = "cpu",
        max_new_tokens: int = 32,
        token: str | None = None,
        trust_remote_code: bool = False,
        detection_threshold: float = 0.5,
        max_audio_seconds: float = 30.0,
        top_k: int = 5,
        speecht5_vocoder: str = "microsoft/speecht5_hifigan",
        speaker_embeddings: str | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        self.cache = cache if cache is not None else default_cache()
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.token = token
        self.trust_remote_code = trust_remote_code
        self.detection_threshold = detection_threshold
        self.max_audio_seconds = max_audio_seconds
        self.top_k = top_k
        self.speecht5_vocoder = speecht5_vocoder
        self.speaker_embeddings = speaker_embeddings

    @property
    def tasks(self) -> frozenset[str]:
        """The task types this backend runs."""
        return frozenset(REGISTRY)

    def supports(self, task: str) -> bool:
        return normalize_task_name(task) in REGISTRY

    def run(self, task: str, model: ModelSpec, inputs: ExpertInputs) -> ExpertOutput:
        """Run ``task`` with ``model`` on ``inputs``; raise :class:`ExpertError` naming the model on any failure
        (:class:`CannotRunHereError` when the model cannot honour the request here)."""
        local = self._task(task, model)
        if local.refuse is not None:
            reason = local.refuse(inputs)
            if reason:
                raise CannotRunHereError(f"model {describe(model)} cannot run {local.name} here: {reason}")
        entry = self.load(local.name, model)
        with entry.lock:
            try:
                output = local.run(self, entry.value, inputs)
            except ExpertError as exc:
                error = CannotRunHereError if isinstance(exc, CannotRunHereError) else ExpertError
                raise error(f"model {describe(model)} cannot run {local.name}: {exc}") from exc
            except Exception as exc:
                raise ExpertError(
                    f"model {describe(model)} failed on {local.name}: {type(exc).__name__}: {exc}"
                ) from exc
        output.extra.setdefault("model", model.id)
        output.extra.setdefault("backend", self.name)
        return output

    def load(self, task: str, model: ModelSpec) -> CacheEntry[Any]:
        """Load (or fetch from the cache) what runs ``task`` with ``model``; return the cache entry."""
        local = self._task(task, model)
        key = (local.name, model.source, model.revision, self.device)

        def load() -> Any:
            start = time.perf_counter()
            with LOAD_LOCK:
                value = local.load(self, model)
            logger.info(
                "loaded model %s for %s on %s in %.2f s", model.id, local.name, self.device, time.perf_counter() - start
            )
            return value

        evictions = self.cache.stats()["evictions"]
        try:
            entry = self.cache.get_or_load(key, load)
        except Exception as exc:
            raise self._load_error(local.name, model, exc) from exc
        if self.device != "cpu" and self.cache.stats()["evictions"] > evictions:
            release_accelerator_memory()
        return entry

    def _task(self, task: str, model: ModelSpec) -> LocalTask:
        task_name = normalize_task_name(task)
        local = REGISTRY.get(task_name)
        if local is None:
            why = NOT_SERVED_LOCALLY.get(task_name)
            reason = f": {why}; it runs through the remote backend" if why else ""
            raise ExpertError(
                f"the local backend cannot run task {task!r} (model {model.id!r}){reason}; "
                f"supported tasks: {', '.join(SUPPORTED_TASKS)}"
            )
        return local

    def _load_error(self, task: str, model: ModelSpec, exc: Exception) -> ExpertError:
        if out_of_memory(exc):
            release_accelerator_memory()
            return CannotRunHereError(
                f"model {describe(model)} does not fit on {self.device}: out of memory while loading it for "
                f"{task} ({type(exc).__name__}: {exc})"
            )
        if "timm" in str(exc) and isinstance(exc, ImportError | OSError | ValueError):
            return CannotRunHereError(
                f"model {describe(model)} cannot load for {task} here: {UNTESTED_REQUIREMENTS['timm']} "
                f"({type(exc).__name__}: {exc})"
            )
        hint = ""
        if "trust_remote_code" in str(exc) and not (self.trust_remote_code and model.trust_remote_code):
            hint = (
                "; it needs the Python code of its repository, which runs only when its catalog entry says "
                "trust_remote_code and HUGGINGGPT_TRUST_REMOTE_CODE=true"
            )
        elif hub_unreachable(exc):
            hint = (
                "; the Hugging Face Hub could not be reached: check the network or HF_ENDPOINT, or set "
                "HF_HUB_OFFLINE=1 and give models with local weights through HUGGINGGPT_CATALOG (local_path)"
            )
        return ExpertError(f"could not load model {describe(model)} for {task}: {type(exc).__name__}: {exc}{hint}")
