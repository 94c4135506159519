"""Which model architectures the local backend offers, per task type: only those a test has proven.

An architecture is a config's ``model_type`` (what a catalog entry records as ``architecture``). Each one listed in
:data:`PROVEN_ARCHITECTURES` is proven by a test of ``tests/tasks/experts/test_architectures.py`` that builds a
tiny random model from the same config class and the same processor / tokenizer class as the real checkpoints and
runs it through the local backend; that file's table and this one must agree (a test checks it).

:func:`local_refusal` is the one question the availability rule asks: ``None`` when a model may run here, else why
not. Extra requirements a checkpoint may have (a catalog entry's ``requires``) are accepted only when they are in
:data:`TESTED_REQUIREMENTS`; anything else (timm, for example) is not offered locally (:data:`UNTESTED_REQUIREMENTS`
says why for the known ones).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from tasks.task_types import normalize_task_name

#: Task type -> the ``model_type`` of every architecture the local backend is proven to run for it.
PROVEN_ARCHITECTURES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "text-classification": frozenset({"distilbert", "bert", "roberta"}),
        "token-classification": frozenset({"bert"}),
        "question-answering": frozenset({"roberta", "distilbert", "bert"}),
        "zero-shot-classification": frozenset({"bart", "bert"}),
        "summarization": frozenset({"bart", "t5"}),
        "translation": frozenset({"marian", "t5"}),
        "text2text-generation": frozenset({"t5", "bart"}),
        "text-generation": frozenset({"qwen2", "llama", "gpt2"}),
        "conversational": frozenset({"qwen2", "llama", "gpt2"}),
        "sentence-similarity": frozenset({"bert"}),
        "feature-extraction": frozenset({"bert"}),
        "image-classification": frozenset({"vit", "resnet"}),
        "object-detection": frozenset({"yolos", "detr"}),
        "image-segmentation": frozenset({"segformer"}),
        "depth-estimation": frozenset({"depth_anything", "dpt", "glpn"}),
        "image-to-image": frozenset({"swin2sr"}),
        "image-to-text": frozenset({"vision-encoder-decoder", "blip"}),
        "visual-question-answering": frozenset({"vilt", "blip"}),
        "document-question-answering": frozenset({"vision-encoder-decoder", "layoutlm"}),
        "automatic-speech-recognition": frozenset({"whisper", "wav2vec2"}),
        "audio-classification": frozenset({"audio-spectrogram-transformer", "wav2vec2"}),
        "text-to-speech": frozenset({"vits", "speecht5"}),
    }
)

#: Every architecture proven for at least one task type.
SUPPORTED_ARCHITECTURES: frozenset[str] = frozenset().union(*PROVEN_ARCHITECTURES.values())

#: Extra requirements (Python packages and programs) installed and exercised by the tests.
TESTED_REQUIREMENTS: frozenset[str] = frozenset({"pytesseract", "bin:tesseract", "sentencepiece"})

#: Requirements of known checkpoints that the local backend does not offer, and why.
UNTESTED_REQUIREMENTS: Mapping[str, str] = MappingProxyType(
    {
        "timm": (
            "it builds its backbone with timm, which this project neither installs nor tests (for "
            "facebook/detr-resnet-50 use revision no_timm; Intel/dpt-hybrid-midas has no such revision)"
        ),
    }
)


def architecture_refusal(task: str, architecture: str | None) -> str | None:
    """Why a model of ``architecture`` is not offered locally for ``task`` (``None``: it is)."""
    name = normalize_task_name(task)
    proven = PROVEN_ARCHITECTURES.get(name)
    if proven is None:
        return f"the local backend does not run {name}"
    if not architecture:
        return f"its architecture is not recorded; the local backend runs {name} only with {', '.join(sorted(proven))}"
    if architecture not in proven:
        return (
            f"architecture {architecture!r} is not proven for {name} by the local backend's tests "
            f"(proven: {', '.join(sorted(proven))})"
        )
    return None


def requirement_refusal(requires: Iterable[str]) -> str | None:
    """Why a model needing ``requires`` (besides transformers) is not offered locally (``None``: it is)."""
    for requirement in requires:
        if requirement in TESTED_REQUIREMENTS:
            continue
        why = UNTESTED_REQUIREMENTS.get(requirement, "the local backend's tests do not install it")
        return f"it needs {requirement}: {why}"
    return None


def local_refusal(task: str, architecture: str | None, requires: Iterable[str] = ()) -> str | None:
    """Why a model of ``architecture`` needing ``requires`` is not offered locally for ``task`` (``None``: it is)."""
    return architecture_refusal(task, architecture) or requirement_refusal(requires)
