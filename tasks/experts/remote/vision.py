"""Image and video tasks of the remote backend: one ``InferenceClient`` call each.

==============================  ===================================================================
object-detection                ``object_detection`` at the backend's ``detection_threshold``, boxes drawn on a copy
image-classification            ``image_classification``, the backend's ``top_k`` labels
image-segmentation              ``image_segmentation``, masks drawn on a copy of the image
image-to-image                  ``image_to_image``, with ``text`` as the prompt when given
text-to-image                   ``text_to_image``
text-to-video                   ``text_to_video``, MP4 bytes; through Inference Providers only (see below)
==============================  ===================================================================

text-to-video through an endpoint URL is refused before sending: ``InferenceClient`` sends requests to a URL as HF
Inference requests, and HF Inference has no text-to-video.
"""

from __future__ import annotations

from typing import Any

from tasks.experts.arguments import image_input, text_input
from tasks.experts.base import ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.outputs import format_image_classification, format_image_segmentation, format_object_detection
from tasks.experts.remote.registry import RemoteOptions, remote_task
from tasks.experts.remote.wire import is_mp4, png, rgb


@remote_task("object-detection")
def object_detection(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    image = image_input(inputs, "image")
    found = client.object_detection(png(image), threshold=options.detection_threshold)
    return format_object_detection(image, found)


@remote_task("image-classification")
def image_classification(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    return format_image_classification(
        client.image_classification(png(image_input(inputs, "image")), top_k=options.top_k)
    )


@remote_task("image-segmentation")
def image_segmentation(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    image = image_input(inputs, "image")
    return format_image_segmentation(image, client.image_segmentation(png(image)))


@remote_task("image-to-image")
def image_to_image(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    prompt = str(inputs.get("text") or "").strip() or None
    result = client.image_to_image(png(image_input(inputs, "image")), prompt=prompt)
    return ExpertOutput(image=rgb(result))


@remote_task("text-to-image")
def text_to_image(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    return ExpertOutput(image=rgb(client.text_to_image(text_input(inputs, "text"))))


@remote_task(
    "text-to-video",
    not_by_endpoints=(
        "InferenceClient sends requests to an endpoint URL as HF Inference requests, and HF Inference has no "
        "text-to-video; give the model id with an Inference Provider that serves it (fal-ai, novita, replicate, "
        "together, ...) instead"
    ),
)
def text_to_video(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    video = bytes(client.text_to_video(text_input(inputs, "text")) or b"")
    if not video:
        raise ExpertError("the server returned an empty video")
    if not is_mp4(video):
        raise ExpertError(f"the server returned {len(video)} bytes that are not an MP4 video: {video[:16]!r}...")
    return ExpertOutput(video=video)
