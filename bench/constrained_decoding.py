"""What JSON-schema constrained decoding costs with llguidance (the embedded controller's) and lm-format-enforcer.

For one tokenizer: the one-time cost (the library's view of the vocabulary), the cost of compiling the plan
schema, and the cost per decoding step of computing the allowed tokens, walking the tokens of a real plan reply.
Prints one JSON document. lm-format-enforcer is measured only when installed (``pip install lm-format-enforcer``).

    python -m bench.constrained_decoding --tokenizer DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

REPLY = {
    "tasks": [
        {"id": 0, "task": "image-to-text", "dep": [-1], "args": {"image": "photo.jpg"}},
        {"id": 1, "task": "text-to-speech", "dep": [0], "args": {"text": "<GENERATED>-0"}},
    ]
}


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def llguidance_costs(tokenizer: Any, schema: dict[str, Any], tokens: list[int]) -> dict[str, Any]:
    import llguidance
    import llguidance.hf

    start = time.perf_counter()
    lltok = llguidance.hf.from_tokenizer(tokenizer)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
    matcher = llguidance.LLMatcher(lltok, grammar, log_level=0)
    compile_s = time.perf_counter() - start
    steps = []
    for token in tokens:
        start = time.perf_counter()
        mask = matcher.compute_bitmask()
        steps.append(time.perf_counter() - start)
        allowed = mask[token // 8] >> (token % 8) & 1
        if not allowed or not matcher.consume_token(token):
            raise RuntimeError(f"llguidance refused token {token}: {matcher.get_error()}")
    return {
        "vocabulary_setup_ms": _ms(setup),
        "schema_compile_ms": _ms(compile_s),
        "mask_per_step_ms_median": _ms(statistics.median(steps)),
        "mask_per_step_ms_max": _ms(max(steps)),
    }


def enforcer_costs(tokenizer: Any, schema: dict[str, Any], tokens: list[int]) -> dict[str, Any]:
    from lmformatenforcer import JsonSchemaParser, TokenEnforcer

    from bench.local_llm_server import _enforcer_tokenizer_data  # its transformers integration fails on transformers 5

    start = time.perf_counter()
    data = _enforcer_tokenizer_data(tokenizer)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    enforcer = TokenEnforcer(data, JsonSchemaParser(schema))
    compile_s = time.perf_counter() - start
    steps = []
    for i, token in enumerate(tokens):
        start = time.perf_counter()
        allowed = enforcer.get_allowed_tokens(tokens[:i])
        steps.append(time.perf_counter() - start)
        if token not in set(allowed.allowed_tokens):  # a TokenList (without its bitmask option: a list)
            raise RuntimeError(f"lm-format-enforcer refused token {token} at step {i}")
    return {
        "vocabulary_setup_ms": _ms(setup),
        "schema_compile_ms": _ms(compile_s),
        "mask_per_step_ms_median": _ms(statistics.median(steps)),
        "mask_per_step_ms_max": _ms(max(steps)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True, help="folder of a fast tokenizer")
    args = parser.parse_args()
    from transformers import AutoTokenizer

    from tasks.plan import PLAN_SCHEMA

    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    text = json.dumps(REPLY, separators=(",", ":"))
    tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
    figures: dict[str, Any] = {"vocabulary": len(tokenizer), "reply_tokens": len(tokens)}
    figures["llguidance"] = llguidance_costs(tokenizer, PLAN_SCHEMA, tokens)
    try:
        figures["lm-format-enforcer"] = enforcer_costs(tokenizer, PLAN_SCHEMA, tokens)
    except ImportError:
        figures["lm-format-enforcer"] = "not installed"
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
