"""Run expert models in this process with transformers.

:class:`LocalBackend` loads a model from ``ModelSpec.source`` (a local folder or a Hub id, with the spec's
revision) through transformers' own ``pipeline()`` or Auto classes, so a Hub model and a folder written by
``save_pretrained`` take the same path. Loaded models live in a :class:`~tasks.experts.cache.ModelCache`
keyed by (task, source, revision, device); every call holds the entry's lock while the model runs.

Tasks and how they run (transformers 5 removed the summarization, translation, text2text-generation,
question-answering, visual-question-answering and image-to-image pipelines and maps image-to-text to
image-text-to-text, so those use the model classes directly):

==============================  ===================================================================
text-classification             ``pipeline("text-classification")``, every label with its score
token-classification            ``pipeline("token-classification", aggregation_strategy="simple")``
text-generation                 ``pipeline("text-generation")``, prompt trimmed to the context window
conversational                  ``pipeline("text-generation")`` on one user message: the tokenizer's chat template
                                when it has one, else a plain ``User: ... / Assistant:`` prompt
summarization, translation,     ``AutoTokenizer`` + ``AutoModelForSeq2SeqLM.generate``
text2text-generation
question-answering              ``AutoTokenizer`` + ``AutoModelForQuestionAnswering``, best span
sentence-similarity             ``AutoTokenizer`` + ``AutoModel``, mean-pooled embeddings, cosine of ``text``/``text2``
feature-extraction              ``AutoTokenizer`` + ``AutoModel``, the mean-pooled embedding as a list of floats
zero-shot-classification        ``pipeline("zero-shot-classification")`` (an NLI model), ``labels`` comma-separated
image-classification            ``pipeline("image-classification")``
object-detection                ``pipeline("object-detection")``, boxes drawn on a copy of the image
image-segmentation              ``pipeline("image-segmentation")``, masks drawn in colour on a copy of the image
depth-estimation                ``pipeline("depth-estimation")``, the depth map as a grey image
image-to-image                  ``AutoImageProcessor`` + ``AutoModelForImageToImage`` (Swin2SR super-resolution)
image-to-text                   ``AutoModelForImageTextToText.generate`` (ViT-GPT2, BLIP, ...)
visual-question-answering       ``AutoProcessor`` + ``AutoModelForVisualQuestionAnswering``: ViLT's answer
                                classifier, or ``generate`` for BLIP-style models
document-question-answering     Donut (``VisionEncoderDecoderModel`` with a ``donut-swin`` encoder) prompted with
                                ``<s_docvqa><s_question>...``; LayoutLM-family models through
                                ``pipeline("document-question-answering")``, which needs Tesseract OCR
                                (``pytesseract``) for the words of the page
automatic-speech-recognition    ``pipeline("automatic-speech-recognition")`` (CTC models, Whisper)
audio-classification            ``pipeline("audio-classification")`` (Wav2Vec2, HuBERT, AST, ...)
text-to-speech                  ``pipeline("text-to-speech")`` (VITS / MMS-TTS and other waveform models)
==============================  ===================================================================

Tasks this backend does not serve (see :data:`NOT_SERVED_LOCALLY`; they run through the remote backend):
tabular-classification (Hub tabular models are scikit-learn / skops pipelines, not transformers models),
text-to-image and text-to-video (diffusers pipelines), audio-to-audio (SpeechBrain / Asteroid models; the one
transformers family, SpeechT5 voice conversion, needs a separate vocoder and speaker embeddings).

Translation: the optional ``target_language`` argument (e.g. ``"French"``) only steers T5-style multi-task
models, whose input gets the prefix ``"translate English to {target}: "``; models trained for one language
pair (Marian ``opus-mt-*`` and the like) translate into their own target language whatever it says.

Image-to-image: the optional ``text`` argument is ignored by super-resolution models (the only image-to-image
family in transformers); prompt-driven image editing runs through the remote backend.

The ``format_*`` functions and :func:`draw_boxes` / :func:`draw_masks` / :func:`depth_image` turn raw model results
into an :class:`ExpertOutput`; the remote backend uses the same functions so that downstream nodes cannot tell
which backend produced an output.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tasks.experts.base import Audio, CannotRunHereError, ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.cache import CacheEntry, ModelCache, default_cache
from tasks.task_types import NOT_SERVED_LOCALLY, TASK_TYPES, normalize_task_name

logger = logging.getLogger(__name__)

#: Tasks this backend runs: every task type of the table but those of :data:`NOT_SERVED_LOCALLY` (which says why).
SUPPORTED_TASKS: tuple[str, ...] = tuple(t for t in TASK_TYPES if t not in NOT_SERVED_LOCALLY)

_BOX_COLORS: tuple[str, ...] = ("red", "lime", "blue", "yellow", "magenta", "cyan", "orange", "white")
_MASK_COLORS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
)

#: The prompt of a chat model whose tokenizer has no chat template.
PLAIN_CHAT_PROMPT = "User: {text}\nAssistant:"


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


@dataclass
class _Embedder:
    tokenizer: Any
    model: Any
    max_length: int


@dataclass
class _VisualQuestionAnswering:
    processor: Any
    model: Any
    classifier: bool
    max_text_tokens: int


@dataclass
class _Donut:
    image_processor: Any
    tokenizer: Any
    model: Any
    max_target_positions: int | None


@dataclass
class _ImageToImage:
    processor: Any
    model: Any


_LOAD_LOCK = threading.Lock()


class LocalBackend:
    """Runs the tasks in :data:`SUPPORTED_TASKS` with transformers models loaded in this process.

    ``trust_remote_code`` is this backend's half of a double opt-in: a model's repository code runs only for a
    :class:`ModelSpec` whose catalog entry says ``trust_remote_code`` too. A model that runs out of memory while
    loading raises :class:`CannotRunHereError` (the next candidate may fit).
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
            "text2text-generation": self._load_seq2seq,
            "summarization": self._load_seq2seq,
            "translation": self._load_seq2seq,
            "question-answering": self._load_question_answering,
            "conversational": lambda m: self._pipeline("text-generation", m),
            "text-generation": lambda m: self._pipeline("text-generation", m),
            "sentence-similarity": self._load_embedder,
            "zero-shot-classification": lambda m: self._pipeline("zero-shot-classification", m),
            "feature-extraction": self._load_embedder,
            "object-detection": lambda m: self._pipeline("object-detection", m),
            "image-classification": lambda m: self._pipeline("image-classification", m),
            "image-to-image": self._load_image_to_image,
            "image-to-text": self._load_image_to_text,
            "visual-question-answering": self._load_visual_question_answering,
            "document-question-answering": self._load_document_question_answering,
            "image-segmentation": lambda m: self._pipeline("image-segmentation", m),
            "depth-estimation": lambda m: self._pipeline("depth-estimation", m),
            "text-to-speech": lambda m: self._pipeline("text-to-speech", m),
            "automatic-speech-recognition": lambda m: self._pipeline("automatic-speech-recognition", m),
            "audio-classification": lambda m: self._pipeline("audio-classification", m),
        }
        self._runners: dict[str, Callable[[Any, ExpertInputs], ExpertOutput]] = {
            "text-classification": self._run_text_classification,
            "token-classification": self._run_token_classification,
            "text2text-generation": self._run_text2text_generation,
            "summarization": self._run_summarization,
            "translation": self._run_translation,
            "question-answering": self._run_question_answering,
            "conversational": self._run_conversational,
            "text-generation": self._run_text_generation,
            "sentence-similarity": self._run_sentence_similarity,
            "zero-shot-classification": self._run_zero_shot_classification,
            "feature-extraction": self._run_feature_extraction,
            "object-detection": self._run_object_detection,
            "image-classification": self._run_image_classification,
            "image-to-image": self._run_image_to_image,
            "image-to-text": self._run_image_to_text,
            "visual-question-answering": self._run_visual_question_answering,
            "document-question-answering": self._run_document_question_answering,
            "image-segmentation": self._run_image_segmentation,
            "depth-estimation": self._run_depth_estimation,
            "text-to-speech": self._run_text_to_speech,
            "automatic-speech-recognition": self._run_speech_recognition,
            "audio-classification": self._run_audio_classification,
        }

    # --- public -----------------------------------------------------------------------------------------------

    @property
    def tasks(self) -> frozenset[str]:
        """The task types this backend runs."""
        return frozenset(self._runners)

    def supports(self, task: str) -> bool:
        return normalize_task_name(task) in self._runners

    def run(self, task: str, model: ModelSpec, inputs: ExpertInputs) -> ExpertOutput:
        """Run ``task`` with ``model`` on ``inputs``; raise :class:`ExpertError` naming the model on any failure."""
        task_name = normalize_task_name(task)
        runner = self._runners.get(task_name)
        if runner is None:
            raise ExpertError(_not_served(task, task_name, model))
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
            raise ExpertError(_not_served(task, task_name, model))
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
            if _out_of_memory(exc):
                _release_accelerator_memory()
                raise CannotRunHereError(
                    f"model {_describe(model)} does not fit on {self.device}: out of memory while loading it for "
                    f"{task_name} ({type(exc).__name__}: {exc})"
                ) from exc
            hint = ""
            if "trust_remote_code" in str(exc) and not self._trusts(model):
                hint = (
                    "; it needs the Python code of its repository, which runs only when its catalog entry says "
                    "trust_remote_code and HUGGINGGPT_TRUST_REMOTE_CODE=true"
                )
            elif _hub_unreachable(exc):
                hint = (
                    "; the Hugging Face Hub could not be reached: check the network or HF_ENDPOINT, or set "
                    "HF_HUB_OFFLINE=1 and give models with local weights through HUGGINGGPT_CATALOG (local_path)"
                )
            raise ExpertError(
                f"could not load model {_describe(model)} for {task_name}: {type(exc).__name__}: {exc}{hint}"
            ) from exc
        if self.device != "cpu" and self.cache.stats()["evictions"] > evictions:
            _release_accelerator_memory()
        return entry

    # --- loading ------------------------------------------------------------------------------------------------

    def _trusts(self, model: ModelSpec) -> bool:
        """Whether ``model``'s repository code may run: its catalog entry and this backend's setting both say so."""
        return bool(self.trust_remote_code and model.trust_remote_code)

    def _hub_kwargs(self, model: ModelSpec) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"trust_remote_code": self._trusts(model)}
        if model.revision:
            kwargs["revision"] = model.revision
        if self.token:
            kwargs["token"] = self.token
        return kwargs

    def _pipeline(self, task: str, model: ModelSpec) -> Any:
        from transformers import pipeline

        pipe = pipeline(task, model=model.source, device=self.device, **self._hub_kwargs(model))
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and task in {
            "text-classification",
            "token-classification",
            "text-generation",
            "zero-shot-classification",
        }:
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

    def _load_embedder(self, model: ModelSpec) -> _Embedder:
        from transformers import AutoModel, AutoTokenizer

        kwargs = self._hub_kwargs(model)
        tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
        encoder = AutoModel.from_pretrained(model.source, **kwargs)
        if getattr(encoder.config, "is_encoder_decoder", False) and hasattr(encoder, "get_encoder"):
            encoder = encoder.get_encoder()
        encoder = encoder.to(self.device).eval()
        return _Embedder(
            tokenizer=tokenizer,
            model=encoder,
            max_length=_input_limit(tokenizer, _max_positions(encoder.config), default=512),
        )

    def _load_visual_question_answering(self, model: ModelSpec) -> _VisualQuestionAnswering:
        from transformers import AutoConfig, AutoModelForVisualQuestionAnswering, AutoProcessor

        kwargs = self._hub_kwargs(model)
        config = AutoConfig.from_pretrained(model.source, **kwargs)
        processor = AutoProcessor.from_pretrained(model.source, **kwargs)
        vqa = AutoModelForVisualQuestionAnswering.from_pretrained(model.source, **kwargs).to(self.device).eval()
        text_config = getattr(config, "text_config", None) or config
        tokenizer = getattr(processor, "tokenizer", None)
        return _VisualQuestionAnswering(
            processor=processor,
            model=vqa,
            classifier=config.model_type == "vilt",
            max_text_tokens=_input_limit(tokenizer, _max_positions(text_config), default=512),
        )

    def _load_document_question_answering(self, model: ModelSpec) -> _Donut | Any:
        from transformers import AutoConfig

        kwargs = self._hub_kwargs(model)
        config = AutoConfig.from_pretrained(model.source, **kwargs)
        if config.model_type != "vision-encoder-decoder":
            # LayoutLM and friends: the pipeline reads the page's words with Tesseract OCR (pytesseract)
            return self._pipeline("document-question-answering", model)
        if getattr(config.encoder, "model_type", None) != "donut-swin":
            raise ValueError(
                f"a vision-encoder-decoder model answers document questions only with a Donut (donut-swin) "
                f"encoder, this one has {getattr(config.encoder, 'model_type', None)!r}"
            )
        from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

        image_processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
        donut = VisionEncoderDecoderModel.from_pretrained(model.source, **kwargs).to(self.device).eval()
        return _Donut(
            image_processor=image_processor,
            tokenizer=tokenizer,
            model=donut,
            max_target_positions=_max_positions(config.decoder),
        )

    def _load_image_to_image(self, model: ModelSpec) -> _ImageToImage:
        from transformers import AutoImageProcessor, AutoModelForImageToImage

        kwargs = self._hub_kwargs(model)
        processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
        transformer = AutoModelForImageToImage.from_pretrained(model.source, **kwargs).to(self.device).eval()
        return _ImageToImage(processor=processor, model=transformer)

    # --- running: text ------------------------------------------------------------------------------------------

    def _run_text_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        scores = pipe(text, top_k=None, truncation=True)
        if scores and isinstance(scores[0], list):
            scores = scores[0]
        return format_text_classification(scores)

    def _run_token_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        limit = int(pipe.tokenizer.model_max_length)
        kwargs: dict[str, Any] = {"aggregation_strategy": "simple"}
        if getattr(pipe.tokenizer, "is_fast", False) and len(pipe.tokenizer(text)["input_ids"]) > limit:
            kwargs["stride"] = max(1, limit // 8)
        return format_token_classification(pipe(text, **kwargs))

    def _run_text_generation(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        prompt = _text(inputs, "text")
        tokenizer = pipe.tokenizer
        limit = int(tokenizer.model_max_length)
        new_tokens = max(1, min(self.max_new_tokens, limit // 2))
        prompt = _keep_last_tokens(tokenizer, prompt, max(1, limit - new_tokens - 2))
        result = pipe(prompt, **self._generation_kwargs(pipe, new_tokens), return_full_text=False)
        generated = str(result[0]["generated_text"]) if result else ""
        return ExpertOutput(text=generated)

    def _run_conversational(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        message = _text(inputs, "text")
        tokenizer = pipe.tokenizer
        limit = int(tokenizer.model_max_length)
        new_tokens = max(1, min(self.max_new_tokens, limit // 2))
        budget = max(1, limit - new_tokens - 2)
        kwargs = self._generation_kwargs(pipe, new_tokens)
        if getattr(tokenizer, "chat_template", None):
            empty = tokenizer.apply_chat_template(
                [{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True
            )
            overhead = len(tokenizer(str(empty), add_special_tokens=False)["input_ids"])
            message = _keep_last_tokens(tokenizer, message, max(1, budget - overhead))
            result = pipe([{"role": "user", "content": message}], **kwargs)
            turns = result[0]["generated_text"] if result else []
            reply = turns[-1].get("content", "") if turns and isinstance(turns[-1], dict) else ""
            output = ExpertOutput(text=str(reply).strip(), extra={"prompt": "chat-template"})
        else:
            overhead = len(tokenizer(PLAIN_CHAT_PROMPT.format(text=""), add_special_tokens=False)["input_ids"])
            message = _keep_last_tokens(tokenizer, message, max(1, budget - overhead))
            result = pipe(PLAIN_CHAT_PROMPT.format(text=message), return_full_text=False, **kwargs)
            reply = str(result[0]["generated_text"]) if result else ""
            output = ExpertOutput(text=_first_turn(reply), extra={"prompt": "plain"})
        return output

    def _generation_kwargs(self, pipe: Any, new_tokens: int) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"max_new_tokens": new_tokens}
        tokenizer = pipe.tokenizer
        if pipe.model.generation_config.pad_token_id is None and tokenizer.eos_token_id is not None:
            kwargs["pad_token_id"] = tokenizer.eos_token_id
        return kwargs

    def _run_text2text_generation(self, loaded: _Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
        return ExpertOutput(text=self._generate_seq2seq(loaded, _text(inputs, "text")))

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
            return format_question_answering("", 0.0, 0, 0)
        score, char_start, char_end = best
        return format_question_answering(context[char_start:char_end].strip(), score, char_start, char_end)

    def _embed(self, loaded: _Embedder, text: str) -> np.ndarray:
        import torch

        encoded = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length, return_tensors="pt")
        accepted = set(_forward_arg_names(loaded.model))
        model_inputs = {k: v.to(self.device) for k, v in encoded.items() if not accepted or k in accepted}
        with torch.inference_mode():
            out = loaded.model(**model_inputs)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        mask = encoded.get("attention_mask")
        weights = (
            mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
            if mask is not None
            else torch.ones((*hidden.shape[:2], 1), dtype=hidden.dtype, device=hidden.device)
        )
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return pooled[0].float().cpu().numpy()

    def _run_sentence_similarity(self, loaded: _Embedder, inputs: ExpertInputs) -> ExpertOutput:
        first = self._embed(loaded, _text(inputs, "text"))
        second = self._embed(loaded, _text(inputs, "text2"))
        return format_sentence_similarity(cosine_similarity(first, second))

    def _run_feature_extraction(self, loaded: _Embedder, inputs: ExpertInputs) -> ExpertOutput:
        return format_feature_extraction(self._embed(loaded, _text(inputs, "text")))

    def _run_zero_shot_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        labels = parse_labels(_text(inputs, "labels"))
        result = pipe(text, candidate_labels=labels, multi_label=False)
        return format_zero_shot_classification(
            [{"label": label, "score": score} for label, score in zip(result["labels"], result["scores"], strict=True)]
        )

    # --- running: vision ----------------------------------------------------------------------------------------

    def _run_image_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        return format_image_classification(pipe(image, top_k=self.top_k))

    def _run_object_detection(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        return format_object_detection(image, pipe(image, threshold=self.detection_threshold))

    def _run_image_segmentation(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        return format_image_segmentation(image, pipe(image))

    def _run_depth_estimation(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        result = pipe(image)
        predicted = result["predicted_depth"]
        depth = predicted.detach().float().cpu().numpy() if hasattr(predicted, "detach") else np.asarray(predicted)
        return format_depth_estimation(depth, size=image.size)

    def _run_image_to_image(self, loaded: _ImageToImage, inputs: ExpertInputs) -> ExpertOutput:
        import torch

        image = _image(inputs, "image")
        encoded = loaded.processor(images=image, return_tensors="pt")
        model_inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in dict(encoded).items()}
        with torch.inference_mode():
            out = loaded.model(**model_inputs)
        pixels = out.reconstruction[0].float().clamp(0, 1).cpu()
        scale = int(getattr(loaded.model.config, "upscale", 1) or 1)
        width, height = image.size
        pixels = pixels[:, : height * scale, : width * scale]
        array = (pixels.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
        output = ExpertOutput(image=Image.fromarray(array, "RGB"), extra={"scale": scale})
        if inputs.get("text"):
            output.extra["ignored"] = "text (this model does not take an instruction)"
        return output

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

    def _run_visual_question_answering(self, loaded: _VisualQuestionAnswering, inputs: ExpertInputs) -> ExpertOutput:
        import torch

        image = _image(inputs, "image")
        question = _text(inputs, "text")
        encoded = loaded.processor(
            images=image, text=question, truncation=True, max_length=loaded.max_text_tokens, return_tensors="pt"
        )
        model_inputs = {k: v.to(self.device) if hasattr(v, "to") else v for k, v in dict(encoded).items()}
        with torch.inference_mode():
            if loaded.classifier:
                logits = loaded.model(**model_inputs).logits[0].float().cpu()
                # ViLT's answer head is trained with a sigmoid per answer
                scores = torch.sigmoid(logits)
                top = torch.topk(scores, k=min(self.top_k, scores.shape[0]))
                id2label = loaded.model.config.id2label
                answers = [
                    {"answer": str(id2label[int(i)]), "score": float(s)}
                    for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                ]
                return format_visual_question_answering(answers)
            positions = _max_positions(getattr(loaded.model.config, "text_config", None) or loaded.model.config)
            generated = loaded.model.generate(
                **model_inputs, max_new_tokens=_bounded_new_tokens(self.max_new_tokens, positions)
            )
        prompt_ids = model_inputs.get("input_ids")
        if (
            prompt_ids is not None
            and generated.shape[1] > prompt_ids.shape[1]
            and torch.equal(generated[0, : prompt_ids.shape[1]].cpu(), prompt_ids[0].cpu())
        ):
            generated = generated[:, prompt_ids.shape[1] :]
        tokenizer = getattr(loaded.processor, "tokenizer", loaded.processor)
        answer = str(tokenizer.decode(generated[0], skip_special_tokens=True)).strip()
        return format_visual_question_answering([{"answer": answer, "score": None}])

    def _run_document_question_answering(self, loaded: _Donut | Any, inputs: ExpertInputs) -> ExpertOutput:
        image = _image(inputs, "image")
        question = _text(inputs, "text")
        if not isinstance(loaded, _Donut):
            answers = loaded(image=image, question=question, top_k=1)
            if isinstance(answers, dict):
                answers = [answers]
            return format_document_question_answering(answers)
        return format_document_question_answering([self._donut_answer(loaded, image, question)])

    def _donut_answer(self, loaded: _Donut, image: Image.Image, question: str) -> dict[str, Any]:
        import torch

        tokenizer = loaded.tokenizer
        pixel_values = loaded.image_processor(images=image, return_tensors="pt")["pixel_values"].to(self.device)
        prompt = f"<s_docvqa><s_question>{question}</s_question><s_answer>"
        prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
        positions = loaded.max_target_positions
        new_tokens = self.max_new_tokens
        if positions is not None:
            room = positions - prompt_ids.shape[1] - 1
            if room < 1:
                raise ExpertError(f"the question is too long ({prompt_ids.shape[1]} tokens with the prompt)")
            new_tokens = min(new_tokens, room)
        with torch.inference_mode():
            generated = loaded.model.generate(
                pixel_values, decoder_input_ids=prompt_ids, max_new_tokens=new_tokens, use_cache=True
            )
        sequence = str(tokenizer.batch_decode(generated)[0])
        for special in (tokenizer.eos_token, tokenizer.pad_token):
            if isinstance(special, str) and special:
                sequence = sequence.replace(special, "")
        return {"answer": _donut_answer_text(sequence), "score": None}

    # --- running: audio -----------------------------------------------------------------------------------------

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

    def _run_audio_classification(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        audio = _audio(inputs, "audio")
        target_rate = int(pipe.feature_extractor.sampling_rate)
        samples = _resample(audio.array, audio.sampling_rate, target_rate)
        max_samples = int(self.max_audio_seconds * target_rate)
        clipped = len(samples) > max_samples
        result = pipe({"raw": samples[:max_samples], "sampling_rate": target_rate}, top_k=self.top_k)
        output = format_audio_classification(result)
        output.extra["seconds"] = min(len(samples), max_samples) / target_rate
        if clipped:
            output.extra["clipped_to_seconds"] = self.max_audio_seconds
        return output

    def _run_text_to_speech(self, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
        text = _text(inputs, "text")
        tokenizer = getattr(pipe, "tokenizer", None)
        if tokenizer is not None and not tokenizer(text).get("input_ids"):
            raise ExpertError(f"the text has no characters this voice can read: {text[:80]!r}")
        result = pipe(text)
        return ExpertOutput(audio=waveform_audio(result["audio"], int(result["sampling_rate"]), self.max_audio_seconds))


# --- turning results into outputs (shared with the remote backend) ------------------------------------------------


def format_text_classification(scores: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Every label with its score, best first; the text names the best one."""
    labels = _label_scores(scores)
    best = labels[0] if labels else None
    return ExpertOutput(text=f"{best['label']} ({best['score']:.2f})" if best else "no label", json=labels)


def format_token_classification(found: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Entities as ``{entity_group, word, score, start, end}``; the text lists ``word: group``."""
    entities = [
        {
            "entity_group": str(e.get("entity_group") or e.get("entity") or ""),
            "word": str(e.get("word", "")),
            "score": float(e.get("score") or 0.0),
            "start": _int_or_none(e.get("start")),
            "end": _int_or_none(e.get("end")),
        }
        for e in found
    ]
    summary = ", ".join(f"{e['word']}: {e['entity_group']}" for e in entities) if entities else "no entities found"
    return ExpertOutput(text=summary, json=entities)


def format_question_answering(answer: str, score: float, start: int, end: int) -> ExpertOutput:
    return ExpertOutput(
        text=answer, json={"answer": answer, "score": float(score), "start": int(start), "end": int(end)}
    )


def format_image_classification(scores: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Labels best first; the text lists each with its score."""
    labels = _label_scores(scores)
    summary = ", ".join(f"{s['label']} ({s['score']:.2f})" for s in labels) if labels else "no label"
    return ExpertOutput(text=summary, json=labels)


#: Audio classification and zero-shot classification read like image classification.
format_audio_classification = format_image_classification
format_zero_shot_classification = format_image_classification


def format_sentence_similarity(score: float) -> ExpertOutput:
    return ExpertOutput(text=f"similarity {score:.2f}", json={"similarity": float(score)})


def format_feature_extraction(vector: Any) -> ExpertOutput:
    """One embedding as a list of floats (token embeddings are mean-pooled first)."""
    array = np.asarray(vector, dtype=np.float32)
    while array.ndim > 1:
        array = array.mean(axis=0)
    return ExpertOutput(json=[float(x) for x in array.reshape(-1)], extra={"dimensions": int(array.size)})


def format_object_detection(image: Image.Image, found: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Objects best first, with integer boxes, drawn on a copy of ``image``."""
    objects = [
        {
            "label": str(d["label"]),
            "score": float(d["score"]),
            "box": {k: round(float(v)) for k, v in dict(d["box"]).items()},
        }
        for d in found
    ]
    objects.sort(key=lambda d: d["score"], reverse=True)
    drawn = draw_boxes(image, objects)
    if objects:
        noun = "object" if len(objects) == 1 else "objects"
        summary = f"{len(objects)} {noun}: " + ", ".join(f"{d['label']} ({d['score']:.2f})" for d in objects)
    else:
        summary = "no objects found"
    return ExpertOutput(text=summary, image=drawn, json=objects)


def format_image_segmentation(image: Image.Image, segments: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """Segments as ``{label, score, area}`` (area: the fraction of the image), masks drawn on a copy of ``image``.

    Each segment has a ``label``, a ``score`` (``None`` for semantic segmentation) and a ``mask`` (a greyscale
    PIL image or an array, non-zero inside).
    """
    segments = list(segments)
    masks = [_mask_array(s["mask"], image.size) for s in segments]
    total = float(image.size[0] * image.size[1]) or 1.0
    found = [
        {
            "label": str(s.get("label", "")),
            "score": None if s.get("score") is None else float(s["score"]),
            "area": round(float(mask.sum()) / total, 4),
        }
        for s, mask in zip(segments, masks, strict=True)
    ]
    drawn = draw_masks(image, [(f["label"], m) for f, m in zip(found, masks, strict=True)])
    if found:
        noun = "segment" if len(found) == 1 else "segments"
        parts = [
            f"{f['label']} ({f['area']:.0%})"
            if f["score"] is None
            else f"{f['label']} {f['score']:.2f} ({f['area']:.0%})"
            for f in found
        ]
        summary = f"{len(found)} {noun}: " + ", ".join(parts)
    else:
        summary = "no segments found"
    return ExpertOutput(text=summary, image=drawn, json=found)


def format_depth_estimation(depth: Any, size: tuple[int, int] | None = None) -> ExpertOutput:
    """The depth map as a grey image (the model's values scaled to 0-255), resized to ``size`` when given."""
    array = np.asarray(depth, dtype=np.float32)
    image = depth_image(array)
    if size is not None and image.size != size:
        image = image.resize(size, Image.BILINEAR)
    finite = array[np.isfinite(array)]
    extra = {"min": float(finite.min()), "max": float(finite.max())} if finite.size else {}
    return ExpertOutput(image=image, extra=extra)


def format_visual_question_answering(answers: Iterable[Mapping[str, Any]]) -> ExpertOutput:
    """The best answer as text; every candidate (``answer``, ``score``) in ``extra["answers"]``."""
    ranked = [
        {"answer": str(a.get("answer") or ""), "score": None if a.get("score") is None else float(a["score"])}
        for a in answers
    ]
    ranked.sort(key=lambda a: -1.0 if a["score"] is None else a["score"], reverse=True)
    return ExpertOutput(text=ranked[0]["answer"] if ranked else "", extra={"answers": ranked})


#: Document question answering reads like visual question answering.
format_document_question_answering = format_visual_question_answering


def format_tabular_classification(labels: Iterable[Any]) -> ExpertOutput:
    """One label per row: ``{row, label}`` (rows counted from 1); the text counts each label."""
    rows = [{"row": number, "label": str(label)} for number, label in enumerate(labels, 1)]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["label"]] = counts.get(row["label"], 0) + 1
    noun = "row" if len(rows) == 1 else "rows"
    summary = f"{len(rows)} {noun}: " + ", ".join(f"{label} x{count}" for label, count in counts.items())
    return ExpertOutput(text=summary if rows else "no rows", json=rows)


def waveform_audio(samples: Any, rate: int, max_seconds: float | None = None) -> Audio:
    """Mono float32 audio in [-1, 1] from a model's waveform (any shape with one channel, or channels first)."""
    if rate <= 0:
        raise ValueError(f"the model reported a sampling rate of {rate}")
    array = np.asarray(samples, dtype=np.float32)
    if array.ndim > 1:
        array = array.reshape(-1) if 1 in array.shape else array.mean(axis=0)
    array = np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=-1.0)
    if max_seconds is not None:
        array = array[: int(max_seconds * rate)]
    return Audio(array=np.clip(array, -1.0, 1.0).astype(np.float32), sampling_rate=int(rate))


def draw_boxes(image: Image.Image, objects: list[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` with each object's box and ``label score`` drawn on it."""
    drawn = image.convert("RGB").copy()
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


def draw_masks(image: Image.Image, masks: list[tuple[str, np.ndarray]]) -> Image.Image:
    """A copy of ``image`` with each boolean mask blended in its own colour and its label at the mask's centre."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    for index, (_, mask) in enumerate(masks):
        color = np.asarray(_MASK_COLORS[index % len(_MASK_COLORS)], dtype=np.float32)
        base[mask] = base[mask] * 0.45 + color * 0.55
    drawn = Image.fromarray(base.round().clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(drawn)
    for label, mask in masks:
        ys, xs = np.nonzero(mask)
        if len(xs) and label:
            draw.text((float(xs.mean()), float(ys.mean())), label, fill="white", anchor="mm")
    return drawn


def depth_image(depth: np.ndarray) -> Image.Image:
    """A 2-D depth map as a grey image, its values scaled to 0-255 (a flat map gives a black image)."""
    array = np.nan_to_num(np.asarray(depth, dtype=np.float32).squeeze(), nan=0.0, posinf=0.0, neginf=0.0)
    if array.ndim != 2:
        raise ValueError(f"a depth map has two dimensions, this one has shape {array.shape}")
    low, high = float(array.min()), float(array.max())
    scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return Image.fromarray((scaled * 255.0).round().astype(np.uint8), "L")


def cosine_similarity(a: Any, b: Any) -> float:
    first = np.asarray(a, dtype=np.float64).reshape(-1)
    second = np.asarray(b, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(first) * np.linalg.norm(second))
    return float(first @ second / norm) if norm > 0 else 0.0


def parse_labels(text: str) -> list[str]:
    """Candidate labels from a comma- (or newline-) separated string, in order, without blanks or repeats."""
    labels = list(dict.fromkeys(p.strip() for p in re.split(r"[,\n]", text) if p.strip()))
    if not labels:
        raise ExpertError(f"no candidate labels in {text!r} (give them comma-separated)")
    return labels


def parse_csv_table(data: bytes | str) -> dict[str, list[str]]:
    """A CSV table (header row first) as ``{column: [values]}``, the form tabular models take."""
    import csv

    text = data.decode("utf-8-sig", errors="replace") if isinstance(data, bytes) else data
    rows = [r for r in csv.reader(io.StringIO(text)) if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise ExpertError("the table needs a header row and at least one row of values")
    header = [h.strip() for h in rows[0]]
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            raise ExpertError(f"row {number} of the table has {len(row)} cells, the header has {len(header)}")
    return {name: [row[i].strip() for row in rows[1:]] for i, name in enumerate(header)}


# --- input helpers (shared with the remote backend) ---------------------------------------------------------------


def _hub_unreachable(exc: BaseException) -> bool:
    """Whether loading failed because the Hub could not be reached (not because the model is broken)."""
    text = str(exc)
    return "couldn't connect to" in text or "Connection" in type(exc).__name__ or "offline mode" in text.lower()


def _describe(model: ModelSpec) -> str:
    if model.source != model.id:
        return f"{model.id!r} (from {model.source})"
    return repr(model.id)


def _not_served(task: str, task_name: str, model: ModelSpec) -> str:
    why = NOT_SERVED_LOCALLY.get(task_name)
    reason = f": {why}; it runs through the remote backend" if why else ""
    return (
        f"the local backend cannot run task {task!r} (model {model.id!r}){reason}; "
        f"supported tasks: {', '.join(SUPPORTED_TASKS)}"
    )


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


#: Public names of the input helpers, for the remote backend.
text_input = _text
image_input = _image
audio_input = _audio


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (good enough for speech recognition input)."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target or len(samples) == 0:
        return samples
    duration = len(samples) / rate
    count = max(1, round(duration * target))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(len(samples), dtype=np.float64), samples).astype(np.float32)


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) is running out of memory: ``MemoryError``, torch's
    ``OutOfMemoryError``, or a runtime error saying "out of memory" (MPS, ROCm)."""
    import torch

    oom_types: tuple[type[BaseException], ...] = (MemoryError, torch.cuda.OutOfMemoryError)
    if hasattr(torch, "OutOfMemoryError"):
        oom_types = (*oom_types, torch.OutOfMemoryError)
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, oom_types):
            return True
        if isinstance(current, RuntimeError) and "out of memory" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


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


def _label_scores(scores: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    labels = [{"label": str(s["label"]), "score": float(s["score"])} for s in scores]
    labels.sort(key=lambda s: s["score"], reverse=True)
    return labels


def _mask_array(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """A segment's mask as a boolean array of the image's size (``size`` is PIL's width, height)."""
    if not isinstance(mask, Image.Image):
        array = np.asarray(mask)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        mask = Image.fromarray(array.astype(np.uint8))
    mask = mask.convert("L")
    if mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    return np.asarray(mask) > 127


def _keep_last_tokens(tokenizer: Any, text: str, keep: int) -> str:
    """``text`` cut to its last ``keep`` tokens when it is longer."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= keep:
        return text
    return str(tokenizer.decode(ids[-keep:], skip_special_tokens=True))


def _first_turn(reply: str) -> str:
    """A plain-prompt reply up to where the model starts writing the next turn itself."""
    cut = re.split(r"\n\s*(?:User|Assistant)\s*:", reply, maxsplit=1)[0]
    return cut.strip()


def _donut_answer_text(sequence: str) -> str:
    """The answer in a Donut output (``<s_docvqa><s_question>...</s_question><s_answer>ANSWER</s_answer>``)."""
    after = sequence.split("<s_answer>", 1)[1] if "<s_answer>" in sequence else ""
    answer = after.split("</s_answer>", 1)[0]
    return re.sub(r"<[^>]+>", "", answer).strip()


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
