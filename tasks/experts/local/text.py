"""Text tasks of the local backend: classification, tagging, generation, seq2seq, extractive QA, embeddings.

==============================  ===================================================================
text-classification             ``pipeline("text-classification")``, every label with its score
token-classification            ``pipeline("token-classification", aggregation_strategy="simple")``
text-generation                 ``pipeline("text-generation")``, prompt trimmed to the context window
conversational                  ``pipeline("text-generation")`` on one user message: the tokenizer's chat template
                                when it has one, else a plain ``User: ... / Assistant:`` prompt
summarization, translation,     ``AutoTokenizer`` + ``AutoModelForSeq2SeqLM.generate`` (transformers 5 has no
text2text-generation            pipelines for them), at most the backend's ``max_new_tokens``
question-answering              ``AutoTokenizer`` + ``AutoModelForQuestionAnswering``, best span
sentence-similarity             ``AutoTokenizer`` + ``AutoModel``, pooled as sentence-transformers does, cosine of
                                ``text``/``text2``
feature-extraction              the same embedding as a list of floats
zero-shot-classification        ``pipeline("zero-shot-classification")`` (an NLI model), ``labels`` comma-separated
==============================  ===================================================================

Translation honours ``target_language`` or refuses: T5-style multi-task models get the prefix
``"translate English to {target}: "``; Marian (``opus-mt-*``) models translate into the language their tokenizer
names (or, for multi-target models, the ``>>xx<<`` code put before the text) and refuse any other target with
:class:`~tasks.experts.base.CannotRunHereError` naming their language pair, so the next candidate is tried; other
seq2seq models, whose target cannot be chosen here, refuse any requested target the same way.

Sentence embeddings follow the model's sentence-transformers modules when it has them (``modules.json``,
``1_Pooling/config.json``): mean, CLS or max pooling, and L2 normalisation when a ``Normalize`` module is listed;
a model without them is mean-pooled.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from tasks.experts.arguments import language_code, language_pair_from_name, parse_labels, text_input
from tasks.experts.base import CannotRunHereError, ExpertInputs, ExpertOutput, ModelSpec
from tasks.experts.local.loading import (
    accepted_inputs,
    bounded_new_tokens,
    hub_kwargs,
    input_limit,
    max_positions,
    pipeline_loader,
)
from tasks.experts.local.registry import LocalOptions, local_task
from tasks.experts.outputs import (
    cosine_similarity,
    format_feature_extraction,
    format_question_answering,
    format_sentence_similarity,
    format_text_classification,
    format_token_classification,
    format_zero_shot_classification,
)

#: The prompt of a chat model whose tokenizer has no chat template.
PLAIN_CHAT_PROMPT = "User: {text}\nAssistant:"

_T5_TYPES = frozenset({"t5", "mt5", "umt5"})


@dataclass
class Seq2Seq:
    tokenizer: Any
    model: Any
    max_input_tokens: int
    max_target_positions: int | None
    #: (source, target) of a model trained on one language pair (Marian ``opus-mt-*``), when known
    language_pair: tuple[str, str] | None = None


@dataclass
class QuestionAnswering:
    tokenizer: Any
    model: Any
    max_length: int


@dataclass
class Embedder:
    tokenizer: Any
    model: Any
    max_length: int
    pooling: str
    normalize: bool


# --- loaders --------------------------------------------------------------------------------------------------------


def load_seq2seq(options: LocalOptions, model: ModelSpec) -> Seq2Seq:
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    kwargs = hub_kwargs(options, model)
    tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
    seq2seq = AutoModelForSeq2SeqLM.from_pretrained(model.source, **kwargs).to(options.device).eval()
    positions = max_positions(seq2seq.config)
    return Seq2Seq(
        tokenizer=tokenizer,
        model=seq2seq,
        max_input_tokens=input_limit(tokenizer, positions, default=512),
        max_target_positions=positions,
        language_pair=_language_pair(seq2seq.config, tokenizer, model),
    )


def _language_pair(config: Any, tokenizer: Any, model: ModelSpec) -> tuple[str, str] | None:
    """A Marian model's (source, target) languages: from its tokenizer's config, else from an ``opus-mt-SRC-TGT``
    model name."""
    if getattr(config, "model_type", "") != "marian":
        return None
    source, target = getattr(tokenizer, "source_lang", None), getattr(tokenizer, "target_lang", None)
    if source and target:
        return str(source), str(target)
    for name in (model.id, model.source):
        pair = language_pair_from_name(name)
        if pair:
            return pair
    return None


def load_question_answering(options: LocalOptions, model: ModelSpec) -> QuestionAnswering:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    kwargs = hub_kwargs(options, model)
    tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("question answering needs a fast tokenizer (for character offsets)")
    qa = AutoModelForQuestionAnswering.from_pretrained(model.source, **kwargs).to(options.device).eval()
    return QuestionAnswering(
        tokenizer=tokenizer, model=qa, max_length=input_limit(tokenizer, max_positions(qa.config), default=384)
    )


def load_embedder(options: LocalOptions, model: ModelSpec) -> Embedder:
    from transformers import AutoModel, AutoTokenizer

    kwargs = hub_kwargs(options, model)
    tokenizer = AutoTokenizer.from_pretrained(model.source, **kwargs)
    encoder = AutoModel.from_pretrained(model.source, **kwargs)
    if getattr(encoder.config, "is_encoder_decoder", False) and hasattr(encoder, "get_encoder"):
        encoder = encoder.get_encoder()
    encoder = encoder.to(options.device).eval()
    pooling, normalize = _sentence_transformers_pooling(model.source, kwargs)
    return Embedder(
        tokenizer=tokenizer,
        model=encoder,
        max_length=input_limit(tokenizer, max_positions(encoder.config), default=512),
        pooling=pooling,
        normalize=normalize,
    )


def _sentence_transformers_pooling(source: str, kwargs: dict[str, Any]) -> tuple[str, bool]:
    """The pooling mode (``mean``, ``cls`` or ``max``) and whether embeddings are normalised, read from the
    model's sentence-transformers ``modules.json`` and pooling config; ``("mean", False)`` without them."""
    from transformers.utils import cached_file

    def read(name: str) -> Any:
        path = cached_file(
            source,
            name,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
            **{k: v for k, v in kwargs.items() if k != "trust_remote_code"},
        )
        if path is None:
            return None
        with open(path, encoding="utf-8") as file:
            return json.load(file)

    modules = read("modules.json")
    if not isinstance(modules, list):
        return "mean", False
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    normalize = any(t.endswith(".Normalize") for t in types)
    pooling = "mean"
    folder = next(
        (
            str(m.get("path", ""))
            for m in modules
            if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")
        ),
        "",
    )
    config = read(f"{folder}/config.json") if folder else None
    if isinstance(config, dict):
        if config.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif config.get("pooling_mode_max_tokens"):
            pooling = "max"
    return pooling, normalize


# --- runners ----------------------------------------------------------------------------------------------------------


@local_task("text-classification", pipeline_loader("text-classification"))
def run_text_classification(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    scores = pipe(text_input(inputs, "text"), top_k=None, truncation=True)
    if scores and isinstance(scores[0], list):
        scores = scores[0]
    return format_text_classification(scores)


@local_task("token-classification", pipeline_loader("token-classification"))
def run_token_classification(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    text = text_input(inputs, "text")
    limit = int(pipe.tokenizer.model_max_length)
    kwargs: dict[str, Any] = {"aggregation_strategy": "simple"}
    if getattr(pipe.tokenizer, "is_fast", False) and len(pipe.tokenizer(text)["input_ids"]) > limit:
        kwargs["stride"] = max(1, limit // 8)
    return format_token_classification(pipe(text, **kwargs))


@local_task("text-generation", pipeline_loader("text-generation"))
def run_text_generation(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    new_tokens, budget = _token_budget(options, pipe.tokenizer)
    prompt = _keep_last_tokens(pipe.tokenizer, text_input(inputs, "text"), budget)
    result = pipe(prompt, **_generation_kwargs(pipe, new_tokens), return_full_text=False)
    return ExpertOutput(text=str(result[0]["generated_text"]) if result else "")


@local_task("conversational", pipeline_loader("text-generation"))
def run_conversational(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    message = text_input(inputs, "text")
    tokenizer = pipe.tokenizer
    new_tokens, budget = _token_budget(options, tokenizer)
    kwargs = _generation_kwargs(pipe, new_tokens)
    if getattr(tokenizer, "chat_template", None):
        empty = tokenizer.apply_chat_template(
            [{"role": "user", "content": ""}], tokenize=False, add_generation_prompt=True
        )
        overhead = len(tokenizer(str(empty), add_special_tokens=False)["input_ids"])
        message = _keep_last_tokens(tokenizer, message, max(1, budget - overhead))
        result = pipe([{"role": "user", "content": message}], **kwargs)
        turns = result[0]["generated_text"] if result else []
        reply = turns[-1].get("content", "") if turns and isinstance(turns[-1], dict) else ""
        return ExpertOutput(text=str(reply).strip(), extra={"prompt": "chat-template"})
    overhead = len(tokenizer(PLAIN_CHAT_PROMPT.format(text=""), add_special_tokens=False)["input_ids"])
    message = _keep_last_tokens(tokenizer, message, max(1, budget - overhead))
    result = pipe(PLAIN_CHAT_PROMPT.format(text=message), return_full_text=False, **kwargs)
    reply = str(result[0]["generated_text"]) if result else ""
    return ExpertOutput(text=_first_turn(reply), extra={"prompt": "plain"})


@local_task("text2text-generation", load_seq2seq)
def run_text2text_generation(options: LocalOptions, loaded: Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
    return ExpertOutput(text=_generate_seq2seq(options, loaded, text_input(inputs, "text")))


@local_task("summarization", load_seq2seq)
def run_summarization(options: LocalOptions, loaded: Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
    prefix = _task_prefix(loaded.model.config, "summarization")
    return ExpertOutput(text=_generate_seq2seq(options, loaded, prefix + text_input(inputs, "text")))


@local_task("translation", load_seq2seq)
def run_translation(options: LocalOptions, loaded: Seq2Seq, inputs: ExpertInputs) -> ExpertOutput:
    text = text_input(inputs, "text")
    target = str(inputs.get("target_language") or "").strip()
    prefix, into = _translation_prompt(loaded, target)
    output = ExpertOutput(text=_generate_seq2seq(options, loaded, prefix + text))
    if into:
        output.extra["target_language"] = into
    return output


@local_task("question-answering", load_question_answering)
def run_question_answering(options: LocalOptions, loaded: QuestionAnswering, inputs: ExpertInputs) -> ExpertOutput:
    import torch

    question = text_input(inputs, "text")
    context = text_input(inputs, "context")
    tokenizer = loaded.tokenizer
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    max_length = loaded.max_length
    if question_tokens > max_length // 2:
        raise ValueError(f"the question is too long ({question_tokens} tokens, at most {max_length // 2})")
    encoded = tokenizer(
        question,
        context,
        truncation="only_second",
        max_length=max_length,
        stride=max(1, min(128, (max_length - question_tokens) // 4)),
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_tensors="pt",
    )
    offsets = encoded.pop("offset_mapping").tolist()
    encoded.pop("overflow_to_sample_mapping", None)
    with torch.inference_mode():
        out = loaded.model(**accepted_inputs(loaded.model, encoded, options.device))
    start_logits = out.start_logits.float().cpu()
    end_logits = out.end_logits.float().cpu()

    best: tuple[float, int, int] | None = None
    max_answer_tokens = 30
    for window in range(start_logits.shape[0]):
        sequence_ids = encoded.sequence_ids(window)
        context_mask = torch.tensor([s == 1 for s in sequence_ids], dtype=torch.bool)
        if not bool(context_mask.any()):
            continue
        starts = start_logits[window].masked_fill(~context_mask, float("-inf")).softmax(-1)
        ends = end_logits[window].masked_fill(~context_mask, float("-inf")).softmax(-1)
        pair = torch.triu(starts[:, None] * ends[None, :])
        pair = pair - torch.triu(pair, diagonal=max_answer_tokens)
        flat = int(pair.argmax())
        i, j = divmod(flat, pair.shape[1])
        score = float(pair[i, j])
        if best is None or score > best[0]:
            best = (score, int(offsets[window][i][0]), int(offsets[window][j][1]))
    if best is None:
        return format_question_answering("", 0.0, 0, 0)
    score, char_start, char_end = best
    return format_question_answering(context[char_start:char_end].strip(), score, char_start, char_end)


@local_task("sentence-similarity", load_embedder)
def run_sentence_similarity(options: LocalOptions, loaded: Embedder, inputs: ExpertInputs) -> ExpertOutput:
    first = embed(options, loaded, text_input(inputs, "text"))
    second = embed(options, loaded, text_input(inputs, "text2"))
    return format_sentence_similarity(cosine_similarity(first, second))


@local_task("feature-extraction", load_embedder)
def run_feature_extraction(options: LocalOptions, loaded: Embedder, inputs: ExpertInputs) -> ExpertOutput:
    return format_feature_extraction(embed(options, loaded, text_input(inputs, "text")))


@local_task("zero-shot-classification", pipeline_loader("zero-shot-classification"))
def run_zero_shot_classification(options: LocalOptions, pipe: Any, inputs: ExpertInputs) -> ExpertOutput:
    labels = parse_labels(text_input(inputs, "labels"))
    result = pipe(text_input(inputs, "text"), candidate_labels=labels, multi_label=False)
    return format_zero_shot_classification(
        [{"label": label, "score": score} for label, score in zip(result["labels"], result["scores"], strict=True)]
    )


# --- helpers ----------------------------------------------------------------------------------------------------------


def embed(options: LocalOptions, loaded: Embedder, text: str) -> np.ndarray:
    """One text's sentence embedding, pooled (and normalised) as the model's sentence-transformers config says."""
    import torch

    encoded = loaded.tokenizer(text, truncation=True, max_length=loaded.max_length, return_tensors="pt")
    with torch.inference_mode():
        out = loaded.model(**accepted_inputs(loaded.model, encoded, options.device))
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    mask = encoded.get("attention_mask")
    weights = (
        mask.to(hidden.device).unsqueeze(-1).to(hidden.dtype)
        if mask is not None
        else torch.ones((*hidden.shape[:2], 1), dtype=hidden.dtype, device=hidden.device)
    )
    if loaded.pooling == "cls":
        pooled = hidden[:, 0]
    elif loaded.pooling == "max":
        pooled = hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
    else:
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
    if loaded.normalize:
        pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
    return pooled[0].float().cpu().numpy()


def _token_budget(options: LocalOptions, tokenizer: Any) -> tuple[int, int]:
    """How many tokens to generate (at most half the context) and how many the prompt may keep."""
    limit = int(tokenizer.model_max_length)
    new_tokens = max(1, min(options.max_new_tokens, limit // 2))
    return new_tokens, max(1, limit - new_tokens - 2)


def _generation_kwargs(pipe: Any, new_tokens: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"max_new_tokens": new_tokens}
    if pipe.model.generation_config.pad_token_id is None and pipe.tokenizer.eos_token_id is not None:
        kwargs["pad_token_id"] = pipe.tokenizer.eos_token_id
    return kwargs


def _generate_seq2seq(options: LocalOptions, loaded: Seq2Seq, text: str) -> str:
    import torch

    encoded = loaded.tokenizer(text, truncation=True, max_length=loaded.max_input_tokens, return_tensors="pt")
    encoded = {k: v.to(options.device) for k, v in encoded.items()}
    new_tokens = bounded_new_tokens(options.max_new_tokens, loaded.max_target_positions)
    with torch.inference_mode():
        generated = loaded.model.generate(**encoded, max_new_tokens=new_tokens)
    return str(loaded.tokenizer.decode(generated[0], skip_special_tokens=True)).strip()


def _keep_last_tokens(tokenizer: Any, text: str, keep: int) -> str:
    """``text`` cut to its last ``keep`` tokens when it is longer."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= keep:
        return text
    return str(tokenizer.decode(ids[-keep:], skip_special_tokens=True))


def _first_turn(reply: str) -> str:
    """A plain-prompt reply up to where the model starts writing the next turn itself."""
    return re.split(r"\n\s*(?:User|Assistant)\s*:", reply, maxsplit=1)[0].strip()


def _task_prefix(config: Any, task: str) -> str:
    params = getattr(config, "task_specific_params", None) or {}
    prefix = (params.get(task) or {}).get("prefix")
    return str(prefix) if prefix else ""


def _translation_prompt(loaded: Seq2Seq, target: str) -> tuple[str, str]:
    """The input prefix that makes the model translate into ``target``, and the target it will translate into
    (empty when unknown); raises :class:`CannotRunHereError` when the model cannot translate into ``target``."""
    config = loaded.model.config
    model_type = str(getattr(config, "model_type", ""))
    params = getattr(config, "task_specific_params", None) or {}
    translation = {k: v for k, v in params.items() if k.startswith("translation") and isinstance(v, dict)}
    if model_type == "marian":
        return _marian_prompt(loaded.tokenizer, loaded.language_pair, target)
    if model_type in _T5_TYPES or translation:
        if not target:
            key, first = next(iter(translation.items()), ("", {}))
            return str(first.get("prefix") or ""), key.rsplit("_to_", 1)[1] if "_to_" in key else ""
        for value in translation.values():
            prefix = str(value.get("prefix") or "")
            if prefix and target.lower() in prefix.lower():
                return prefix, target
        if model_type in _T5_TYPES:
            return f"translate English to {target}: ", target
        raise CannotRunHereError(
            f"it translates only as its task prefixes say ({', '.join(sorted(translation))}), not into {target!r}"
        )
    if target:
        raise CannotRunHereError(
            f"the local backend cannot choose the target language of a {model_type or 'seq2seq'} model, "
            f"so it cannot promise a translation into {target!r}"
        )
    return "", ""


def _marian_prompt(tokenizer: Any, pair: tuple[str, str] | None, target: str) -> tuple[str, str]:
    """A Marian model's prompt: a ``>>xx<<`` code for multi-target models; its own target language otherwise."""
    source, own = pair if pair else ("?", "")
    codes = [str(c) for c in getattr(tokenizer, "supported_language_codes", None) or []]
    wanted = language_code(target) if target else ""
    if codes:
        if not wanted:
            raise CannotRunHereError(
                f"it translates {source} into several languages ({', '.join(codes)}); name the target language"
            )
        code = f">>{wanted}<<"
        if code not in codes:
            raise CannotRunHereError(f"it translates {source} into {', '.join(codes)}, not into {target!r}")
        return f"{code} ", wanted
    if wanted and (not own or language_code(own) != wanted):
        raise CannotRunHereError(
            f"it translates {source}-{own or '?'} ({source} into {own or 'an unrecorded language'}), "
            f"not into {target!r}"
        )
    return "", own
