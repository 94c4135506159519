"""Tiny text models: classifiers, extractive QA, generators, seq2seq, encoders, and the real text checkpoints'
families."""

from __future__ import annotations

import json
import pathlib
from typing import Any

from tests.tiny_models.common import (
    CHAT_TEMPLATE,
    CORPUS,
    _bert_kwargs,
    _bert_tokenizer,
    _byte_level_bpe,
    _gpt2_config,
    _gpt2_tokenizer,
    _labels,
    _roberta_tokenizer,
    _sentencepiece_model,
    _unigram_vocab,
    _unprintable_token_ids,
    _wordpiece_vocab,
)

SENTIMENT_LABELS: dict[int, str] = {0: "NEGATIVE", 1: "POSITIVE"}


NER_LABELS: dict[int, str] = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC", 5: "B-ORG", 6: "I-ORG"}


NLI_LABELS: dict[int, str] = {0: "contradiction", 1: "neutral", 2: "entailment"}


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


#: The chat template of Qwen2.5 / SmolLM2 instruct models (ChatML), reduced to what one user turn needs.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


CHATML_TOKENS: tuple[str, ...] = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


#: Decoders of the seq2seq builders never stop before this many tokens (as bart-large-cnn's min_length of 56), so a
#: test can count that generation ran exactly the asked ``max_new_tokens``.
MIN_GENERATED = 60


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
