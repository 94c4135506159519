"""Image + text tasks of the remote backend: one ``InferenceClient`` call each.

==============================  ===================================================================
image-to-text                   ``image_to_text``, the caption
visual-question-answering       ``visual_question_answering`` on ``image`` and ``text``, the backend's ``top_k``
document-question-answering     ``document_question_answering`` on ``image`` and ``text``
==============================  ===================================================================
"""

from __future__ import annotations

from typing import Any

from tasks.experts.arguments import image_input, text_input
from tasks.experts.base import ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.outputs import format_document_question_answering, format_visual_question_answering
from tasks.experts.remote.registry import RemoteOptions, remote_task
from tasks.experts.remote.wire import flat, png


@remote_task("image-to-text")
def image_to_text(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.image_to_text(png(image_input(inputs, "image")))
    return ExpertOutput(text=str(result.generated_text or "").strip())


@remote_task("visual-question-answering")
def visual_question_answering(
    options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec
) -> ExpertOutput:
    answers = client.visual_question_answering(
        image=png(image_input(inputs, "image")), question=text_input(inputs, "text"), top_k=options.top_k
    )
    return format_visual_question_answering(flat(answers))


@remote_task("document-question-answering")
def document_question_answering(
    options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec
) -> ExpertOutput:
    answers = client.document_question_answering(
        image=png(image_input(inputs, "image")), question=text_input(inputs, "text")
    )
    return format_document_question_answering(flat(answers))
