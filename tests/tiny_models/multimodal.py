"""Tiny models that read images and text together: captioners, visual and document question answering."""

from __future__ import annotations

import pathlib

from tests.tiny_models.common import (
    CORPUS,
    _bert_kwargs,
    _bert_tokenizer,
    _gpt2_config,
    _gpt2_tokenizer,
    _labels,
    _roberta_tokenizer,
    _seed,
    _unigram_vocab,
    _unprintable_token_ids,
    _wordpiece_vocab,
)
from tests.tiny_models.text import _roberta_config
from tests.tiny_models.vision import _vit_image_processor, _vit_kwargs

VQA_LABELS: dict[int, str] = {0: "yes", 1: "no", 2: "two", 3: "cat"}


DONUT_TOKENS: tuple[str, ...] = ("<s_docvqa>", "<s_question>", "</s_question>", "<s_answer>", "</s_answer>")


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
