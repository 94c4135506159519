"""Tiny, randomly initialised models for the locally executable tasks, built offline.

Every model is built from a config with random weights and saved with ``save_pretrained``; tokenizers are
trained in-process with the ``tokenizers`` library on a small built-in corpus, wrapped in the matching
transformers tokenizer class and saved beside the model. The folders load back through the same
``from_pretrained`` / ``pipeline`` code as models from the Hub.

    paths = build_tiny_models(tmp_path)        # {"text-classification": Path(...), ...}
    records = tiny_catalog_entries(paths)      # catalog JSON records, one per task
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
