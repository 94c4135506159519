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

import json
import pathlib
import string
from collections.abc import Callable, Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tasks.experts.local import SUPPORTED_TASKS as LOCAL_TASKS

CORPUS: tuple[str, ...] = (
    "A cat is sitting on the mat next to a small dog.",
    "The dog runs across the green park with a red ball.",
    "Two people are walking along the beach at sunset.",
    "This movie was wonderful, I loved every minute of it.",
    "The food was terrible and the service was slow.",
    "Paris is the capital of France and a city of art.",
    "Alice met Bob in London last summer.",
    "The quick brown fox jumps over the lazy dog.",
    "Please translate this sentence into French and German.",
    "Summarize the long report about climate and weather in one line.",
    "A man is riding a horse on a dirt road near the mountains.",
    "What is the name of the tallest building in the world?",
    "The answer is hidden somewhere inside this short context.",
    "Birds sing in the trees while children play in the garden.",
    "She reads a book by the window on a rainy afternoon.",
    "Hello world, this is a tiny model built for tests.",
    "translate English to French: the house is wonderful.",
    "summarize: the report says the weather will be warm and dry.",
)

#: One tiny model per task type the local backend runs.
TASKS: tuple[str, ...] = LOCAL_TASKS

SENTIMENT_LABELS: dict[int, str] = {0: "NEGATIVE", 1: "POSITIVE"}
NER_LABELS: dict[int, str] = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}
IMAGE_LABELS: dict[int, str] = {0: "cat", 1: "dog", 2: "bird"}
DETECTION_LABELS: dict[int, str] = {0: "cat", 1: "dog", 2: "person"}
NLI_LABELS: dict[int, str] = {0: "contradiction", 1: "neutral", 2: "entailment"}
SEGMENT_LABELS: dict[int, str] = {0: "background", 1: "cat", 2: "dog"}
VQA_LABELS: dict[int, str] = {0: "yes", 1: "no", 2: "two", 3: "cat"}
AUDIO_LABELS: dict[int, str] = {0: "speech", 1: "music", 2: "silence"}
DONUT_TOKENS: tuple[str, ...] = ("<s_docvqa>", "<s_question>", "</s_question>", "<s_answer>", "</s_answer>")

#: A minimal chat template (role: content lines, then the assistant's turn).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_CHARACTERS = [*string.ascii_lowercase, "'"]


# --- tokenizers ---------------------------------------------------------------------------------------------------


def _wordpiece_vocab(corpus: Iterable[str], vocab_size: int = 320) -> dict[str, int]:
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return tok.get_vocab()


def _byte_level_bpe(
    corpus: Iterable[str], special_tokens: list[str], vocab_size: int = 400
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return dict(model["vocab"]), merges  # type: ignore[return-value]


def _unigram_vocab(corpus: Iterable[str], vocab_size: int = 200) -> list[tuple[str, float]]:
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    return [(piece, float(score)) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]


def _bert_tokenizer(folder: pathlib.Path) -> Any:
    from transformers import BertTokenizer

    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(CORPUS))
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    return tokenizer


def _gpt2_tokenizer(folder: pathlib.Path) -> Any:
    from transformers import GPT2Tokenizer

    vocab, merges = _byte_level_bpe(CORPUS, ["<|endoftext|>"])
    tokenizer = GPT2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    return tokenizer


# --- one builder per task -------------------------------------------------------------------------------------------


def _seed() -> None:
    torch.manual_seed(0)


def _bert_kwargs(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "max_position_embeddings": 64,
    }


def _build_text_classification(folder: pathlib.Path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(
        **_bert_kwargs(len(tokenizer)),
        id2label=SENTIMENT_LABELS,
        label2id={v: k for k, v in SENTIMENT_LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForSequenceClassification(config).save_pretrained(folder)


def _build_token_classification(folder: pathlib.Path) -> None:
    from transformers import BertConfig, BertForTokenClassification

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(
        **_bert_kwargs(len(tokenizer)),
        id2label=NER_LABELS,
        label2id={v: k for k, v in NER_LABELS.items()},
        pad_token_id=tokenizer.pad_token_id,
    )
    BertForTokenClassification(config).save_pretrained(folder)


def _build_question_answering(folder: pathlib.Path) -> None:
    from transformers import BertConfig, BertForQuestionAnswering

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(**_bert_kwargs(len(tokenizer)), pad_token_id=tokenizer.pad_token_id)
    BertForQuestionAnswering(config).save_pretrained(folder)


def _gpt2_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_inner=32,
        n_positions=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _build_text_generation(folder: pathlib.Path) -> None:
    from transformers import GPT2LMHeadModel

    tokenizer = _gpt2_tokenizer(folder)
    model = GPT2LMHeadModel(_gpt2_config(tokenizer))
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = _unprintable_token_ids(tokenizer)
    model.save_pretrained(folder)


def _build_seq2seq(folder: pathlib.Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration, T5Tokenizer

    tokenizer = T5Tokenizer(vocab=_unigram_vocab(CORPUS), extra_ids=0)
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)


def _vit_kwargs() -> dict[str, Any]:
    return {
        "image_size": 32,
        "patch_size": 8,
        "num_channels": 3,
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
    }


def _vit_image_processor() -> Any:
    from transformers import ViTImageProcessor

    return ViTImageProcessor(size={"height": 32, "width": 32})


def _build_image_classification(folder: pathlib.Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification

    _vit_image_processor().save_pretrained(folder)
    config = ViTConfig(**_vit_kwargs(), id2label=IMAGE_LABELS, label2id={v: k for k, v in IMAGE_LABELS.items()})
    ViTForImageClassification(config).save_pretrained(folder)


def _build_object_detection(folder: pathlib.Path) -> None:
    from transformers import DetrConfig, DetrForObjectDetection, DetrImageProcessor, ResNetConfig

    DetrImageProcessor(size={"shortest_edge": 64, "longest_edge": 64}).save_pretrained(folder)
    backbone = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", out_features=["stage2"]
    )
    config = DetrConfig(
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        backbone_config=backbone,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_queries=5,
        id2label=DETECTION_LABELS,
        label2id={v: k for k, v in DETECTION_LABELS.items()},
    )
    DetrForObjectDetection(config).save_pretrained(folder)


def _unprintable_token_ids(tokenizer: Any) -> list[int]:
    """Byte-level tokens that decode to no whole character: a random model would emit them as mojibake."""
    return [
        i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i]) or not tokenizer.decode([i]).isprintable()
    ]


def _build_image_to_text(folder: pathlib.Path) -> None:
    from transformers import VisionEncoderDecoderConfig, VisionEncoderDecoderModel, ViTConfig

    _vit_image_processor().save_pretrained(folder)
    tokenizer = _gpt2_tokenizer(folder)
    decoder = _gpt2_config(tokenizer, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(ViTConfig(**_vit_kwargs()), decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.eos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = _unprintable_token_ids(tokenizer)
    model.save_pretrained(folder)


def build_tiny_blip_captioner(folder: pathlib.Path) -> pathlib.Path:
    """A tiny BLIP captioner (``BlipForConditionalGeneration`` + ``BlipProcessor``), the other image-to-text family."""
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    folder = pathlib.Path(folder)
    if (folder / "config.json").exists():
        return folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _seed()
    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(CORPUS))
    tokenizer.model_max_length = 64
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    config = BlipConfig(
        text_config={
            **_bert_kwargs(len(tokenizer)),
            "encoder_hidden_size": 16,
            "projection_dim": 16,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**{k: v for k, v in _vit_kwargs().items() if k != "num_channels"}, "projection_dim": 16},
        projection_dim=16,
        image_text_hidden_size=16,
    )
    BlipForConditionalGeneration(config).save_pretrained(folder)
    return folder.resolve()


def build_tiny_blip_vqa(folder: pathlib.Path) -> pathlib.Path:
    """A tiny BLIP that answers questions by generating text (``BlipForQuestionAnswering``)."""
    from transformers import BlipConfig, BlipForQuestionAnswering

    folder = pathlib.Path(folder)
    if (folder / "config.json").exists() and "BlipForQuestionAnswering" in (folder / "config.json").read_text():
        return folder.resolve()
    build_tiny_blip_captioner(folder)
    _seed()
    BlipForQuestionAnswering(BlipConfig.from_pretrained(folder)).save_pretrained(folder)
    return folder.resolve()


def build_tiny_layoutlm(folder: pathlib.Path) -> pathlib.Path:
    """A tiny LayoutLM extractive document QA model (it needs the page's words and boxes, from OCR)."""
    from transformers import LayoutLMConfig, LayoutLMForQuestionAnswering

    folder = pathlib.Path(folder)
    if (folder / "config.json").exists():
        return folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    _seed()
    tokenizer = _bert_tokenizer(folder)
    config = LayoutLMConfig(**_bert_kwargs(len(tokenizer)), pad_token_id=tokenizer.pad_token_id)
    LayoutLMForQuestionAnswering(config).save_pretrained(folder)
    return folder.resolve()


def _build_asr(folder: pathlib.Path) -> None:
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    vocab = {tok: i for i, tok in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|", *_CHARACTERS])}
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    config = Wav2Vec2Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        pad_token_id=tokenizer.pad_token_id,
        ctc_loss_reduction="mean",
    )
    Wav2Vec2ForCTC(config).save_pretrained(folder)


def _build_tts(folder: pathlib.Path) -> None:
    from transformers import VitsConfig, VitsModel, VitsTokenizer

    vocab = {tok: i for i, tok in enumerate(["<pad>", " ", *_CHARACTERS, "<unk>"])}
    vocab_file = folder / "vocab.json"
    vocab_file.write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = VitsTokenizer(str(vocab_file), language="eng", add_blank=True, normalize=True, phonemize=False)
    tokenizer.save_pretrained(folder)
    config = VitsConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        ffn_dim=32,
        flow_size=16,
        spectrogram_bins=33,
        upsample_initial_channel=16,
        upsample_rates=(8, 8, 2, 2),
        upsample_kernel_sizes=(16, 16, 4, 4),
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1,),),
        depth_separable_num_layers=1,
        duration_predictor_filter_channels=16,
        duration_predictor_num_flows=1,
        prior_encoder_num_flows=1,
        prior_encoder_num_wavenet_layers=1,
        posterior_encoder_num_wavenet_layers=1,
        sampling_rate=16_000,
        pad_token_id=vocab["<pad>"],
    )
    VitsModel(config).save_pretrained(folder)


def _labels(id2label: dict[int, str]) -> dict[str, Any]:
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


def _build_conversational(folder: pathlib.Path) -> None:
    """The tiny GPT-2 with a chat template on its tokenizer."""
    from transformers import AutoTokenizer

    _build_text_generation(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.save_pretrained(folder)


def _build_encoder(folder: pathlib.Path) -> None:
    """A bare BERT encoder (``AutoModel``), for sentence embeddings."""
    from transformers import BertConfig, BertModel

    tokenizer = _bert_tokenizer(folder)
    BertModel(BertConfig(**_bert_kwargs(len(tokenizer)), pad_token_id=tokenizer.pad_token_id)).save_pretrained(folder)


def _build_zero_shot(folder: pathlib.Path) -> None:
    """A BERT NLI classifier (contradiction / neutral / entailment), what zero-shot classification runs on."""
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = _bert_tokenizer(folder)
    config = BertConfig(**_bert_kwargs(len(tokenizer)), **_labels(NLI_LABELS), pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)


def _mix_transformer_kwargs() -> dict[str, Any]:
    """Two tiny stages of SegFormer's / GLPN's hierarchical encoder."""
    return {
        "num_encoder_blocks": 2,
        "depths": [1, 1],
        "sr_ratios": [2, 1],
        "hidden_sizes": [8, 16],
        "patch_sizes": [7, 3],
        "strides": [4, 2],
        "num_attention_heads": [1, 2],
        "mlp_ratios": [2, 2],
    }


def _build_image_segmentation(folder: pathlib.Path) -> None:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation, SegformerImageProcessor

    SegformerImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    config = SegformerConfig(**_mix_transformer_kwargs(), decoder_hidden_size=16, **_labels(SEGMENT_LABELS))
    SegformerForSemanticSegmentation(config).save_pretrained(folder)


def _build_depth_estimation(folder: pathlib.Path) -> None:
    from transformers import GLPNConfig, GLPNForDepthEstimation, GLPNImageProcessor

    GLPNImageProcessor().save_pretrained(folder)
    GLPNForDepthEstimation(GLPNConfig(**_mix_transformer_kwargs(), decoder_hidden_size=8)).save_pretrained(folder)


def _build_visual_question_answering(folder: pathlib.Path) -> None:
    from transformers import BertTokenizer, ViltConfig, ViltForQuestionAnswering, ViltImageProcessor, ViltProcessor

    tokenizer = BertTokenizer(vocab=_wordpiece_vocab(CORPUS))
    tokenizer.model_max_length = 40
    image_processor = ViltImageProcessor(size={"shortest_edge": 32}, size_divisor=32)
    ViltProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    config = ViltConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        max_position_embeddings=40,
        **_labels(VQA_LABELS),
    )
    ViltForQuestionAnswering(config).save_pretrained(folder)


def _build_document_question_answering(folder: pathlib.Path) -> None:
    """A tiny Donut: a DonutSwin encoder and a GPT-2 decoder that knows Donut's DocVQA prompt tokens."""
    from transformers import (
        DonutImageProcessor,
        DonutProcessor,
        DonutSwinConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )

    tokenizer = _gpt2_tokenizer(folder)
    tokenizer.add_special_tokens({"additional_special_tokens": list(DONUT_TOKENS)})
    image_processor = DonutImageProcessor(size={"height": 32, "width": 32})
    DonutProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    encoder = DonutSwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4)
    decoder = _gpt2_config(tokenizer, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.eos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.eos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)


def _build_image_to_image(folder: pathlib.Path) -> None:
    """A tiny Swin2SR x2 super-resolution model."""
    from transformers import Swin2SRConfig, Swin2SRForImageSuperResolution, Swin2SRImageProcessor

    Swin2SRImageProcessor(pad_size=8).save_pretrained(folder)
    config = Swin2SRConfig(
        image_size=32,
        patch_size=1,
        embed_dim=8,
        depths=[1],
        num_heads=[2],
        window_size=8,
        mlp_ratio=1.0,
        upscale=2,
        upsampler="pixelshuffledirect",
    )
    Swin2SRForImageSuperResolution(config).save_pretrained(folder)


def _build_audio_classification(folder: pathlib.Path) -> None:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2ForSequenceClassification

    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    ).save_pretrained(folder)
    config = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8),
        conv_stride=(5, 4, 4),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        classifier_proj_size=8,
        **_labels(AUDIO_LABELS),
    )
    Wav2Vec2ForSequenceClassification(config).save_pretrained(folder)


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


# --- one tiny model per architecture the local backend offers ---------------------------------------------------------
#
# Each builder uses the config class and the processor / tokenizer class of the real checkpoint named in its
# docstring (checked against the checkpoint's config.json, tokenizer_config.json and preprocessor_config.json), so
# loading it exercises the same Auto-class resolution and preprocessing as the real model.

#: The chat template of Qwen2.5 / SmolLM2 instruct models (ChatML), reduced to what one user turn needs.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHATML_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
#: Whisper's special tokens for English transcription.
WHISPER_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|en|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|nospeech|>",
    "<|notimestamps|>",
)
ROBERTA_SPECIALS: list[str] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
#: Decoders of the seq2seq builders never stop before this many tokens (as bart-large-cnn's min_length of 56), so a
#: test can count that generation ran exactly the asked ``max_new_tokens``.
MIN_GENERATED = 60


def _roberta_tokenizer(folder: pathlib.Path, cls_name: str = "RobertaTokenizer", **kwargs: Any) -> Any:
    import transformers

    vocab, merges = _byte_level_bpe(CORPUS, ROBERTA_SPECIALS)
    tokenizer = getattr(transformers, cls_name)(vocab=vocab, merges=merges, **kwargs)
    tokenizer.model_max_length = 60
    tokenizer.save_pretrained(folder)
    return tokenizer


def _sentencepiece_model(corpus: Iterable[str], model_type: str, vocab_size: int, **kwargs: Any) -> bytes:
    import io

    import sentencepiece

    out = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(list(corpus)),
        model_writer=out,
        model_type=model_type,
        vocab_size=vocab_size,
        hard_vocab_limit=False,
        minloglevel=2,
        **kwargs,
    )
    return out.getvalue()


def _distilbert_tokenizer(folder: pathlib.Path) -> Any:
    from transformers import DistilBertTokenizer

    tokenizer = DistilBertTokenizer(vocab=_wordpiece_vocab(CORPUS))
    tokenizer.model_max_length = 64
    tokenizer.save_pretrained(folder)
    return tokenizer


def _distilbert_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import DistilBertConfig

    return DistilBertConfig(
        vocab_size=len(tokenizer),
        dim=16,
        n_layers=1,
        n_heads=2,
        hidden_dim=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _build_distilbert_sst2(folder: pathlib.Path) -> None:
    """distilbert/distilbert-base-uncased-finetuned-sst-2-english: DistilBertConfig, DistilBertTokenizer."""
    from transformers import DistilBertForSequenceClassification

    tokenizer = _distilbert_tokenizer(folder)
    DistilBertForSequenceClassification(_distilbert_config(tokenizer, **_labels(SENTIMENT_LABELS))).save_pretrained(
        folder
    )


def _build_distilbert_squad(folder: pathlib.Path) -> None:
    """distilbert/distilbert-base-cased-distilled-squad: DistilBertConfig, DistilBertTokenizer."""
    from transformers import DistilBertForQuestionAnswering

    DistilBertForQuestionAnswering(_distilbert_config(_distilbert_tokenizer(folder))).save_pretrained(folder)


def _roberta_config(tokenizer: Any, cls_name: str = "RobertaConfig", **extra: Any) -> Any:
    import transformers

    return getattr(transformers, cls_name)(
        vocab_size=len(tokenizer),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **extra,
    )


def _build_roberta_squad2(folder: pathlib.Path) -> None:
    """deepset/roberta-base-squad2: RobertaConfig, RobertaTokenizer."""
    from transformers import RobertaForQuestionAnswering

    RobertaForQuestionAnswering(_roberta_config(_roberta_tokenizer(folder))).save_pretrained(folder)


def _build_roberta_sentiment(folder: pathlib.Path) -> None:
    """A RoBERTa sentiment head (cardiffnlp/twitter-roberta-base-sentiment-latest): RobertaConfig, RobertaTokenizer."""
    from transformers import RobertaForSequenceClassification

    tokenizer = _roberta_tokenizer(folder)
    RobertaForSequenceClassification(_roberta_config(tokenizer, **_labels(SENTIMENT_LABELS))).save_pretrained(folder)


def _bart_config(tokenizer: Any, **extra: Any) -> Any:
    from transformers import BartConfig

    return BartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_bos_token_id=tokenizer.bos_token_id,
        **extra,
    )


def _build_bart_cnn(folder: pathlib.Path) -> None:
    """facebook/bart-large-cnn, sshleifer/distilbart-cnn-12-6: BartConfig, BartTokenizer (no task prefix)."""
    from transformers import BartForConditionalGeneration

    tokenizer = _roberta_tokenizer(folder, "BartTokenizer")
    model = BartForConditionalGeneration(_bart_config(tokenizer))
    model.generation_config.min_length = MIN_GENERATED
    model.save_pretrained(folder)


def _build_bart_mnli(folder: pathlib.Path) -> None:
    """facebook/bart-large-mnli: BartConfig with contradiction / neutral / entailment, BartTokenizer."""
    from transformers import BartForSequenceClassification

    tokenizer = _roberta_tokenizer(folder, "BartTokenizer")
    BartForSequenceClassification(_bart_config(tokenizer, **_labels(NLI_LABELS))).save_pretrained(folder)


def _build_flan_t5(folder: pathlib.Path) -> None:
    """google/flan-t5-base: T5Config with T5's task prefixes, T5Tokenizer (its decoder never stops early, for
    counting tokens)."""
    from transformers import GenerationConfig, T5Config

    _build_seq2seq(folder)
    config = T5Config.from_pretrained(folder)
    config.task_specific_params = {
        "summarization": {"prefix": "summarize: "},
        "translation_en_to_de": {"prefix": "translate English to German: "},
        "translation_en_to_fr": {"prefix": "translate English to French: "},
        "translation_en_to_ro": {"prefix": "translate English to Romanian: "},
    }
    config.save_pretrained(folder)
    generation = GenerationConfig.from_pretrained(folder)
    generation.min_length = MIN_GENERATED
    generation.save_pretrained(folder)


def _build_marian(folder: pathlib.Path, source: str, target: str, target_codes: tuple[str, ...] = ()) -> None:
    """Helsinki-NLP/opus-mt-{source}-{target}: MarianConfig, MarianTokenizer (source.spm, target.spm, vocab.json;
    the language pair in tokenizer_config.json). A multi-target model (opus-mt-en-ROMANCE) has a ``>>xx<<`` token
    per target language in ``target_codes``."""
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    spm = _sentencepiece_model(CORPUS, "unigram", 120)
    (folder / "source.spm").write_bytes(spm)
    (folder / "target.spm").write_bytes(spm)
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_proto=spm)
    pieces = [processor.id_to_piece(i) for i in range(processor.get_piece_size())]
    vocab = {"</s>": 0, "<unk>": 1}
    for code in target_codes:
        vocab[f">>{code}<<"] = len(vocab)
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    tokenizer = MarianTokenizer(
        str(folder / "source.spm"),
        str(folder / "target.spm"),
        str(folder / "vocab.json"),
        source_lang=source,
        target_lang=target,
        model_max_length=64,
    )
    tokenizer.save_pretrained(folder)
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        decoder_start_token_id=vocab["<pad>"],
        forced_eos_token_id=vocab["</s>"],
    )
    model = MarianMTModel(config)
    model.generation_config.min_length = MIN_GENERATED
    model.save_pretrained(folder)


def _chat_tokenizer(folder: pathlib.Path, cls_name: str) -> Any:
    import transformers

    vocab, merges = _byte_level_bpe(CORPUS, list(CHATML_TOKENS))
    cls = getattr(transformers, cls_name)
    tokenizer = cls(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.model_max_length = 64
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def _causal_lm(folder: pathlib.Path, tokenizer: Any, config: Any, model_cls: Any) -> None:
    model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.min_new_tokens = MIN_GENERATED
    model.generation_config.suppress_tokens = _unprintable_token_ids(tokenizer)
    model.save_pretrained(folder)


def _decoder_kwargs(tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 64,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _build_qwen2_chat(folder: pathlib.Path) -> None:
    """Qwen/Qwen2.5-0.5B-Instruct: Qwen2Config, Qwen2Tokenizer with a ChatML chat template."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = _chat_tokenizer(folder, "Qwen2Tokenizer")
    _causal_lm(folder, tokenizer, Qwen2Config(**_decoder_kwargs(tokenizer)), Qwen2ForCausalLM)


def _build_llama_chat(folder: pathlib.Path) -> None:
    """HuggingFaceTB/SmolLM2-360M-Instruct: LlamaConfig, GPT2Tokenizer with a ChatML chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _chat_tokenizer(folder, "GPT2Tokenizer")
    _causal_lm(folder, tokenizer, LlamaConfig(**_decoder_kwargs(tokenizer)), LlamaForCausalLM)


def _build_minilm_sentence_embeddings(folder: pathlib.Path) -> None:
    """sentence-transformers/all-MiniLM-L6-v2: BertModel, BertTokenizer, and its sentence-transformers modules
    (mean pooling, then normalisation)."""
    _build_encoder(folder)
    (folder / "modules.json").write_text(
        json.dumps(
            [
                {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
            ]
        ),
        encoding="utf-8",
    )
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": 16,
                "pooling_mode_cls_token": False,
                "pooling_mode_mean_tokens": True,
                "pooling_mode_max_tokens": False,
            }
        ),
        encoding="utf-8",
    )


def _build_resnet(folder: pathlib.Path) -> None:
    """microsoft/resnet-50: ResNetConfig, ConvNextImageProcessor."""
    from transformers import ConvNextImageProcessor, ResNetConfig, ResNetForImageClassification

    ConvNextImageProcessor(size={"shortest_edge": 32}, crop_pct=0.875).save_pretrained(folder)
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="bottleneck", **_labels(IMAGE_LABELS)
    )
    ResNetForImageClassification(config).save_pretrained(folder)


def _build_yolos(folder: pathlib.Path) -> None:
    """hustvl/yolos-tiny: YolosConfig, YolosImageProcessor."""
    from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessor

    YolosImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(folder)
    config = YolosConfig(
        image_size=[32, 32],
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_detection_tokens=5,
        **_labels(DETECTION_LABELS),
    )
    YolosForObjectDetection(config).save_pretrained(folder)


def _build_depth_anything(folder: pathlib.Path) -> None:
    """depth-anything/Depth-Anything-V2-Small-hf: DepthAnythingConfig (a DINOv2 backbone), DPTImageProcessor."""
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessor

    DPTImageProcessor(
        size={"height": 28, "width": 28}, keep_aspect_ratio=True, ensure_multiple_of=14, do_pad=False
    ).save_pretrained(folder)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(folder)


def _build_dpt(folder: pathlib.Path) -> None:
    """Intel/dpt-large: DPTConfig (a ViT backbone, no timm), DPTImageProcessor."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(folder)
    config = DPTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[8, 8, 8, 8],
        fusion_hidden_size=8,
        head_in_index=-1,
        is_hybrid=False,
    )
    DPTForDepthEstimation(config).save_pretrained(folder)


def _build_donut_mbart(folder: pathlib.Path) -> None:
    """naver-clova-ix/donut-base-finetuned-docvqa: VisionEncoderDecoderConfig (donut-swin encoder, mbart decoder),
    DonutProcessor with XLMRobertaTokenizer and the DocVQA prompt tokens."""
    from transformers import (
        DonutImageProcessor,
        DonutProcessor,
        DonutSwinConfig,
        MBartConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        XLMRobertaTokenizer,
    )

    pieces = _unigram_vocab(CORPUS)
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, s) for p, s in pieces if p not in {"<pad>", "</s>", "<unk>"}]
    vocab.append(("<mask>", 0.0))
    tokenizer = XLMRobertaTokenizer(vocab=vocab)
    tokenizer.add_special_tokens({"additional_special_tokens": list(DONUT_TOKENS)})
    tokenizer.model_max_length = 64
    DonutProcessor(
        image_processor=DonutImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    ).save_pretrained(folder)
    encoder = DonutSwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 2], window_size=4)
    decoder = MBartConfig(
        vocab_size=len(tokenizer),
        d_model=16,
        decoder_layers=1,
        decoder_attention_heads=2,
        decoder_ffn_dim=32,
        encoder_layers=1,
        encoder_attention_heads=2,
        encoder_ffn_dim=32,
        max_position_embeddings=64,
        is_decoder=True,
        add_cross_attention=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        scale_embedding=True,
        add_final_layer_norm=True,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)


def _build_layoutlm_roberta(folder: pathlib.Path) -> None:
    """impira/layoutlm-document-qa: LayoutLMConfig, RobertaTokenizer (add_prefix_space=True); the pipeline reads the
    page's words with tesseract."""
    from transformers import LayoutLMForQuestionAnswering

    tokenizer = _roberta_tokenizer(folder, add_prefix_space=True)
    config = _roberta_config(tokenizer, "LayoutLMConfig", max_2d_position_embeddings=1024)
    LayoutLMForQuestionAnswering(config).save_pretrained(folder)


def _build_whisper(folder: pathlib.Path) -> None:
    """openai/whisper-base, openai/whisper-tiny: WhisperConfig, WhisperProcessor (WhisperFeatureExtractor,
    WhisperTokenizer with Whisper's special tokens), a multilingual generation config."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizer,
    )

    vocab, merges = _byte_level_bpe(CORPUS, list(WHISPER_TOKENS))
    tokenizer = WhisperTokenizer(vocab=vocab, merges=merges)
    tokenizer.model_max_length = 64
    extractor = WhisperFeatureExtractor(feature_size=16)
    WhisperProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    ids = {t: vocab[t] for t in WHISPER_TOKENS}
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=16,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=64,
        pad_token_id=ids["<|endoftext|>"],
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|endoftext|>"],
        decoder_start_token_id=ids["<|startoftranscript|>"],
        suppress_tokens=[],
        begin_suppress_tokens=[],
    )
    model = WhisperForConditionalGeneration(config)
    generation = model.generation_config
    generation.decoder_start_token_id = ids["<|startoftranscript|>"]
    generation.eos_token_id = ids["<|endoftext|>"]
    generation.pad_token_id = ids["<|endoftext|>"]
    generation.no_timestamps_token_id = ids["<|notimestamps|>"]
    generation.is_multilingual = True
    generation.lang_to_id = {"<|en|>": ids["<|en|>"]}
    generation.task_to_id = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    generation.suppress_tokens = [i for i in _unprintable_token_ids(tokenizer) if i not in ids.values()]
    generation.begin_suppress_tokens = []
    model.save_pretrained(folder)


def _build_ast(folder: pathlib.Path) -> None:
    """MIT/ast-finetuned-audioset-10-10-0.4593: ASTConfig, ASTFeatureExtractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    ASTFeatureExtractor(num_mel_bins=16, max_length=64).save_pretrained(folder)
    config = ASTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_mel_bins=16,
        max_length=64,
        **_labels(AUDIO_LABELS),
    )
    ASTForAudioClassification(config).save_pretrained(folder)


def _build_speecht5(folder: pathlib.Path) -> None:
    """microsoft/speecht5_tts: SpeechT5Config, SpeechT5Processor (SpeechT5Tokenizer on a character sentencepiece
    model, SpeechT5FeatureExtractor); its vocoder is built by :func:`_build_speecht5_hifigan`."""
    from transformers import (
        SpeechT5Config,
        SpeechT5FeatureExtractor,
        SpeechT5ForTextToSpeech,
        SpeechT5Processor,
        SpeechT5Tokenizer,
    )

    spm_file = folder / "spm_char.model"
    spm_file.write_bytes(_sentencepiece_model(CORPUS, "char", 60, bos_id=0, pad_id=1, eos_id=2, unk_id=3))
    tokenizer = SpeechT5Tokenizer(str(spm_file))
    tokenizer.model_max_length = 64
    SpeechT5Processor(feature_extractor=SpeechT5FeatureExtractor(num_mel_bins=8), tokenizer=tokenizer).save_pretrained(
        folder
    )
    config = SpeechT5Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        num_mel_bins=8,
        speech_decoder_prenet_units=16,
        speech_decoder_postnet_units=16,
        speech_decoder_postnet_layers=1,
        speaker_embedding_dim=512,
        max_text_positions=64,
        max_speech_positions=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.bos_token_id,
    )
    SpeechT5ForTextToSpeech(config).save_pretrained(folder)


def _build_speecht5_hifigan(folder: pathlib.Path) -> None:
    """microsoft/speecht5_hifigan: SpeechT5HifiGanConfig."""
    from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

    config = SpeechT5HifiGanConfig(
        model_in_dim=8,
        upsample_initial_channel=16,
        upsample_rates=[4, 4],
        upsample_kernel_sizes=[8, 8],
        resblock_kernel_sizes=[3],
        resblock_dilation_sizes=[[1]],
        sampling_rate=16_000,
    )
    SpeechT5HifiGan(config).save_pretrained(folder)


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
