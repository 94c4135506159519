"""Tiny, randomly initialised models for the locally executable tasks, built offline.

Every model is built from a config with random weights and saved with ``save_pretrained``; tokenizers are
trained in-process with the ``tokenizers`` library on a small built-in corpus, wrapped in the matching
transformers tokenizer class and saved beside the model. The folders load back through the same
``from_pretrained`` / ``pipeline`` code as models from the Hub.

    paths = build_tiny_models(tmp_path)        # {"text-classification": Path(...), ...}
    records = tiny_catalog_entries(paths)      # catalog JSON records, one per task
    folder = build_architecture("whisper", tmp_path)   # one per real checkpoint family (ARCHITECTURE_BUILDERS)

The architecture builders use the config class and the processor / tokenizer class of the real checkpoint each one
stands for (``tests/tasks/experts/test_architectures.py`` checks them and runs each through the local backend).
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable
from typing import Any

from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS
from tests.tiny_models.audio import (
    AUDIO_LABELS,
    _build_asr,
    _build_ast,
    _build_audio_classification,
    _build_speecht5,
    _build_speecht5_hifigan,
    _build_tts,
    _build_whisper,
)
from tests.tiny_models.common import CHAT_TEMPLATE, CORPUS, _bert_tokenizer, _byte_level_bpe, _seed
from tests.tiny_models.multimodal import (
    VQA_LABELS,
    _build_document_question_answering,
    _build_donut_mbart,
    _build_image_to_text,
    _build_layoutlm_roberta,
    _build_visual_question_answering,
    build_tiny_blip_captioner,
    build_tiny_blip_vqa,
    build_tiny_layoutlm,
)
from tests.tiny_models.text import (
    CHATML_TEMPLATE,
    CHATML_TOKENS,
    NER_LABELS,
    NLI_LABELS,
    SENTIMENT_LABELS,
    _build_bart_cnn,
    _build_bart_mnli,
    _build_conversational,
    _build_distilbert_squad,
    _build_distilbert_sst2,
    _build_encoder,
    _build_flan_t5,
    _build_llama_chat,
    _build_marian,
    _build_minilm_sentence_embeddings,
    _build_question_answering,
    _build_qwen2_chat,
    _build_roberta_sentiment,
    _build_roberta_squad2,
    _build_seq2seq,
    _build_text_classification,
    _build_text_generation,
    _build_token_classification,
    _build_zero_shot,
)
from tests.tiny_models.vision import (
    DETECTION_LABELS,
    IMAGE_LABELS,
    SEGMENT_LABELS,
    _build_depth_anything,
    _build_depth_estimation,
    _build_dpt,
    _build_image_classification,
    _build_image_segmentation,
    _build_image_to_image,
    _build_object_detection,
    _build_resnet,
    _build_yolos,
)

__all__ = [
    "ARCHITECTURE_BUILDERS",
    "AUDIO_LABELS",
    "CHATML_TEMPLATE",
    "CHATML_TOKENS",
    "CHAT_TEMPLATE",
    "CORPUS",
    "DETECTION_LABELS",
    "IMAGE_LABELS",
    "NER_LABELS",
    "NLI_LABELS",
    "SEGMENT_LABELS",
    "SENTIMENT_LABELS",
    "TASKS",
    "VQA_LABELS",
    "_bert_tokenizer",
    "_byte_level_bpe",
    "build_architecture",
    "build_tiny_blip_captioner",
    "build_tiny_blip_vqa",
    "build_tiny_layoutlm",
    "build_tiny_models",
    "tiny_catalog_entries",
]


#: One tiny model per task type the local backend runs.
TASKS: tuple[str, ...] = LOCAL_TASKS


_BUILDERS: dict[str, Callable[[pathlib.Path], None]] = {
    "text-classification": _build_text_classification,
    "token-classification": _build_token_classification,
    "text-generation": _build_text_generation,
    "summarization": _build_seq2seq,
    "translation": _build_seq2seq,
    "question-answering": _build_question_answering,
    "image-classification": _build_image_classification,
    "object-detection": _build_object_detection,
    "image-to-text": _build_image_to_text,
    "automatic-speech-recognition": _build_asr,
    "text-to-speech": _build_tts,
    "text2text-generation": _build_seq2seq,
    "conversational": _build_conversational,
    "sentence-similarity": _build_encoder,
    "zero-shot-classification": _build_zero_shot,
    "feature-extraction": _build_encoder,
    "image-segmentation": _build_image_segmentation,
    "depth-estimation": _build_depth_estimation,
    "visual-question-answering": _build_visual_question_answering,
    "document-question-answering": _build_document_question_answering,
    "image-to-image": _build_image_to_image,
    "audio-classification": _build_audio_classification,
}


def build_tiny_models(root: pathlib.Path, tasks: Iterable[str] = TASKS) -> dict[str, pathlib.Path]:
    """Build one tiny random model per task under ``root`` and return ``{task: folder}``.

    Folders that already hold a ``config.json`` are reused as they are.
    """
    root = pathlib.Path(root)
    paths: dict[str, pathlib.Path] = {}
    for task in tasks:
        folder = root / task
        if not (folder / "config.json").exists():
            folder.mkdir(parents=True, exist_ok=True)
            _seed()
            _BUILDERS[task](folder)
        paths[task] = folder.resolve()
    return paths


def tiny_catalog_entries(paths: dict[str, pathlib.Path]) -> list[dict[str, Any]]:
    """Catalog records (one per task) pointing at the tiny model folders built by :func:`build_tiny_models`."""
    return [
        {
            "id": f"tiny/{task}",
            "task": task,
            "downloads": 0,
            "likes": 0,
            "tags": ["tiny", "test"],
            "description": f"tiny random {task} model for tests",
            "local_path": str(pathlib.Path(path).resolve()),
        }
        for task, path in paths.items()
    ]


#: Builders by name, one per real checkpoint family (see each builder's docstring).
ARCHITECTURE_BUILDERS: dict[str, Callable[[pathlib.Path], None]] = {
    "vits": _build_tts,
    "speecht5": _build_speecht5,
    "speecht5-hifigan": _build_speecht5_hifigan,
    "whisper": _build_whisper,
    "wav2vec2-ctc": _build_asr,
    "wav2vec2-audio-classification": _build_audio_classification,
    "ast": _build_ast,
    "vit-gpt2": _build_image_to_text,
    "blip-captioning": build_tiny_blip_captioner,
    "blip-vqa": build_tiny_blip_vqa,
    "yolos": _build_yolos,
    "detr-no-timm": _build_object_detection,
    "depth-anything": _build_depth_anything,
    "dpt": _build_dpt,
    "glpn": _build_depth_estimation,
    "segformer": _build_image_segmentation,
    "vilt": _build_visual_question_answering,
    "donut": _build_donut_mbart,
    "layoutlm": _build_layoutlm_roberta,
    "marian-en-fr": lambda folder: _build_marian(folder, "en", "fr"),
    "marian-en-romance": lambda folder: _build_marian(folder, "en", "ROMANCE", ("fr", "es", "it")),
    "bart-cnn": _build_bart_cnn,
    "bart-mnli": _build_bart_mnli,
    "flan-t5": _build_flan_t5,
    "distilbert-sst2": _build_distilbert_sst2,
    "distilbert-squad": _build_distilbert_squad,
    "roberta-squad2": _build_roberta_squad2,
    "roberta-sentiment": _build_roberta_sentiment,
    "bert-sentiment": _build_text_classification,
    "bert-ner": _build_token_classification,
    "bert-squad": _build_question_answering,
    "bert-nli": _build_zero_shot,
    "vit": _build_image_classification,
    "resnet": _build_resnet,
    "swin2sr": _build_image_to_image,
    "qwen2-chat": _build_qwen2_chat,
    "llama-chat": _build_llama_chat,
    "gpt2": _build_text_generation,
    "gpt2-chat": _build_conversational,
    "minilm-sentence-embeddings": _build_minilm_sentence_embeddings,
}


def build_architecture(name: str, root: pathlib.Path) -> pathlib.Path:
    """Build (once) the tiny model ``name`` of :data:`ARCHITECTURE_BUILDERS` under ``root``; return its folder."""
    folder = pathlib.Path(root) / name
    if not (folder / "config.json").exists():
        folder.mkdir(parents=True, exist_ok=True)
        _seed()
        ARCHITECTURE_BUILDERS[name](folder)
    return folder.resolve()
