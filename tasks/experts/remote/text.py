"""Text tasks of the remote backend: one ``InferenceClient`` call each.

==============================  ===================================================================
text-classification             ``text_classification``, the backend's ``top_k`` labels
token-classification            ``token_classification``, entities grouped (``aggregation_strategy="simple"``)
text2text-generation            ``text_generation``, at most the backend's ``max_new_tokens``
text-generation                 ``text_generation``, the continuation only
conversational                  ``chat_completion`` on one user message
summarization                   ``summarization``
translation                     ``translation``; ``target_language`` sent with its source for a model named after
                                one language pair (another target is refused before sending)
question-answering              ``question_answering`` on ``text`` and ``context``, best span
sentence-similarity             ``sentence_similarity`` of ``text`` and ``text2``
zero-shot-classification        ``zero_shot_classification``, ``labels`` comma-separated
feature-extraction              ``feature_extraction``
tabular-classification          ``tabular_classification``, the table (CSV bytes) as ``{column: [values]}``
==============================  ===================================================================
"""

from __future__ import annotations

from typing import Any

from tasks.experts.arguments import language_code, language_pair_from_name, parse_csv_table, parse_labels, text_input
from tasks.experts.base import ExpertError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.outputs import (
    format_feature_extraction,
    format_question_answering,
    format_sentence_similarity,
    format_tabular_classification,
    format_text_classification,
    format_token_classification,
    format_zero_shot_classification,
)
from tasks.experts.remote.registry import RemoteOptions, remote_task
from tasks.experts.remote.wire import flat


@remote_task("text-classification")
def text_classification(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.text_classification(text_input(inputs, "text"), top_k=options.top_k)
    return format_text_classification(flat(result))


@remote_task("token-classification")
def token_classification(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.token_classification(text_input(inputs, "text"), aggregation_strategy="simple")
    return format_token_classification(flat(result))


@remote_task("text2text-generation")
def text2text_generation(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    text = client.text_generation(text_input(inputs, "text"), max_new_tokens=options.max_new_tokens)
    return ExpertOutput(text=str(text).strip())


@remote_task("summarization")
def summarization(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.summarization(text_input(inputs, "text"))
    return ExpertOutput(text=str(result.summary_text or "").strip())


def other_language_pair(inputs: ExpertInputs, model: ModelSpec) -> str | None:
    """Why ``model`` cannot translate into the requested ``target_language`` (a model named after one language pair
    asked for another target), or ``None``: a node never reports success for work the model did not do."""
    target = str(inputs.get("target_language") or "").strip()
    if not target:
        return None
    pair = language_pair_from_name(model.id)
    if pair and language_code(pair[1]) != language_code(target):
        return f"it translates {pair[0]} to {pair[1]} only, not into {target}"
    return None


@remote_task("translation", refuse=other_language_pair)
def translation(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    target = str(inputs.get("target_language") or "").strip()
    pair = language_pair_from_name(model.id)
    # the API takes a target language only with its source: known for a model of one language pair
    languages = {"src_lang": pair[0], "tgt_lang": language_code(target)} if target and pair else {}
    result = client.translation(text_input(inputs, "text"), **languages)
    output = ExpertOutput(text=str(result.translation_text or "").strip())
    if target:
        output.extra["target_language"] = target
    return output


@remote_task("question-answering")
def question_answering(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.question_answering(question=text_input(inputs, "text"), context=text_input(inputs, "context"))
    if isinstance(result, list):
        result = max(result, key=lambda r: r.score or 0.0) if result else None
    if result is None:
        return format_question_answering("", 0.0, 0, 0)
    return format_question_answering(
        str(result.answer or "").strip(), float(result.score or 0.0), int(result.start or 0), int(result.end or 0)
    )


@remote_task("conversational")
def conversational(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    result = client.chat_completion(
        messages=[{"role": "user", "content": text_input(inputs, "text")}], max_tokens=options.max_new_tokens
    )
    choices = result.choices or []
    content = choices[0].message.content if choices and choices[0].message else ""
    return ExpertOutput(text=str(content or "").strip())


@remote_task("text-generation")
def text_generation(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    text = client.text_generation(
        text_input(inputs, "text"), max_new_tokens=options.max_new_tokens, return_full_text=False
    )
    return ExpertOutput(text=str(text))


@remote_task("sentence-similarity")
def sentence_similarity(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    scores = client.sentence_similarity(text_input(inputs, "text"), [text_input(inputs, "text2")])
    if not scores:
        raise ExpertError("the server returned no similarity score")
    return format_sentence_similarity(float(scores[0]))


@remote_task("zero-shot-classification")
def zero_shot_classification(
    options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec
) -> ExpertOutput:
    labels = parse_labels(text_input(inputs, "labels"))
    result = client.zero_shot_classification(text_input(inputs, "text"), candidate_labels=labels)
    return format_zero_shot_classification(flat(result))


@remote_task("feature-extraction")
def feature_extraction(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    return format_feature_extraction(client.feature_extraction(text_input(inputs, "text")))


@remote_task("tabular-classification")
def tabular_classification(options: RemoteOptions, client: Any, inputs: ExpertInputs, model: ModelSpec) -> ExpertOutput:
    value = inputs.get("table")
    if value is None:
        raise ExpertError(f"missing input 'table' (given: {', '.join(sorted(inputs)) or 'none'})")
    table = value if isinstance(value, dict) else parse_csv_table(value)
    labels = client.tabular_classification(table=table)
    return format_tabular_classification(labels)
