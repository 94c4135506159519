"""A tiny, randomly initialised instruct model for the embedded controller, built offline.

Same classes as the default controller checkpoint (Qwen2.5 instruct): a ``Qwen2Config`` causal LM and a
byte-level BPE ``Qwen2Tokenizer`` with ChatML special tokens and a ChatML chat template, saved with
``save_pretrained`` so it loads through the same code as a Hub checkpoint.
"""

from __future__ import annotations

import pathlib

import torch

from tests.tiny_models import CORPUS, _byte_level_bpe

#: Qwen2.5's ChatML layout, without its tool-calling branches.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
JSON_TEXT = (
    '{"tasks": [{"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "a"}}]}',
    '{"choices": []}',
)


def build_tiny_controller(folder: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Save a tiny Qwen2 instruct model (random weights, about 0.1 MB) to ``folder`` and return it."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer

    vocab, merges = _byte_level_bpe((*CORPUS, *JSON_TEXT), SPECIAL_TOKENS, vocab_size=500)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32768,
        tie_word_embeddings=True,
        eos_token_id=im_end,
        bos_token_id=None,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end], pad_token_id=im_end)
    model.save_pretrained(folder)
    return folder
