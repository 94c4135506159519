"""Vision tasks of the local backend.

==============================  ===================================================================
image-classification            ``pipeline("image-classification")`` (ViT, ResNet, ...)
object-detection                ``pipeline("object-detection")`` (YOLOS, DETR without timm), boxes drawn on a copy
image-segmentation              ``pipeline("image-segmentation")`` (SegFormer), masks drawn in colour on a copy
depth-estimation                ``pipeline("depth-estimation")`` (Depth Anything, DPT, GLPN), the depth map as a grey
                                image
image-to-image                  ``AutoImageProcessor`` + ``AutoModelForImageToImage`` (Swin2SR super-resolution)
==============================  ===================================================================

Image-to-image: transformers' only image-to-image family is super-resolution, which takes no instruction. A request
is served locally only when it has no ``text`` or its text asks for what the model does (upscaling, a sharper or
higher-resolution image); any other instruction ("make it look like winter") is refused before the model is loaded,
with :class:`~tasks.experts.base.CannotRunHereError`, so the fallback tries the next candidate (a remote
image-editing model) instead of reporting an upscaled image as the edit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from tasks.experts.arguments import image_input
from tasks.experts.base import ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.local.loading import hub_kwargs, pipeline_loader, to_device
from tasks.experts.local.registry import LocalOptions, local_task
from tasks.experts.outputs import (
    format_depth_estimation,
    format_image_classification,
    format_image_segmentation,
    format_object_detection,
)

#: Words of an instruction that super-resolution honours (any other word of substance is an edit it cannot make).
UPSCALE_WORDS: frozenset[str] = frozenset(
    {
        "upscale",
        "upscaled",
        "upscaling",
        "upsample",
        "upsampled",
        "upsampling",
        "enlarge",
        "enlarged",
        "magnify",
        "superresolution",
        "super",
        "resolution",
        "res",
        "hires",
        "higher",
        "high",
        "increase",
        "sharpen",
        "sharper",
        "sharpened",
        "enhance",
        "enhanced",
        "bigger",
        "larger",
        "scale",
        "x2",
        "2x",
        "x4",
        "4x",
        "double",
        "detail",
        "details",
        "detailed",
        "quality",
        "clearer",
        "crisper",
    }
)

#: Words that carry no instruction of their own ("please make the image ...").
_FILLER_WORDS: frozenset[str] = frozenset(
    {
        "a",
        "an",
        "the",
        "it",
        "its",
        "this",
        "that",
        "image",
        "picture",
        "photo",
        "please",
        "make",
        "to",
        "of",
        "in",
        "and",
        "with",
        "by",
        "more",
        "version",
        "times",
        "factor",
        "size",
        "into",
        "give",
        "me",
        "get",
    }
)


@dataclass
class ImageToImage:
    processor: Any
    model: Any


def load_image_to_image(options: LocalOptions, model: ModelSpec) -> ImageToImage:
    from transformers import AutoImageProcessor, AutoModelForImageToImage

    kwargs = hub_kwargs(options, model)
    processor = AutoImageProcessor.from_pretrained(model.source, **kwargs)
    transformer = AutoModelForImageToImage.from_pretrained(model.source, **kwargs).to(options.device).eval()
    return ImageToImage(processor=processor, model=transformer)


def refuse_image_edit(inputs: ExpertInputs) -> str | None:
    """Why a super-resolution model cannot honour this request's ``text`` (``None`` when it can)."""
    text = inputs.get("text")
    if text is None:
        return None
    instruction = text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)
    words = re.findall(r"[a-z0-9]+", instruction.lower().replace("super-resolution", "superresolution"))
    other = [w for w in words if w not in UPSCALE_WORDS and w not in _FILLER_WORDS]
    if not other:
        return None
    return (
        f"local image-to-image models only upscale (super-resolution); they cannot follow the instruction "
        f"{instruction[:120]!r}, which an image-editing model (remote) can"
    )


@local_task("image-classification", pipeline_loader("image-classification"))
def run_image_classification(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    return format_image_classification(pipe(image_input(inputs, "image"), top_k=options.top_k))


@local_task("object-detection", pipeline_loader("object-detection"))
def run_object_detection(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    image = image_input(inputs, "image")
    return format_object_detection(image, pipe(image, threshold=options.detection_threshold))


@local_task("image-segmentation", pipeline_loader("image-segmentation"))
def run_image_segmentation(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    image = image_input(inputs, "image")
    return format_image_segmentation(image, pipe(image))


@local_task("depth-estimation", pipeline_loader("depth-estimation"))
def run_depth_estimation(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    image = image_input(inputs, "image")
    predicted = pipe(image)["predicted_depth"]
    depth = predicted.detach().float().cpu().numpy() if hasattr(predicted, "detach") else np.asarray(predicted)
    return format_depth_estimation(depth, size=image.size)


@local_task("image-to-image", load_image_to_image, refuse=refuse_image_edit)
def run_image_to_image(options: LocalOptions, loaded: ImageToImage, inputs: ExpertInputs) -> ExpertOutput:
    import torch

    image = image_input(inputs, "image")
    encoded = loaded.processor(images=image, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model(**to_device(encoded, options.device))
    pixels = out.reconstruction[0].float().clamp(0, 1).cpu()
    scale = int(getattr(loaded.model.config, "upscale", 1) or 1)
    width, height = image.size
    pixels = pixels[:, : height * scale, : width * scale]
    array = (pixels.permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
    return ExpertOutput(image=Image.fromarray(array, "RGB"), extra={"scale": scale})
