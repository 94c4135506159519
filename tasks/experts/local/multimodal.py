"""Tasks of the local backend that read an image and write or take text.

==============================  ===================================================================
image-to-text                   ``AutoModelForImageTextToText.generate`` (ViT-GPT2 vision-encoder-decoder, BLIP)
visual-question-answering       ``AutoProcessor`` + ``AutoModelForVisualQuestionAnswering``: ViLT's answer
                                classifier, or ``generate`` for BLIP-style models
document-question-answering     Donut (``VisionEncoderDecoderModel`` with a ``donut-swin`` encoder) prompted with
                                ``<s_docvqa><s_question>...``; LayoutLM-family models through
                                ``pipeline("document-question-answering")``, which reads the page's words with
                                Tesseract OCR (``pytesseract`` and the ``tesseract`` program)
==============================  ===================================================================

transformers 5 has no visual-question-answering pipeline and maps image-to-text to image-text-to-text, so those
run through the model classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from tasks.experts.arguments import image_input, text_input
from tasks.experts.base import ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.local.loading import (
    bounded_new_tokens,
    hub_kwargs,
    input_limit,
    load_pipeline,
    max_positions,
    to_device,
)
from tasks.experts.local.registry import LocalOptions, local_task
from tasks.experts.outputs import format_document_question_answering, format_visual_question_answering


@dataclass
class ImageToText:
    processor: Any
    tokenizer: Any
    model: Any
    max_target_positions: int | None


@dataclass
class VisualQuestionAnswering:
    processor: Any
    model: Any
    classifier: bool
    max_text_tokens: int


@dataclass
class Donut:
    image_processor: Any
    tokenizer: Any
    model: Any
    max_target_positions: int | None


def load_image_to_text(options: LocalOptions, model: ModelSpec) -> ImageToText:
    from transformers import (
        AutoConfig,
        AutoImageProcessor,
        AutoModelForImageTextToText,
        AutoProcessor,
        AutoTokenizer,
    )

    kwargs = hub_kwargs(options, model)
    config = AutoConfig.from_pretrained(model.source, **kwargs)
    if config.model_type == "vision-encoder-decoder":
        processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
        target_positions = max_positions(config.decoder)
    else:
        processor = AutoProcessor.from_pretrained(model.source, **kwargs)
        tokenizer = getattr(processor, "tokenizer", processor)
        text_config = getattr(config, "text_config", None)
        target_positions = max_positions(text_config) if text_config is not None else None
    captioner = AutoModelForImageTextToText.from_pretrained(model.source, **kwargs).to(options.device).eval()
    return ImageToText(processor=processor, tokenizer=tokenizer, model=captioner, max_target_positions=target_positions)


def load_visual_question_answering(options: LocalOptions, model: ModelSpec) -> VisualQuestionAnswering:
    from transformers import AutoConfig, AutoModelForVisualQuestionAnswering, AutoProcessor

    kwargs = hub_kwargs(options, model)
    config = AutoConfig.from_pretrained(model.source, **kwargs)
    processor = AutoProcessor.from_pretrained(model.source, **kwargs)
    vqa = AutoModelForVisualQuestionAnswering.from_pretrained(model.source, **kwargs).to(options.device).eval()
    text_config = getattr(config, "text_config", None) or config
    tokenizer = getattr(processor, "tokenizer", None)
    return VisualQuestionAnswering(
        processor=processor,
        model=vqa,
        classifier=config.model_type == "vilt",
        max_text_tokens=input_limit(tokenizer, max_positions(text_config), default=512),
    )


def load_document_question_answering(options: LocalOptions, model: ModelSpec) -> Donut | Any:
    from transformers import AutoConfig

    kwargs = hub_kwargs(options, model)
    config = AutoConfig.from_pretrained(model.source, **kwargs)
    if config.model_type != "vision-encoder-decoder":
        # LayoutLM and friends: the pipeline reads the page's words with Tesseract OCR (pytesseract)
        return load_pipeline(options, "document-question-answering", model)
    if getattr(config.encoder, "model_type", None) != "donut-swin":
        raise ValueError(
            f"a vision-encoder-decoder model answers document questions only with a Donut (donut-swin) "
            f"encoder, this one has {getattr(config.encoder, 'model_type', None)!r}"
        )
    from transformers import AutoImageProcessor, AutoTokenizer, VisionEncoderDecoderModel

    image_processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
    donut = VisionEncoderDecoderModel.from_pretrained(model.source, **kwargs).to(options.device).eval()
    return Donut(
        image_processor=image_processor,
        tokenizer=tokenizer,
        model=donut,
        max_target_positions=max_positions(config.decoder),
    )


@local_task("image-to-text", load_image_to_text)
def run_image_to_text(options: LocalOptions, loaded: ImageToText, inputs: ExpertInputs) -> ExpertOutput:
    import torch

    image = image_input(inputs, "image")
    model_inputs = to_device(loaded.processor(images=image, return_tensors="pt"), options.device)
    new_tokens = bounded_new_tokens(options.max_new_tokens, loaded.max_target_positions)
    with torch.inference_mode():
        generated = loaded.model.generate(**model_inputs, max_new_tokens=new_tokens)
    if "input_ids" in model_inputs and not loaded.model.config.is_encoder_decoder:
        generated = generated[:, model_inputs["input_ids"].shape[1] :]
    caption = str(loaded.tokenizer.decode(generated[0], skip_special_tokens=True)).strip()
    return ExpertOutput(text=caption)


@local_task("visual-question-answering", load_visual_question_answering)
def run_visual_question_answering(
    options: LocalOptions, loaded: VisualQuestionAnswering, inputs: ExpertInputs
) -> ExpertOutput:
    import torch

    image = image_input(inputs, "image")
    question = text_input(inputs, "text")
    encoded = loaded.processor(
        images=image, text=question, truncation=True, max_length=loaded.max_text_tokens, return_tensors="pt"
    )
    model_inputs = to_device(encoded, options.device)
    with torch.inference_mode():
        if loaded.classifier:
            logits = loaded.model(**model_inputs).logits[0].float().cpu()
            # ViLT's answer head is trained with a sigmoid per answer
            scores = torch.sigmoid(logits)
            top = torch.topk(scores, k=min(options.top_k, scores.shape[0]))
            id2label = loaded.model.config.id2label
            answers = [
                {"answer": str(id2label[int(i)]), "score": float(s)}
                for s, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
            ]
            return format_visual_question_answering(answers)
        positions = max_positions(getattr(loaded.model.config, "text_config", None) or loaded.model.config)
        generated = loaded.model.generate(
            **model_inputs, max_new_tokens=bounded_new_tokens(options.max_new_tokens, positions)
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


@local_task("document-question-answering", load_document_question_answering)
def run_document_question_answering(options: LocalOptions, loaded: Donut | Any, inputs: ExpertInputs) -> ExpertOutput:
    image = image_input(inputs, "image")
    question = text_input(inputs, "text")
    if not isinstance(loaded, Donut):
        answers = loaded(image=image, question=question, top_k=1)
        if isinstance(answers, dict):
            answers = [answers]
        return format_document_question_answering(answers)
    return format_document_question_answering([_donut_answer(options, loaded, image, question)])


def _donut_answer(options: LocalOptions, loaded: Donut, image: Image.Image, question: str) -> dict[str, Any]:
    import torch

    tokenizer = loaded.tokenizer
    pixel_values = loaded.image_processor(images=image, return_tensors="pt")["pixel_values"].to(options.device)
    prompt = f"<s_docvqa><s_question>{question}</s_question><s_answer>"
    prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(options.device)
    positions = loaded.max_target_positions
    new_tokens = options.max_new_tokens
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


def _donut_answer_text(sequence: str) -> str:
    """The answer in a Donut output (``<s_docvqa><s_question>...</s_question><s_answer>ANSWER</s_answer>``)."""
    after = sequence.split("<s_answer>", 1)[1] if "<s_answer>" in sequence else ""
    answer = after.split("</s_answer>", 1)[0]
    return re.sub(r"<[^>]+>", "", answer).strip()
