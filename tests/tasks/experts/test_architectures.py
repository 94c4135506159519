"""Every architecture the local backend offers, proven on a tiny random model of the real checkpoint's classes.

Each tiny model (``tests/tiny_models/``, :data:`ARCHITECTURE_BUILDERS`) is built from the same config class and the
same processor / tokenizer class as the real checkpoint, saved, and run through :class:`LocalBackend`. The tests
assert what the model was asked (the prompt it was given, the number of tokens it generated, the text it spoke),
not only that something came back. :data:`PROOFS` maps each (task, architecture) pair of
``tasks.experts.local.PROVEN_ARCHITECTURES`` to the test that proves it; the table tests below keep the two, and the
catalog's recommended models, in step.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from models_catalog.catalog import CatalogEntry, load_catalog
from tasks.execute import run_with_fallback
from tasks.experts.base import Audio, CannotRunHereError, ExpertOutput, ModelSpec
from tasks.experts.cache import ModelCache
from tasks.experts.local import (
    PROVEN_ARCHITECTURES,
    SUPPORTED_TASKS,
    TESTED_REQUIREMENTS,
    LocalBackend,
    local_refusal,
)
from tasks.experts.local.audio import DEFAULT_SPEAKER_EMBEDDING
from tests.tiny_models import (
    AUDIO_LABELS,
    DETECTION_LABELS,
    IMAGE_LABELS,
    NLI_LABELS,
    SEGMENT_LABELS,
    SENTIMENT_LABELS,
    VQA_LABELS,
    build_architecture,
)

MAX_NEW_TOKENS = 8

#: (task, architecture) -> the test of this module that proves the local backend runs it.
PROOFS: dict[tuple[str, str], str] = {
    ("text-classification", "distilbert"): "test_text_classification",
    ("text-classification", "bert"): "test_text_classification",
    ("text-classification", "roberta"): "test_text_classification",
    ("token-classification", "bert"): "test_token_classification_bert",
    ("question-answering", "roberta"): "test_extractive_question_answering",
    ("question-answering", "distilbert"): "test_extractive_question_answering",
    ("question-answering", "bert"): "test_extractive_question_answering",
    ("zero-shot-classification", "bart"): "test_zero_shot_classification",
    ("zero-shot-classification", "bert"): "test_zero_shot_classification",
    ("summarization", "bart"): "test_summarization_generates_max_new_tokens",
    ("summarization", "t5"): "test_summarization_generates_max_new_tokens",
    ("text2text-generation", "t5"): "test_text2text_generation_generates_max_new_tokens",
    ("text2text-generation", "bart"): "test_text2text_generation_generates_max_new_tokens",
    ("translation", "marian"): "test_marian_translates_only_into_its_target_language",
    ("translation", "t5"): "test_t5_translation_is_prefixed_with_the_target_language",
    ("text-generation", "qwen2"): "test_text_generation_generates_max_new_tokens",
    ("text-generation", "llama"): "test_text_generation_generates_max_new_tokens",
    ("text-generation", "gpt2"): "test_text_generation_generates_max_new_tokens",
    ("conversational", "qwen2"): "test_chat_model_is_prompted_with_its_chat_template",
    ("conversational", "llama"): "test_chat_model_is_prompted_with_its_chat_template",
    ("conversational", "gpt2"): "test_chat_model_is_prompted_with_its_chat_template",
    ("sentence-similarity", "bert"): "test_sentence_embeddings_pool_and_normalise_as_sentence_transformers",
    ("feature-extraction", "bert"): "test_sentence_embeddings_pool_and_normalise_as_sentence_transformers",
    ("image-classification", "vit"): "test_image_classification",
    ("image-classification", "resnet"): "test_image_classification",
    ("object-detection", "yolos"): "test_object_detection",
    ("object-detection", "detr"): "test_object_detection",
    ("image-segmentation", "segformer"): "test_image_segmentation_segformer",
    ("depth-estimation", "depth_anything"): "test_depth_estimation",
    ("depth-estimation", "dpt"): "test_depth_estimation",
    ("depth-estimation", "glpn"): "test_depth_estimation",
    ("image-to-image", "swin2sr"): "test_super_resolution_swin2sr",
    ("image-to-text", "vision-encoder-decoder"): "test_captioning_generates_max_new_tokens",
    ("image-to-text", "blip"): "test_captioning_generates_max_new_tokens",
    ("visual-question-answering", "vilt"): "test_visual_question_answering_vilt",
    ("visual-question-answering", "blip"): "test_visual_question_answering_blip_is_asked_the_question",
    ("document-question-answering", "vision-encoder-decoder"): "test_document_question_answering_donut",
    ("document-question-answering", "layoutlm"): "test_document_question_answering_layoutlm_reads_the_page_with_ocr",
    ("automatic-speech-recognition", "whisper"): "test_speech_recognition",
    ("automatic-speech-recognition", "wav2vec2"): "test_speech_recognition",
    ("audio-classification", "audio-spectrogram-transformer"): "test_audio_classification",
    ("audio-classification", "wav2vec2"): "test_audio_classification",
    ("text-to-speech", "vits"): "test_text_to_speech_vits_speaks_the_text",
    ("text-to-speech", "speecht5"): "test_text_to_speech_speecht5_with_vocoder_and_speaker",
}

#: Tiny model -> (the real checkpoint it stands for, its model_type, config class, processor or tokenizer class).
REAL_CHECKPOINTS: dict[str, tuple[str, str, str, str]] = {
    "vits": ("facebook/mms-tts-eng", "vits", "VitsConfig", "VitsTokenizer"),
    "speecht5": ("microsoft/speecht5_tts", "speecht5", "SpeechT5Config", "SpeechT5Processor"),
    "speecht5-hifigan": ("microsoft/speecht5_hifigan", "speecht5_hifigan", "SpeechT5HifiGanConfig", ""),
    "whisper": ("openai/whisper-base", "whisper", "WhisperConfig", "WhisperProcessor"),
    "wav2vec2-ctc": ("facebook/wav2vec2-base-960h", "wav2vec2", "Wav2Vec2Config", "Wav2Vec2Processor"),
    "wav2vec2-audio-classification": (
        "superb/wav2vec2-base-superb-ks",
        "wav2vec2",
        "Wav2Vec2Config",
        "Wav2Vec2FeatureExtractor",
    ),
    "ast": (
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        "audio-spectrogram-transformer",
        "ASTConfig",
        "ASTFeatureExtractor",
    ),
    "vit-gpt2": (
        "nlpconnect/vit-gpt2-image-captioning",
        "vision-encoder-decoder",
        "VisionEncoderDecoderConfig",
        "ViTImageProcessor",
    ),
    "blip-captioning": ("Salesforce/blip-image-captioning-base", "blip", "BlipConfig", "BlipProcessor"),
    "blip-vqa": ("Salesforce/blip-vqa-base", "blip", "BlipConfig", "BlipProcessor"),
    "yolos": ("hustvl/yolos-tiny", "yolos", "YolosConfig", "YolosImageProcessor"),
    "detr-no-timm": ("facebook/detr-resnet-50@no_timm", "detr", "DetrConfig", "DetrImageProcessor"),
    "depth-anything": (
        "depth-anything/Depth-Anything-V2-Small-hf",
        "depth_anything",
        "DepthAnythingConfig",
        "DPTImageProcessor",
    ),
    "dpt": ("Intel/dpt-large", "dpt", "DPTConfig", "DPTImageProcessor"),
    "glpn": ("vinvino02/glpn-kitti", "glpn", "GLPNConfig", "GLPNImageProcessor"),
    "segformer": (
        "nvidia/segformer-b0-finetuned-ade-512-512",
        "segformer",
        "SegformerConfig",
        "SegformerImageProcessor",
    ),
    "vilt": ("dandelin/vilt-b32-finetuned-vqa", "vilt", "ViltConfig", "ViltProcessor"),
    "donut": (
        "naver-clova-ix/donut-base-finetuned-docvqa",
        "vision-encoder-decoder",
        "VisionEncoderDecoderConfig",
        "DonutProcessor",
    ),
    "layoutlm": ("impira/layoutlm-document-qa", "layoutlm", "LayoutLMConfig", "RobertaTokenizer"),
    "marian-en-fr": ("Helsinki-NLP/opus-mt-en-fr", "marian", "MarianConfig", "MarianTokenizer"),
    "marian-en-romance": ("Helsinki-NLP/opus-mt-en-ROMANCE", "marian", "MarianConfig", "MarianTokenizer"),
    "bart-cnn": ("facebook/bart-large-cnn", "bart", "BartConfig", "RobertaTokenizer"),
    "bart-mnli": ("facebook/bart-large-mnli", "bart", "BartConfig", "RobertaTokenizer"),
    "flan-t5": ("google/flan-t5-base", "t5", "T5Config", "T5Tokenizer"),
    "distilbert-sst2": (
        "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
        "distilbert",
        "DistilBertConfig",
        "DistilBertTokenizer",
    ),
    "distilbert-squad": (
        "distilbert/distilbert-base-cased-distilled-squad",
        "distilbert",
        "DistilBertConfig",
        "DistilBertTokenizer",
    ),
    "roberta-squad2": ("deepset/roberta-base-squad2", "roberta", "RobertaConfig", "RobertaTokenizer"),
    "roberta-sentiment": (
        "cardiffnlp/twitter-roberta-base-sentiment-latest",
        "roberta",
        "RobertaConfig",
        "RobertaTokenizer",
    ),
    "bert-sentiment": ("nlptown/bert-base-multilingual-uncased-sentiment", "bert", "BertConfig", "BertTokenizer"),
    "bert-ner": ("dslim/bert-base-NER", "bert", "BertConfig", "BertTokenizer"),
    "bert-squad": ("deepset/bert-base-cased-squad2", "bert", "BertConfig", "BertTokenizer"),
    "bert-nli": ("textattack/bert-base-uncased-MNLI", "bert", "BertConfig", "BertTokenizer"),
    "vit": ("google/vit-base-patch16-224", "vit", "ViTConfig", "ViTImageProcessor"),
    "resnet": ("microsoft/resnet-50", "resnet", "ResNetConfig", "ConvNextImageProcessor"),
    "swin2sr": ("caidas/swin2SR-classical-sr-x2-64", "swin2sr", "Swin2SRConfig", "Swin2SRImageProcessor"),
    "qwen2-chat": ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2", "Qwen2Config", "Qwen2Tokenizer"),
    "llama-chat": ("HuggingFaceTB/SmolLM2-360M-Instruct", "llama", "LlamaConfig", "GPT2Tokenizer"),
    "gpt2": ("openai-community/gpt2", "gpt2", "GPT2Config", "GPT2Tokenizer"),
    "gpt2-chat": ("microsoft/DialoGPT-medium", "gpt2", "GPT2Config", "GPT2Tokenizer"),
    "minilm-sentence-embeddings": ("sentence-transformers/all-MiniLM-L6-v2", "bert", "BertConfig", "BertTokenizer"),
}

#: The recommended local models of issue 15 (task, model_type), checked against their config.json; whatever the
#: catalog recommends, these must stay proven.
RECOMMENDED_LOCAL: dict[str, tuple[str, str]] = {
    "facebook/mms-tts-eng": ("text-to-speech", "vits"),
    "microsoft/speecht5_tts": ("text-to-speech", "speecht5"),
    "openai/whisper-base": ("automatic-speech-recognition", "whisper"),
    "openai/whisper-tiny": ("automatic-speech-recognition", "whisper"),
    "facebook/wav2vec2-base-960h": ("automatic-speech-recognition", "wav2vec2"),
    "nlpconnect/vit-gpt2-image-captioning": ("image-to-text", "vision-encoder-decoder"),
    "Salesforce/blip-image-captioning-base": ("image-to-text", "blip"),
    "Salesforce/blip-vqa-base": ("visual-question-answering", "blip"),
    "hustvl/yolos-tiny": ("object-detection", "yolos"),
    "facebook/detr-resnet-50": ("object-detection", "detr"),
    "depth-anything/Depth-Anything-V2-Small-hf": ("depth-estimation", "depth_anything"),
    "Intel/dpt-large": ("depth-estimation", "dpt"),
    "nvidia/segformer-b0-finetuned-ade-512-512": ("image-segmentation", "segformer"),
    "dandelin/vilt-b32-finetuned-vqa": ("visual-question-answering", "vilt"),
    "naver-clova-ix/donut-base-finetuned-docvqa": ("document-question-answering", "vision-encoder-decoder"),
    "impira/layoutlm-document-qa": ("document-question-answering", "layoutlm"),
    "Helsinki-NLP/opus-mt-en-fr": ("translation", "marian"),
    "Helsinki-NLP/opus-mt-en-de": ("translation", "marian"),
    "facebook/bart-large-cnn": ("summarization", "bart"),
    "sshleifer/distilbart-cnn-12-6": ("summarization", "bart"),
    "facebook/bart-large-mnli": ("zero-shot-classification", "bart"),
    "google/flan-t5-base": ("text2text-generation", "t5"),
    "distilbert/distilbert-base-uncased-finetuned-sst-2-english": ("text-classification", "distilbert"),
    "deepset/roberta-base-squad2": ("question-answering", "roberta"),
    "distilbert/distilbert-base-cased-distilled-squad": ("question-answering", "distilbert"),
    "dslim/bert-base-NER": ("token-classification", "bert"),
    "google/vit-base-patch16-224": ("image-classification", "vit"),
    "microsoft/resnet-50": ("image-classification", "resnet"),
    "MIT/ast-finetuned-audioset-10-10-0.4593": ("audio-classification", "audio-spectrogram-transformer"),
    "caidas/swin2SR-classical-sr-x2-64": ("image-to-image", "swin2sr"),
    "Qwen/Qwen2.5-0.5B-Instruct": ("conversational", "qwen2"),
    "HuggingFaceTB/SmolLM2-360M-Instruct": ("conversational", "llama"),
    "sentence-transformers/all-MiniLM-L6-v2": ("feature-extraction", "bert"),
}


# --- fixtures and helpers ------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def arch_root(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return tmp_path_factory.mktemp("architectures")


@pytest.fixture(scope="session")
def tiny(arch_root: pathlib.Path) -> Callable[[str], pathlib.Path]:
    """``tiny(name)``: the folder of the tiny model ``name``, built once per session."""
    return lambda name: build_architecture(name, arch_root)


@pytest.fixture
def backend(tiny: Callable[[str], pathlib.Path]) -> LocalBackend:
    return LocalBackend(
        cache=ModelCache(max_models=2),
        detection_threshold=0.0,
        max_new_tokens=MAX_NEW_TOKENS,
        speecht5_vocoder=str(tiny("speecht5-hifigan")),
    )


def spec(tiny: Callable[[str], pathlib.Path], name: str, task: str) -> ModelSpec:
    return ModelSpec(id=f"tiny/{name}", task=task, local_path=str(tiny(name)))


class Recorder:
    """Wraps one method of one object: records each call's arguments, returns what the method returned."""

    def __init__(self, target: Any, method: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any], Any]] = []
        original = getattr(target, method)

        def recording(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.calls.append((args, kwargs, result))
            return result

        monkeypatch.setattr(target, method, recording)

    @property
    def kwargs(self) -> dict[str, Any]:
        assert self.calls, "the model was never called"
        return self.calls[-1][1]

    @property
    def result(self) -> Any:
        assert self.calls, "the model was never called"
        return self.calls[-1][2]


def loaded(backend: LocalBackend, model: ModelSpec, task: str) -> Any:
    return backend.load(task, model).value


def picture(size: tuple[int, int] = (48, 40)) -> Image.Image:
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[..., 0] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(255, 0, size[1], dtype=np.uint8)[:, None]
    return Image.fromarray(pixels, "RGB")


def sine(seconds: float = 1.0, rate: int = 16_000) -> Audio:
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    return Audio(array=(0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), sampling_rate=rate)


def run(backend: LocalBackend, model: ModelSpec, task: str, **inputs: Any) -> ExpertOutput:
    out = backend.run(task, model, inputs)
    assert out.extra["model"] == model.id and out.extra["backend"] == "local"
    json.dumps(out.json)
    return out


def new_tokens(generated: Any, prompt_length: int) -> int:
    return int(generated.shape[-1]) - prompt_length


# --- the tables ------------------------------------------------------------------------------------------------------


def test_every_proven_architecture_has_its_test() -> None:
    pairs = {(task, arch) for task, archs in PROVEN_ARCHITECTURES.items() for arch in archs}
    assert set(PROOFS) == pairs, "PROVEN_ARCHITECTURES and the proofs of this module must agree"
    assert set(PROVEN_ARCHITECTURES) == set(SUPPORTED_TASKS), "every local task has at least one proven architecture"
    missing = {name for name in PROOFS.values() if not callable(globals().get(name))}
    assert not missing, f"no such tests: {missing}"


@pytest.mark.parametrize("name", sorted(REAL_CHECKPOINTS))
def test_tiny_models_use_the_real_checkpoints_classes(name: str, tiny: Callable[[str], pathlib.Path]) -> None:
    from transformers import AutoConfig, AutoFeatureExtractor, AutoImageProcessor, AutoProcessor, AutoTokenizer

    _, model_type, config_class, processor_class = REAL_CHECKPOINTS[name]
    folder = tiny(name)
    config = AutoConfig.from_pretrained(folder)
    assert (config.model_type, type(config).__name__) == (model_type, config_class)
    if not processor_class:
        return
    if processor_class.endswith("Processor") and not processor_class.endswith("ImageProcessor"):
        loaded_class = type(AutoProcessor.from_pretrained(folder)).__name__
    elif processor_class.endswith("ImageProcessor"):
        loaded_class = (
            type(AutoImageProcessor.from_pretrained(folder)).__name__.removesuffix("Fast").removesuffix("Pil")
        )
    elif processor_class.endswith("FeatureExtractor"):
        loaded_class = type(AutoFeatureExtractor.from_pretrained(folder)).__name__
    else:
        loaded_class = type(AutoTokenizer.from_pretrained(folder)).__name__.removesuffix("Fast")
    assert loaded_class == processor_class
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 1_000_000, f"{name}: {size} bytes"


@pytest.mark.parametrize("model_id", sorted(RECOMMENDED_LOCAL))
def test_recommended_models_are_proven(model_id: str) -> None:
    task, architecture = RECOMMENDED_LOCAL[model_id]
    assert local_refusal(task, architecture) is None, model_id


def unproven_recommended(entries: Iterable[CatalogEntry]) -> list[str]:
    """The recommended transformers entries for a locally served task, whose requirements the tests install, whose
    architecture is not proven (an entry that needs something else, timm say, is remote-only)."""
    unproven = []
    for entry in entries:
        if entry.tier != "recommended" or entry.library != "transformers" or entry.task not in SUPPORTED_TASKS:
            continue
        if not set(entry.requires) <= TESTED_REQUIREMENTS:
            assert local_refusal(entry.task, entry.architecture, entry.requires) is not None, entry.id
            continue
        if entry.id in RECOMMENDED_LOCAL:
            assert entry.architecture == RECOMMENDED_LOCAL[entry.id][1], entry.id
        reason = local_refusal(entry.task, entry.architecture, entry.requires)
        if reason is not None:
            unproven.append(f"{entry.task} {entry.id}: {reason}")
    return unproven


def test_recommended_catalog_entries_that_run_locally_are_proven() -> None:
    """The catalog can never offer an unproven architecture locally."""
    unproven = unproven_recommended(load_catalog())
    assert not unproven, "\n".join(unproven)


def test_an_unproven_recommended_entry_is_caught() -> None:
    def entry(model_id: str, task: str, architecture: str | None, requires: list[str] | None = None) -> CatalogEntry:
        return CatalogEntry(
            id=model_id, task=task, architecture=architecture, requires=requires or [], tier="recommended"
        )

    entries = [
        entry("Helsinki-NLP/opus-mt-en-fr", "translation", "marian", ["sentencepiece"]),
        entry(
            "impira/layoutlm-document-qa", "document-question-answering", "layoutlm", ["pytesseract", "bin:tesseract"]
        ),
        entry("facebook/detr-resnet-50", "object-detection", "detr", ["timm"]),
        entry("facebook/m2m100_418M", "translation", "m2m_100"),
        entry("acme/mystery", "summarization", None),
    ]
    unproven = unproven_recommended(entries)
    assert [line.split()[1].rstrip(":") for line in unproven] == ["facebook/m2m100_418M", "acme/mystery"]


def test_local_refusal_names_the_reason() -> None:
    assert local_refusal("translation", "marian") is None
    assert local_refusal("translation", "marian", ["sentencepiece"]) is None
    assert "not proven" in str(local_refusal("translation", "m2m_100"))
    assert "not recorded" in str(local_refusal("translation", None))
    assert "timm" in str(local_refusal("object-detection", "detr", ["timm"]))
    assert "text-to-image" in str(local_refusal("text-to-image", "unet"))


# --- text ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["distilbert-sst2", "bert-sentiment", "roberta-sentiment"])
def test_text_classification(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    out = run(backend, spec(tiny, name, "text-classification"), "text-classification", text="I loved this movie.")
    assert [e["label"] for e in out.json] and {e["label"] for e in out.json} == set(SENTIMENT_LABELS.values())
    assert sum(e["score"] for e in out.json) == pytest.approx(1.0, abs=1e-4)


def test_token_classification_bert(backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    text = "Alice met Bob in London last summer."
    out = run(backend, spec(tiny, "bert-ner", "token-classification"), "token-classification", text=text)
    for entity in out.json:
        assert entity["entity_group"] in {"PER", "LOC", "ORG", "O"}
        word = entity["word"].replace(" ", "").replace("##", "")  # a group may start inside a word: "##on"
        assert text[entity["start"] : entity["end"]].lower().replace(" ", "") == word


@pytest.mark.parametrize("name", ["roberta-squad2", "distilbert-squad", "bert-squad"])
def test_extractive_question_answering(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    context = "Alice met Bob in London last summer."
    out = run(backend, spec(tiny, name, "question-answering"), "question-answering", text="Where?", context=context)
    assert out.text == context[out.json["start"] : out.json["end"]].strip() and out.text in context


@pytest.mark.parametrize("name", ["bart-mnli", "bert-nli"])
def test_zero_shot_classification(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    model = spec(tiny, name, "zero-shot-classification")
    pipe = loaded(backend, model, "zero-shot-classification")
    assert set(pipe.model.config.label2id) == set(NLI_LABELS.values())
    out = run(backend, model, "zero-shot-classification", text="The cat sat.", labels="animals, politics, sport")
    assert {e["label"] for e in out.json} == {"animals", "politics", "sport"}
    assert sum(e["score"] for e in out.json) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(("name", "prefix"), [("bart-cnn", ""), ("flan-t5", "summarize: ")])
def test_summarization_generates_max_new_tokens(
    name: str, prefix: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model is given the text (after its task prefix) and generates exactly ``max_new_tokens`` tokens (the
    tiny decoders never stop early): a runner that ignores ``max_new_tokens`` fails here."""
    model = spec(tiny, name, "summarization")
    seq2seq = loaded(backend, model, "summarization")
    generate = Recorder(seq2seq.model, "generate", monkeypatch)
    text = "the report says the weather will be warm and dry"
    run(backend, model, "summarization", text=text)
    assert generate.kwargs["max_new_tokens"] == MAX_NEW_TOKENS
    assert new_tokens(generate.result, 1) == MAX_NEW_TOKENS
    asked = seq2seq.tokenizer.decode(generate.kwargs["input_ids"][0], skip_special_tokens=True)
    assert asked.replace(" ", "") == (prefix + text).replace(" ", "")


@pytest.mark.parametrize("name", ["flan-t5", "bart-cnn"])
def test_text2text_generation_generates_max_new_tokens(
    name: str, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    for limit in (3, 6):
        backend = LocalBackend(cache=ModelCache(max_models=1), max_new_tokens=limit)
        model = spec(tiny, name, "text2text-generation")
        generate = Recorder(loaded(backend, model, "text2text-generation").model, "generate", monkeypatch)
        out = run(backend, model, "text2text-generation", text="paraphrase: the cat sat on the mat")
        assert new_tokens(generate.result, 1) == limit and isinstance(out.text, str)


def test_t5_translation_is_prefixed_with_the_target_language(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, "flan-t5", "translation")
    seq2seq = loaded(backend, model, "translation")
    generate = Recorder(seq2seq.model, "generate", monkeypatch)
    for target in ("French", "Spanish"):
        out = run(backend, model, "translation", text="the house is wonderful", target_language=target)
        asked = seq2seq.tokenizer.decode(generate.kwargs["input_ids"][0], skip_special_tokens=True)
        assert asked.startswith(f"translate English to {target}:"), asked
        assert out.extra["target_language"] == target
        assert new_tokens(generate.result, 1) == MAX_NEW_TOKENS
    out = run(backend, model, "translation", text="the house is wonderful")
    asked = seq2seq.tokenizer.decode(generate.kwargs["input_ids"][0], skip_special_tokens=True)
    assert asked.startswith("translate English to German:") and out.extra["target_language"] == "de"


def test_marian_translates_only_into_its_target_language(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An opus-mt-en-fr model translates into French (asked by name or code, or with no target), and refuses German
    with an error naming its language pair, so the router falls back to the next candidate."""
    marian = ModelSpec(id="Helsinki-NLP/opus-mt-en-fr", task="translation", local_path=str(tiny("marian-en-fr")))
    seq2seq = loaded(backend, marian, "translation")
    generate = Recorder(seq2seq.model, "generate", monkeypatch)
    text = "the house is wonderful"
    for target in ("French", "fr", None):
        inputs = {"text": text} if target is None else {"text": text, "target_language": target}
        out = run(backend, marian, "translation", **inputs)
        assert out.extra["target_language"] == "fr"
        assert generate.kwargs["input_ids"][0].tolist() == seq2seq.tokenizer(text)["input_ids"]
        assert new_tokens(generate.result, 1) == MAX_NEW_TOKENS
    calls = len(generate.calls)
    with pytest.raises(CannotRunHereError, match="en-fr") as info:
        run(backend, marian, "translation", text=text, target_language="German")
    assert "German" in str(info.value) and "opus-mt-en-fr" in str(info.value)
    assert len(generate.calls) == calls, "nothing was generated for the refused request"

    t5 = spec(tiny, "flan-t5", "translation")
    out, attempts = run_with_fallback(
        "translation",
        [marian, t5],
        {"text": text, "target_language": "German"},
        backends={"local": backend},
        choose=lambda _spec: ("local", ""),
        max_attempts=1,
    )
    assert out.extra["model"] == "tiny/flan-t5" and out.extra["target_language"] == "German"
    assert attempts[0].skipped and "en-fr" in str(attempts[0].error)


def test_multi_target_marian_is_told_the_target_language(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """opus-mt-en-ROMANCE picks its output language from a ``>>xx<<`` token before the text: the runner puts the
    asked one there, and refuses a language it does not have, or no language at all."""
    model = ModelSpec(
        id="Helsinki-NLP/opus-mt-en-ROMANCE", task="translation", local_path=str(tiny("marian-en-romance"))
    )
    seq2seq = loaded(backend, model, "translation")
    generate = Recorder(seq2seq.model, "generate", monkeypatch)
    text = "the house is wonderful"
    for target, code in (("Spanish", "es"), ("it", "it")):
        out = run(backend, model, "translation", text=text, target_language=target)
        assert generate.kwargs["input_ids"][0].tolist() == seq2seq.tokenizer(f">>{code}<< {text}")["input_ids"]
        assert generate.kwargs["input_ids"][0][0] == seq2seq.tokenizer.convert_tokens_to_ids(f">>{code}<<")
        assert out.extra["target_language"] == code
    with pytest.raises(CannotRunHereError, match=">>fr<<") as info:
        run(backend, model, "translation", text=text, target_language="German")
    assert "German" in str(info.value)
    with pytest.raises(CannotRunHereError, match="name the target language"):
        run(backend, model, "translation", text=text)


@pytest.mark.parametrize("name", ["qwen2-chat", "llama-chat", "gpt2"])
def test_text_generation_generates_max_new_tokens(
    name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, name, "text-generation")
    pipe = loaded(backend, model, "text-generation")
    generate = Recorder(pipe.model, "generate", monkeypatch)
    prompt = "The dog runs across the park"
    run(backend, model, "text-generation", text=prompt)
    prompt_ids = generate.kwargs["input_ids"]
    assert pipe.tokenizer.decode(prompt_ids[0], skip_special_tokens=True) == prompt
    if name != "gpt2":  # the tiny GPT-2 of the other tests may stop early
        assert new_tokens(generate.result, prompt_ids.shape[-1]) == MAX_NEW_TOKENS


@pytest.mark.parametrize("name", ["qwen2-chat", "llama-chat", "gpt2-chat"])
def test_chat_model_is_prompted_with_its_chat_template(
    name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, name, "conversational")
    pipe = loaded(backend, model, "conversational")
    generate = Recorder(pipe.model, "generate", monkeypatch)
    out = run(backend, model, "conversational", text="Hello there")
    assert out.extra["prompt"] == "chat-template"
    prompt_ids = generate.kwargs["input_ids"]
    expected = pipe.tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello there"}], tokenize=False, add_generation_prompt=True
    )
    assert pipe.tokenizer.decode(prompt_ids[0]) == expected
    if name != "gpt2-chat":
        assert expected == "<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n"
        assert new_tokens(generate.result, prompt_ids.shape[-1]) == MAX_NEW_TOKENS


def test_sentence_embeddings_pool_and_normalise_as_sentence_transformers(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path]
) -> None:
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = tiny("minilm-sentence-embeddings")
    model = ModelSpec(id="tiny/minilm", task="feature-extraction", local_path=str(folder))
    text = "A cat sits on the mat."
    out = run(backend, model, "feature-extraction", text=text)
    tokenizer, encoder = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder)
    encoded = tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(**encoded).last_hidden_state[0]
    mean = hidden.mean(dim=0)
    expected = (mean / mean.norm()).tolist()
    assert out.json == pytest.approx(expected, abs=1e-5)
    assert float(np.linalg.norm(out.json)) == pytest.approx(1.0, abs=1e-5)
    similarity = ModelSpec(id="tiny/minilm", task="sentence-similarity", local_path=str(folder))
    same = run(backend, similarity, "sentence-similarity", text=text, text2=text)
    assert same.json["similarity"] == pytest.approx(1.0, abs=1e-5)
    other = run(backend, similarity, "sentence-similarity", text=text, text2="Two people walk along the beach.")
    assert other.json["similarity"] < 1.0 - 1e-6


# --- vision ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit", "resnet"])
def test_image_classification(name: str, tiny: Callable[[str], pathlib.Path]) -> None:
    backend = LocalBackend(cache=ModelCache(max_models=1), top_k=2)
    out = run(backend, spec(tiny, name, "image-classification"), "image-classification", image=picture())
    assert len(out.json) == 2 and {e["label"] for e in out.json} <= set(IMAGE_LABELS.values())


@pytest.mark.parametrize("name", ["yolos", "detr-no-timm"])
def test_object_detection(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, spec(tiny, name, "object-detection"), "object-detection", image=image)
    assert out.json, "threshold 0 keeps every detection"
    for obj in out.json:
        assert obj["label"] in set(DETECTION_LABELS.values()) | {"N/A", "LABEL_3"}
    assert out.image is not None and out.image.size == image.size


def test_detr_with_a_timm_backbone_is_not_run_here(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], tmp_path: pathlib.Path
) -> None:
    """facebook/detr-resnet-50 at its default revision builds its backbone with timm, which is not installed: the
    backend says so (CannotRunHereError, so the router moves on) and points at the no_timm revision."""
    folder = tmp_path / "detr-timm"
    shutil.copytree(tiny("detr-no-timm"), folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(use_timm_backbone=True, backbone="resnet50", backbone_config=None, use_pretrained_backbone=False)
    (folder / "config.json").write_text(json.dumps(config))
    model = ModelSpec(id="facebook/detr-resnet-50", task="object-detection", local_path=str(folder))
    try:
        import timm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("timm is installed here")
    with pytest.raises(CannotRunHereError, match="timm") as info:
        backend.run("object-detection", model, {"image": picture()})
    assert "no_timm" in str(info.value)


def test_image_segmentation_segformer(backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, spec(tiny, "segformer", "image-segmentation"), "image-segmentation", image=image)
    assert {e["label"] for e in out.json} <= set(SEGMENT_LABELS.values())
    assert sum(e["area"] for e in out.json) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("name", ["depth-anything", "dpt", "glpn"])
def test_depth_estimation(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    image = picture((64, 48))
    out = run(backend, spec(tiny, name, "depth-estimation"), "depth-estimation", image=image)
    assert out.image is not None and out.image.mode == "L" and out.image.size == image.size
    assert out.extra["min"] <= out.extra["max"]


def test_super_resolution_swin2sr(backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    model = spec(tiny, "swin2sr", "image-to-image")
    for text in (None, "upscale it 2x", "make the picture sharper, higher resolution"):
        inputs = {"image": picture((48, 40))} | ({"text": text} if text else {})
        out = run(backend, model, "image-to-image", **inputs)
        assert out.image is not None and out.image.size == (96, 80) and out.extra["scale"] == 2
    with pytest.raises(CannotRunHereError, match="only upscale"):
        backend.run("image-to-image", model, {"image": picture(), "text": "make it look like winter"})


# --- image and text --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vit-gpt2", "blip-captioning"])
def test_captioning_generates_max_new_tokens(
    name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, name, "image-to-text")
    generate = Recorder(loaded(backend, model, "image-to-text").model, "generate", monkeypatch)
    out = run(backend, model, "image-to-text", image=picture())
    assert generate.kwargs["max_new_tokens"] == MAX_NEW_TOKENS
    assert isinstance(out.text, str)


def test_visual_question_answering_vilt(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, "vilt", "visual-question-answering")
    vqa = loaded(backend, model, "visual-question-answering")
    forward = Recorder(vqa.model, "forward", monkeypatch)
    question = "how many cats are there?"
    out = run(backend, model, "visual-question-answering", image=picture(), text=question)
    assert out.text in set(VQA_LABELS.values())
    assert {a["answer"] for a in out.extra["answers"]} <= set(VQA_LABELS.values())
    asked = vqa.processor.tokenizer.decode(forward.kwargs["input_ids"][0], skip_special_tokens=True)
    assert asked == question


def test_visual_question_answering_blip_is_asked_the_question(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, "blip-vqa", "visual-question-answering")
    vqa = loaded(backend, model, "visual-question-answering")
    generate = Recorder(vqa.model, "generate", monkeypatch)
    question = "what is the dog doing?"
    out = run(backend, model, "visual-question-answering", image=picture(), text=question)
    asked = vqa.processor.tokenizer.decode(generate.kwargs["input_ids"][0], skip_special_tokens=True)
    assert asked == question and isinstance(out.text, str)
    assert generate.kwargs["max_new_tokens"] <= MAX_NEW_TOKENS


def test_document_question_answering_donut(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, "donut", "document-question-answering")
    donut = loaded(backend, model, "document-question-answering")
    generate = Recorder(donut.model, "generate", monkeypatch)
    out = run(backend, model, "document-question-answering", image=picture(), text="what is the total?")
    prompt = donut.tokenizer.decode(generate.kwargs["decoder_input_ids"][0])
    assert prompt.replace(" ", "") == "<s_docvqa><s_question>whatisthetotal?</s_question><s_answer>"
    assert generate.kwargs["max_new_tokens"] <= MAX_NEW_TOKENS and isinstance(out.text, str)


def page(words: str) -> Image.Image:
    image = Image.new("RGB", (640, 160), "white")
    draw = ImageDraw.Draw(image)
    draw.text((20, 50), words, fill="black", font=ImageFont.load_default(size=48))
    return image


def test_document_question_answering_layoutlm_reads_the_page_with_ocr(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path]
) -> None:
    """The LayoutLM pipeline runs the real tesseract on the page: the answer is a span of the words it read."""
    pytesseract = pytest.importorskip("pytesseract")
    if shutil.which("tesseract") is None:
        pytest.fail("the tesseract program is not installed (apt-get install tesseract-ocr)")
    image = page("INVOICE TOTAL 42 EUR")
    read = pytesseract.image_to_string(image).split()
    assert {"INVOICE", "TOTAL"} <= set(read), read
    out = run(
        backend,
        spec(tiny, "layoutlm", "document-question-answering"),
        "document-question-answering",
        image=image,
        text="What is the total?",
    )
    assert out.text and set(out.text.split()) <= set(read), (out.text, read)


# --- audio -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["whisper", "wav2vec2-ctc"])
def test_speech_recognition(
    name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, name, "automatic-speech-recognition")
    pipe = loaded(backend, model, "automatic-speech-recognition")
    method = "generate" if name == "whisper" else "forward"
    call = Recorder(pipe.model, method, monkeypatch)
    out = run(backend, model, "automatic-speech-recognition", audio=sine(1.0, 8_000))
    assert isinstance(out.text, str) and out.extra["seconds"] == pytest.approx(1.0, abs=0.01)
    if name == "whisper":
        assert call.kwargs["max_new_tokens"] == MAX_NEW_TOKENS
        assert new_tokens(call.result, 0) <= MAX_NEW_TOKENS + 4  # + the start-of-transcript prompt
    else:
        assert call.calls, "the CTC model ran"


@pytest.mark.parametrize("name", ["ast", "wav2vec2-audio-classification"])
def test_audio_classification(name: str, backend: LocalBackend, tiny: Callable[[str], pathlib.Path]) -> None:
    out = run(backend, spec(tiny, name, "audio-classification"), "audio-classification", audio=sine(0.5))
    assert {e["label"] for e in out.json} == set(AUDIO_LABELS.values())


def test_text_to_speech_vits_speaks_the_text(
    backend: LocalBackend, tiny: Callable[[str], pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = spec(tiny, "vits", "text-to-speech")
    pipe = loaded(backend, model, "text-to-speech")
    forward = Recorder(pipe.model, "forward", monkeypatch)
    for text in ("hello world", "a much longer sentence to read aloud"):
        out = run(backend, model, "text-to-speech", text=text)
        assert forward.kwargs["input_ids"][0].tolist() == pipe.tokenizer(text)["input_ids"]
        assert out.audio is not None and out.audio.sampling_rate == pipe.model.config.sampling_rate
        assert len(out.audio.array) > 0 and np.isfinite(out.audio.array).all()


def test_text_to_speech_speecht5_with_vocoder_and_speaker(
    tiny: Callable[[str], pathlib.Path], tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SpeechT5 speaks the text with the HiFi-GAN vocoder and a speaker x-vector: the default one, or the one in
    the ``speaker_embeddings`` file. transformers refuses SpeechT5 without speaker embeddings, so this would fail
    with "speaker_embeddings must be specified" if the backend did not pass them."""
    voice = np.linspace(-1.0, 1.0, 512, dtype=np.float32)
    np.save(tmp_path / "voice.npy", voice)
    vocoder = str(tiny("speecht5-hifigan"))
    for path, expected in ((None, list(DEFAULT_SPEAKER_EMBEDDING)), (str(tmp_path / "voice.npy"), voice.tolist())):
        backend = LocalBackend(cache=ModelCache(max_models=1), speecht5_vocoder=vocoder, speaker_embeddings=path)
        model = spec(tiny, "speecht5", "text-to-speech")
        speech = loaded(backend, model, "text-to-speech")
        generate = Recorder(speech.pipe.model, "generate", monkeypatch)
        text = "hello world"
        out = run(backend, model, "text-to-speech", text=text)
        assert generate.kwargs["input_ids"][0].tolist() == speech.pipe.tokenizer(text)["input_ids"]
        assert generate.kwargs["speaker_embeddings"][0].tolist() == pytest.approx(expected)
        assert out.audio is not None and out.audio.sampling_rate == 16_000
        assert len(out.audio.array) > 0 and np.isfinite(out.audio.array).all()


def test_speecht5_speaker_embedding_file_must_hold_512_values(tmp_path: pathlib.Path) -> None:
    from tasks.experts.local.audio import speaker_embedding

    np.save(tmp_path / "short.npy", np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="512"):
        speaker_embedding(str(tmp_path / "short.npy"))


@pytest.fixture(autouse=True, scope="module")
def _no_hub() -> Iterator[None]:
    """Nothing here may reach the Hub: every model comes from a local folder."""
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    yield
