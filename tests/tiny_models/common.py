"""The pieces every tiny model shares: the training corpus, tokenizers trained in-process, seeds and small configs."""

from __future__ import annotations

import json
import pathlib
import string
from collections.abc import Iterable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

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


#: A minimal chat template (role: content lines, then the assistant's turn).
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


_CHARACTERS = [*string.ascii_lowercase, "'"]


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


def _labels(id2label: dict[int, str]) -> dict[str, Any]:
    return {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}


ROBERTA_SPECIALS: list[str] = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


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


def _unprintable_token_ids(tokenizer: Any) -> list[int]:
    """Byte-level tokens that decode to no whole character: a random model would emit them as mojibake."""
    return [
        i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i]) or not tokenizer.decode([i]).isprintable()
    ]
