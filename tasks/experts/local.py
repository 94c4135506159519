"""Run expert models in this process with transformers.

:class:`LocalBackend` loads a model from ``ModelSpec.source`` (a local folder or a Hub id, with the spec's
revision) through transformers' own ``pipeline()`` or Auto classes, so a Hub model and a folder written by
``save_pretrained`` take the same path. Loaded models live in a :class:`~tasks.experts.cache.ModelCache`
keyed by (task, source, revision, device); every call holds the entry's lock while the model runs.

Tasks and how they run (transformers 5 removed the summarization, translation and question-answering
pipelines and maps image-to-text to image-text-to-text, so those use the model classes directly):

==============================  ===================================================================
text-classification             ``pipeline("text-classification")``, every label with its score
token-classification            ``pipeline("token-classification", aggregation_strategy="simple")``
text-generation                 ``pipeline("text-generation")``, prompt trimmed to the context window
summarization, translation      ``AutoTokenizer`` + ``AutoModelForSeq2SeqLM.generate``
question-answering              ``AutoTokenizer`` + ``AutoModelForQuestionAnswering``, best span
image-classification            ``pipeline("image-classification")``
object-detection                ``pipeline("object-detection")``, boxes drawn on a copy of the image
image-to-text                   ``AutoModelForImageTextToText.generate`` (ViT-GPT2, BLIP, ...)
automatic-speech-recognition    ``pipeline("automatic-speech-recognition")`` (CTC models, Whisper)
text-to-speech                  ``pipeline("text-to-speech")`` (VITS / MMS-TTS and other waveform models)
==============================  ===================================================================

Translation: the optional ``target_language`` argument (e.g. ``"French"``) only steers T5-style multi-task
models, whose input gets the prefix ``"translate English to {target}: "``; models trained for one language
pair (Marian ``opus-mt-*`` and the like) translate into their own target language whatever it says.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tasks.experts.base import Audio, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.cache import CacheEntry, ModelCache, default_cache
from tasks.task_types import normalize_task_name

logger = logging.getLogger(__name__)

#: Tasks this backend runs.
SUPPORTED_TASKS: tuple[str, ...] = (
    "text-classification",
    "token-classification",
    "text-generation",
    "summarization",
    "translation",
    "question-answering",
    "image-classification",
    "object-detection",
    "image-to-text",
    "automatic-speech-recognition",
    "text-to-speech",
)

_BOX_COLORS: tuple[str, ...] = ("red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "white")


@dataclass
class _Seq2Seq:
    tokenizer: Any
    model: Any
    max_input_tokens: int
    max_target_positions: int | None


@dataclass
class _QuestionAnswering:
    tokenizer: Any
    model: Any
    max_length: int


@dataclass
class _ImageToText:
    processor: Any
    tokenizer: Any
    model: Any
    max_target_positions: int | None


_LOAD_LOCK = threading.Lock()


class LocalBackend:
    """Runs the tasks in :data:`SUPPORTED_TASKS` with transformers models loaded in this process."""

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
        self._loaders: dict[str, Callable[[ModelSpec], Any]] = {
            "text-classification": lambda m: self._pipeline("text-classification", m),
            "token-classification": lambda m: self._pipeline("token-classification", m),
            "text-generation": lambda m: self._pipeline("text-generation", m),
            "summarization": self._load_seq2seq,
            "translation": self._load_seq2seq,
            "question-answering": self._load_question_answering,
            "image-classification": lambda m: self._pipeline("image-classification", m),
            "object-detection": lambda m: self._pipeline("object-detection", m),
            "image-to-text": self._load_image_to_text,
            "automatic-speech-recognition": lambda m: self._pipeline("automatic-speech-recognition", m),
            "text-to-speech": lambda m: self._pipeline("text-to-speech", m),
        }
        self._runners: dict[str, Callable[[Any, ExpertInputs], ExpertOutput]] = {
            "text-classification": self._run_text_classification,
            "token-classification": self._run_token_classification,
            "text-generation": self._run_text_generation,
            "summarization": self._run_summarization,
            "translation": self._run_translation,
            "question-answering": self._run_question_answering,
            "image-classification": self._run_image_classification,
            "object-detection": self._run_object_detection,
            "image-to-text": self._run_image_to_text,
            "automatic-speech-recognition": self._run_speech_recognition,
            "text-to-speech": self._run_text_to_speech,
        }

    # --- public -----------------------------------------------------------------------------------------------

    def supports(self, task: str) -> bool:
        return normalize_task_name(task) in self._runners

    def run(self, task: str, model: ModelSpec, inputs: ExpertInputs) -> ExpertOutput:
        """Run ``task`` with ``model`` on ``inputs``; raise :class:`ExpertError` naming the model on any failure."""
        task_name = normalize_task_name(task)
        runner = self._runners.get(task_name)
        if runner is None:
            raise ExpertError(
                f"the local backend cannot run task {task!r} (model {model.id!r}); "
                f"supported tasks: {', '.join(SUPPORTED_TASKS)}"
            )
        entry = self.load(task_name, model)
        with entry.lock:
            try:
                output = runner(entry.value, inputs)
            except ExpertError as exc:
                raise ExpertError(f"model {_describe(model)} cannot run {task_name}: {exc}") from exc
            except Exception as exc:
                raise ExpertError(
                    f"model {_describe(model)} failed on {task_name}: {type(exc).__name__}: {exc}"
                ) from exc
        output.extra.setdefault("model", model.id)
        output.extra.setdefault("backend", self.name)
        return output

    def load(self, task: str, model: ModelSpec) -> CacheEntry[Any]:
        """Load (or fetch from the cache) what runs ``task`` with ``model``; return the cache entry."""
        task_name = normalize_task_name(task)
        loader = self._loaders.get(task_name)
        if loader is None:
            raise ExpertError(
                f"the local backend cannot load model {model.id!r} for task {task!r}; "
                f"supported tasks: {', '.join(SUPPORTED_TASKS)}"
            )
        key = (task_name, model.source, model.revision, self.device)

        def load() -> Any:
            start = time.perf_counter()
            # transformers builds models on the meta device through process-global patches of torch:
            # two loads at once in one process corrupt each other ("Cannot copy out of meta tensor")
            with _LOAD_LOCK:
                value = loader(model)
            logger.info(
                "loaded model %s for %s on %s in %.2f s", model.id, task_name, self.device, time.perf_counter() - start
            )
            return value

        evictions = self.cache.stats()["evictions"]
        try:
            entry = self.cache.get_or_load(key, load)
        except Exception as exc:
            raise ExpertError(
                f"could not load model {_describe(model)} for {task_name}: {type(exc).__name__}: {exc}"
            ) from exc
        if self.device != "cpu" and self.cache.stats()["evictions"] > evictions:
            _release_accelerator_memory()
        return entry

    # --- loading ------------------------------------------------------------------------------------------------

    def _hub_kwargs(self, model: ModelSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self.trust_remote_code}
        if model.revision:
            kwargs["revision"] = model.revision
        if self.token:
            kwargs["token"] = self.token
        return kwargs

    def _pipeline(self, task: str, model: ModelSpec) -> Any:
        from transformers import pipeline

        pipe = pipeline(task, model=model.source, device=self.device, **self._hub_kwargs(model))
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and task in {"text-classification", "token-classification", "text-generation"}:
            default = 2048 if task == "text-generation" else 512
            tokenizer.model_max_length = _input_limit(tokenizer, _max_positions(pipe.model.config), default=default)
        return pipe

    def _load_seq2seq(self, model: ModelSpec) -> _Seq2Seq:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        kwargs = self._hub_kwargs(model)
        tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
        seq2seq = AutoModelForSeq2SeqLM.from_pretrained(model.source, **kwargs).to(self.device).eval()
        positions = _max_positions(seq2seq.config)
        return _Seq2Seq(
            tokenizer=tokenizer,
            model=seq2seq,
            max_input_tokens=_input_limit(tokenizer, positions, default=512),
            max_target_positions=positions,
        )

    def _load_question_answering(self, model: ModelSpec) -> _QuestionAnswering:
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer

        kwargs = self._hub_kwargs(model)
        tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("question answering needs a fast tokenizer (for character offsets)")
        qa = AutoModelForQuestionAnswering.from_pretrained(model.source, **kwargs).to(self.device).eval()
        return _QuestionAnswering(
            tokenizer=tokenizer, model=qa, max_length=_input_limit(tokenizer, _max_positions(qa.config), default=384)
        )

    def _load_image_to_text(self, model: ModelSpec) -> _ImageToText:
        from transformers import (
            AutoConfig,
            AutoImageProcessor,
            AutoModelForImageTextToText,
            AutoProcessor,
            AutoTokenizer,
        )

        kwargs = self._hub_kwargs(model)
        config = AutoConfig.from_pretrained(model.source, **kwargs)
        if config.model_type == "vision-encoder-decoder":
            processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
            tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
            target_positions = _max_positions(config.decoder)
        else:
            processor = AutoProcessor.from_pretrained(model.source, **kwargs)
            tokenizer = getattr(processor, "tokenizer", processor)
            text_config = getattr(config, "text_config", None)
            target_positions = _max_positions(text_config) if text_config is not None else None
        captioner = AutoModelForImageTextToText.from_pretrained(model.source, **kwargs).to(self.device).eval()
        return _ImageToText(
            processor=processor, tokenizer=tokenizer, model=captioner, max_target_positions=target_positions
        )

    # --- running ------------------------------------------------------------------------------------------------

    def _run_text_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        scores = pipe(text, top_k=None, truncation=True)
        if scores and isinstance(scores[0], list):
            scores = scores[0]
        labels = [{"label": str(s["label"]), "score": float(s["score"])} for s in scores]
        labels.sort(key=lambda s: s["score"], reverse=True)
        best = labels[0] if labels else None
        summary = f"{best['label']} ({best['score']:.2f})" if best else "no label"
        return ExpertOutput(text=summary, json=labels)

    def _run_token_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        limit = int(pipe.tokenizer.model_max_length)
        kwargs: dict[str, Any] = {"aggregation_strategy": "simple"}
        if getattr(pipe.tokenizer, "is_fast", False) and len(pipe.tokenizer(text)["input_ids"]) > limit:
            kwargs["stride"] = max(1, limit // 8)
        entities = [
            {
                "entity_group": str(e.get("entity_group", e.get("entity", ""))),
                "word": str(e.get("word", "")),
                "score": float(e.get("score", 0.0)),
                "start": _int_or_none(e.get("start")),
                "end": _int_or_none(e.get("end")),
            }
            for e in pipe(text, **kwargs)
        ]
        summary = ", ".join(f"{e['word']}: {e['entity_group']}" for e in entities) if entities else "no entities found"
        return ExpertOutput(text=summary, json=entities)

    def _run_text_generation(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        prompt = _text(inputs, "text")
        tokenizer = pipe.tokenizer
        limit = int(tokenizer.model_max_length)
        new_tokens = max(1, min(self.max_new_tokens, limit // 2))
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        keep = max(1, limit - new_tokens - 2)
        if len(ids) > keep:
            prompt = tokenizer.decode(ids[-keep:], skip_special_tokens=True)
        kwargs: dict[str, Any] = {"max_new_tokens": new_tokens, "return_full_text": False}
        if pipe.model.generation_config.pad_token_id is None and tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id
        result = pipe(prompt, **kwargs)
        generated = str(result[0]["generated_text"]) if result else ""
        return ExpertOutput(text=generated)

    def _run_summarization(self, loaded: _Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        prefix = _task_prefix(loaded.model.config, "summarization")
        return ExpertOutput(text=self._generate_seq2seq(loaded, prefix + text))

    def _run_translation(self, loaded: _Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        target = str(inputs.get("target_language") or "").strip()
        prefix = _translation_prefix(loaded.model.config, target)
        output = ExpertOutput(text=self._generate_seq2seq(loaded, prefix + text))
        if target:
            output.extra["target_language"] = target
        return output

    def _generate_seq2seq(self, loaded: _Seq2Seq, text: str) -> str:
        import torch

        encoded = loaded.tokenizer(text, truncation=True, max_length=loaded.max_input_tokens, return_tensors="pt")
        encoded = {k: v.to(self.device) for k, v in encoded.items()}
        new_tokens = _bounded_new_tokens(self.max_new_tokens, loaded.max_target_positions)
        with torch.inference_mode():
            generated = loaded.model.generate(**encoded, max_new_tokens=new_tokens)
        return str(loaded.tokenizer.decode(generated[0], skip_special_tokens=True)).strip()

    def _run_question_answering(self, loaded: _QuestionAnswering, inputs: ExpertInputs) -> ExpertOutput:
        import torch

        question = _text(inputs, "text")
        context = _text(inputs, "context")
        tokenizer = loaded.tokenizer
        question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
        max_length = loaded.max_length
        if question_tokens > max_length // 2:
            raise ValueError(f"the question is too long ({question_tokens} tokens, at most {max_length // 2})")
        encoded = tokenizer(
            question,
            context,
            truncation="only_second",
            max_length=max_length,
            stride=max(1, min(128, (max_length - question_tokens) // 4)),
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            padding="longest",
            return_tensors="pt",
        )
        offsets = encoded.pop("offset_mapping").tolist()
        encoded.pop("overflow_to_sample_mapping", None)
        accepted = set(_forward_arg_names(loaded.model))
        model_inputs = {k: v.to(self.device) for k, v in encoded.items() if not accepted or k in accepted}
        with torch.inference_mode():
            out = loaded.model(**model_inputs)
        start_logits = out.start_logits.float().cpu()
        end_logits = out.end_logits.float().cpu()

        best: tuple[float, int, int] | None = None
        max_answer_tokens = 30
        for window in range(start_logits.shape[0]):
            sequence_ids = encoded.sequence_ids(window)
            context_mask = torch.tensor([s == 1 for s in sequence_ids], dtype=torch.bool)
            if not bool(context_mask.any()):
                continue
            starts = start_logits[window].masked_fill(~context_mask, float("-inf")).softmax(-1)
            ends = end_logits[window].masked_fill(~context_mask, float("-inf")).softmax(-1)
            pair = torch.triu(starts[:, None] * ends[None, :])
            pair = pair - torch.triu(pair, diagonal=max_answer_tokens)
            flat = int(pair.argmax())
            i, j = divmod(flat, pair.shape[1])
            score = float(pair[i, j])
            if best is None or score > best[0]:
                char_start = int(offsets[window][i][0])
                char_end = int(offsets[window][j][1])
                best = (score, char_start, char_end)
        if best is None:
            return ExpertOutput(text="", json={"answer": "", "score": 0.0, "start": 0, "end": 0})
        score, char_start, char_end = best
        answer = context[char_start:char_end].strip()
        return ExpertOutput(text=answer, json={"answer": answer, "score": score, "start": char_start, "end": char_end})

    def _run_image_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        labels = [{"label": str(s["label"]), "score": float(s["score"])} for s in pipe(image, top_k=self.top_k)]
        summary = ", ".join(f"{s['label']} ({s['score']:.2f})" for s in labels) if labels else "no label"
        return ExpertOutput(text=summary, json=labels)

    def _run_object_detection(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        found = pipe(image, threshold=self.detection_threshold)
        objects = [
            {
                "label": str(d["label"]),
                "score": float(d["score"]),
                "box": {k: round(float(v)) for k, v in d["box"].items()},
            }
            for d in found
        ]
        objects.sort(key=lambda d: d["score"], reverse=True)
        drawn = _draw_boxes(image, objects)
        if objects:
            noun = "object" if len(objects) == 1 else "objects"
            summary = f"{len(objects)} {noun}: " + ", ".join(f"{d['label']} ({d['score']:.2f})" for d in objects)
        else:
            summary = "no objects found"
        return ExpertOutput(text=summary, image=drawn, json=objects)

    def _run_image_to_text(self, loaded: _ImageToText, inputs: ExpertInputs) -> ExpertOutput:
        import torch

        image = _image(inputs, "image")
        model_inputs = dict(loaded.processor(images=image, return_tensors="pt"))
        model_inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in model_inputs.items()}
        new_tokens = _bounded_new_tokens(self.max_new_tokens, loaded.max_target_positions)
        with torch.inference_mode():
            generated = loaded.model.generate(**model_inputs, max_new_tokens=new_tokens)
        if "input_ids" in model_inputs and not loaded.model.config.is_encoder_decoder:
            generated = generated[:, model_inputs["input_ids"].shape[1] :]
        caption = str(loaded.tokenizer.decode(generated[0], skip_special_tokens=True)).strip()
        return ExpertOutput(text=caption)

    def _run_speech_recognition(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        audio = _audio(inputs, "audio")
        target_rate = int(pipe.feature_extractor.sampling_rate)
        samples = _resample(audio.array, audio.sampling_rate, target_rate)
        kwargs: dict[str, Any] = {}
        if len(samples) > 30 * target_rate:
            kwargs["chunk_length_s"] = 30
        result = pipe({"raw": samples, "sampling_rate": target_rate}, **kwargs)
        text = str(result.get("text", "") if isinstance(result, dict) else result)
        if getattr(pipe, "type", None) == "ctc":
            text = _strip_special_tokens(text, pipe.tokenizer)
        return ExpertOutput(text=" ".join(text.split()), extra={"seconds": len(samples) / target_rate})

    def _run_text_to_speech(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and not tokenizer(text).get("input_ids"):
            raise ExpertError(f"the text has no characters this voice can read: {text[:80]!r}")
        result = pipe(text)
        rate = int(result["sampling_rate"])
        if rate <= 0:
            raise ValueError(f"the model reported a sampling rate of {rate}")
        samples = np.asarray(result["audio"], dtype=np.float32)
        if samples.ndim > 1:
            samples = samples.reshape(-1) if 1 in samples.shape else samples.mean(axis=0)
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
        samples = np.clip(samples[: int(self.max_audio_seconds * rate)], -1.0, 1.0).astype(np.float32)
        return ExpertOutput(audio=Audio(array=samples, sampling_rate=rate))


# --- helpers ------------------------------------------------------------------------------------------------------


def _describe(model: ModelSpec) -> str:
    if model.source != model.id:
        return f"{model.id!r} (from {model.source})"
    return repr(model.id)


def _required(inputs: ExpertInputs, name: str) -> Any:
    value = inputs.get(name)
    if value is None:
        given = ", ".join(sorted(inputs)) or "none"
        raise ExpertError(f"missing input {name!r} (given: {given})")
    return value


def _text(inputs: ExpertInputs, name: str) -> str:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def _image(inputs: ExpertInputs, name: str) -> Image.Image:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        value = Image.open(io.BytesIO(value))
    elif isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    if not isinstance(value, Image.Image):
        raise ExpertError(f"input {name!r} is a {type(value).__name__}, not an image")
    return value.convert("RGB")


def _audio(inputs: ExpertInputs, name: str) -> Audio:
    value = _required(inputs, name)
    if isinstance(value, bytes):
        import soundfile

        array, rate = soundfile.read(io.BytesIO(value), dtype="float32", always_2d=False)
        value = Audio(array=array, sampling_rate=int(rate))
    if not isinstance(value, Audio):
        raise ExpertError(f"input {name!r} is a {type(value).__name__}, not audio")
    array = np.asarray(value.array, dtype=np.float32)
    if array.ndim > 1:
        array = array.mean(axis=1) if array.shape[0] > array.shape[1] else array.mean(axis=0)
    return Audio(array=np.nan_to_num(array), sampling_rate=int(value.sampling_rate))


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (good enough for speech recognition input)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target or len(samples) == 0:
        return samples
    duration = len(samples) / rate
    count = max(1, round(duration * target))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(samples), dtype=np.float64), samples).astype(np.float32)


def _release_accelerator_memory() -> None:
    """Give evicted models' GPU memory back to the device."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _strip_special_tokens(text: str, tokenizer: Any) -> str:
    """Drop special tokens that a CTC decode keeps (the ASR pipeline decodes CTC output without skipping them)."""
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        token = getattr(tokenizer, name, None)
        if isinstance(token, str) and token:
            text = text.replace(token, "")
    return text


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def _max_positions(config: Any) -> int | None:
    """The number of positions a model can attend to, when its config says so."""
    for name in ("max_position_embeddings", "n_positions", "max_target_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _input_limit(tokenizer: Any, positions: int | None, default: int) -> int:
    """How many tokens an input may have: the smaller of the tokenizer's and the model's limits."""
    limits = [n for n in (getattr(tokenizer, "model_max_length", None), positions) if isinstance(n, int) and n > 0]
    limits = [n for n in limits if n < 1_000_000]
    return min(limits) if limits else default


def _bounded_new_tokens(max_new_tokens: int, positions: int | None) -> int:
    if positions is None:
        return max_new_tokens
    return max(1, min(max_new_tokens, positions - 2))


def _forward_arg_names(model: Any) -> list[str]:
    import inspect

    try:
        return list(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return []


def _task_prefix(config: Any, task: str) -> str:
    params = getattr(config, "task_specific_params", None) or {}
    prefix = (params.get(task) or {}).get("prefix")
    return str(prefix) if prefix else ""


def _translation_prefix(config: Any, target: str) -> str:
    """The input prefix for T5-style multi-task models (empty for models trained on one language pair)."""
    params = getattr(config, "task_specific_params", None) or {}
    translation = {k: v for k, v in params.items() if k.startswith("translation") and isinstance(v, dict)}
    if target:
        for value in translation.values():
            prefix = str(value.get("prefix") or "")
            if prefix and target.lower() in prefix.lower():
                return prefix
        if getattr(config, "model_type", "") in {"t5", "mt5", "umt5"}:
            return f"translate English to {target}: "
    elif translation:
        return str(next(iter(translation.values())).get("prefix") or "")
    return ""


def _draw_boxes(image: Image.Image, objects: list[dict[str, Any]]) -> Image.Image:
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    width = max(1, round(min(drawn.size) / 150))
    for index, obj in enumerate(objects):
        box = obj["box"]
        color = _BOX_COLORS[index % len(_BOX_COLORS)]
        corners = (box["xmin"], box["ymin"], max(box["xmin"], box["xmax"]), max(box["ymin"], box["ymax"]))
        draw.rectangle(corners, outline=color, width=width)
        label = f"{obj['label']} {obj['score']:.2f}"
        left, top, right, bottom = draw.textbbox((corners[0], corners[1]), label)
        text_top = max(0, corners[1] - (bottom - top) - 2)
        draw.rectangle(
            (corners[0], text_top, corners[0] + (right - left) + 2, text_top + (bottom - top) + 2), fill=color
        )
        draw.text((corners[0] + 1, text_top), label, fill="black")
    return drawn
