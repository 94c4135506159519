"""The embedded controller: a small instruct model run in process with transformers, when no LLM is configured.

It answers the same :class:`~tasks.llm.ChatModel` calls as an OpenAI-compatible server. A planning reply is
decoded to the request's whole plan contract (:mod:`tasks.constraints`: the schema carries it), one llguidance
grammar per piece of the plan (:class:`ContractLogitsProcessor`), so every plan passes the validator as it is and
closes within ``HUGGINGGPT_LOCAL_LLM_MAX_NEW_TOKENS``. Any other reply asked for with a JSON schema (selection:
each task's candidates) is constrained to it: llguidance computes, at every step, the tokens that keep the text a
prefix of some JSON value matching the schema, and every other token's logit is set to minus infinity. Arrays,
integers and free keys are bounded (:func:`bounded_schema`) and free strings sized so that the reply closes within
the token limit (:func:`tasks.constraints.fit_strings`). Decoding is greedy, in float32 on a CPU.

The model loads once per process, into the :class:`~tasks.experts.cache.ModelCache` of the process-wide local
experts backend (:func:`tasks.services.local_backend_for`), so it counts against the same ``HUGGINGGPT_MAX_MODELS``
budget as the models the plan runs.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.streamers import BaseStreamer

from tasks.chat_template import render_chat_prompt
from tasks.constraints import PlanSteps, contract_of, fit_strings
from tasks.experts.cache import CacheEntry, ModelCache, default_cache
from tasks.llm import LLMError, LLMUnavailableError, Message, TextCallback
from tasks.schemas import LLMUsage
from tasks.settings import DEFAULT_LLM_MODEL, Settings

logger = logging.getLogger(__name__)

#: What a controller checkpoint needs from its repository (no other formats, no README or images).
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "tokenizer*"]

SWITCH_HINT = (
    "for a stronger one set OPENAI_API_KEY (OpenAI), or OPENAI_BASE_URL (Ollama, vLLM, llama.cpp server) with "
    f"HUGGINGGPT_LLM_MODEL (default {DEFAULT_LLM_MODEL}); HUGGINGGPT_LOCAL_LLM picks another local model"
)


class LocalLLMUnavailableError(LLMUnavailableError):
    """The embedded controller's weights are not on this machine and cannot be downloaded (or do not load)."""


def _what_to_set(source: str, cause: str) -> str:
    return (
        f"No LLM is configured, and the embedded controller {source} cannot be loaded ({cause}). "
        "Set OPENAI_API_KEY to use OpenAI, or OPENAI_BASE_URL to use an OpenAI-compatible server "
        "(e.g. http://localhost:11434/v1 for Ollama) with HUGGINGGPT_LLM_MODEL, or HUGGINGGPT_LOCAL_LLM to a "
        "folder holding an instruct model with a chat template."
    )


def fetch_local_llm(source: str) -> Path:
    """The folder of the controller ``source``: a local folder as it is, else the Hub repository's snapshot,
    downloaded now when it is not in the Hugging Face cache (with huggingface_hub's progress bars on stderr).
    Raises :class:`LocalLLMUnavailableError` saying what to set when neither works."""
    folder = Path(source).expanduser()
    if folder.is_dir():
        return folder
    if source.startswith((".", "/", "~")):
        raise LocalLLMUnavailableError(_what_to_set(source, "no such folder"))
    import httpx
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        return Path(snapshot_download(source, allow_patterns=WEIGHT_PATTERNS))
    except (OSError, ValueError, HfHubHTTPError, httpx.HTTPError) as exc:
        cause = (
            "its weights are not on this machine and the Hugging Face Hub cannot be reached"
            if _offline(exc)
            else f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else 'no detail'}"
        )
        raise LocalLLMUnavailableError(_what_to_set(source, cause)) from None


def _offline(exc: BaseException) -> bool:
    import httpx
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    return isinstance(exc, LocalEntryNotFoundError | OfflineModeIsEnabled | httpx.ConnectError | httpx.TimeoutException)


def describe_local(settings: Settings) -> str:
    """The line the CLI prints once: which model answers, where, and how to switch."""
    return (
        f"controller: {settings.local_llm}, embedded (transformers on {settings.resolved_device()}, no LLM "
        f"configured); {SWITCH_HINT}"
    )


# ---------------------------------------------------------------------------
# the schema as a bounded grammar
# ---------------------------------------------------------------------------
def bounded_schema(schema: dict[str, Any], *, max_items: int, max_length: int, max_int: int) -> dict[str, Any]:
    """``schema`` with a bound on every array (``maxItems``), string (``maxLength``), object with free keys
    (``maxProperties``) and integer (``minimum``/``maximum``) that has none, and no keys beyond an object's
    ``properties`` unless it says so, so every reply closes."""
    out = dict(schema)
    kind = out.get("type")
    if kind == "array":
        out.setdefault("maxItems", max_items)
        if isinstance(out.get("items"), dict):
            out["items"] = bounded_schema(out["items"], max_items=max_items, max_length=max_length, max_int=max_int)
    elif kind == "string":
        out.setdefault("maxLength", max_length)
    elif kind == "integer":
        out.setdefault("minimum", -1)
        out.setdefault("maximum", max_int)
    elif kind == "object":
        if isinstance(out.get("properties"), dict):
            out["properties"] = {
                k: bounded_schema(v, max_items=max_items, max_length=max_length, max_int=max_int)
                for k, v in out["properties"].items()
            }
        extra = out.setdefault("additionalProperties", False)
        if isinstance(extra, dict):  # free keys: names, as long as a string may be (llguidance has no propertyNames)
            bounded = bounded_schema(extra, max_items=max_items, max_length=max_length, max_int=max_int)
            out["patternProperties"] = {key_pattern(max_length): bounded}
            out["additionalProperties"] = False
            out.setdefault("maxProperties", max_items)
    return out


def key_pattern(max_length: int) -> str:
    """What a free key of an object in a constrained reply looks like: a name of at most ``max_length``
    characters."""
    return f"^[A-Za-z_][A-Za-z0-9_-]{{0,{max(max_length - 1, 0)}}}$"


class SchemaLogitsProcessor(LogitsProcessor):
    """Masks every token that would take the reply out of the grammar of ``matcher`` (llguidance)."""

    def __init__(self, matcher: Any, prompt_length: int) -> None:
        self.matcher = matcher
        self.prompt_length = prompt_length
        self.consumed = 0
        self._bits = torch.arange(8, dtype=torch.uint8)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[0, self.prompt_length :].tolist()
        for token in generated[self.consumed :]:
            self.matcher.consume_token(token)
        self.consumed = len(generated)
        if self.matcher.is_error():
            return scores
        packed = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.uint8)
        allowed = ((packed[:, None] >> self._bits) & 1).flatten().bool()
        vocab = scores.shape[-1]
        if allowed.numel() < vocab:
            allowed = torch.cat([allowed, torch.zeros(vocab - allowed.numel(), dtype=torch.bool)])
        return scores.masked_fill(~allowed[:vocab].to(scores.device), float("-inf"))


class _TextCallbackStreamer(BaseStreamer):
    """Hands each new piece of the reply to a callback as tokens are generated: after every token, the text
    decoded so far beyond what was handed out (held back while it ends inside a character). transformers'
    ``TextStreamer`` waits for a space, which a compact JSON reply never has."""

    def __init__(self, tokenizer: Any, on_text: TextCallback) -> None:
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.tokens: list[int] = []
        self.sent = 0
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() hands the prompt first
            self.prompt_seen = True
            return
        self.tokens.extend(int(t) for t in value.flatten().tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):
            return
        if len(text) > self.sent:
            piece, self.sent = text[self.sent :], len(text)
            self.on_text(piece)


class ContractLogitsProcessor(LogitsProcessor):
    """Masks every token that would take a plan out of its contract: one llguidance grammar per piece of the plan
    (:class:`tasks.constraints.PlanSteps`), the next one built when a piece is complete, for the tokens left."""

    def __init__(self, steps: PlanSteps, grammar_tokenizer: Any, prompt_length: int, max_new_tokens: int) -> None:
        self.steps = steps
        self.tokenizer = grammar_tokenizer
        self.prompt_length = prompt_length
        self.max_new_tokens = max_new_tokens
        self.consumed = 0
        self.piece = bytearray()
        self.matcher = self._matcher(max_new_tokens)
        self._bits = torch.arange(8, dtype=torch.uint8)

    def _matcher(self, budget: int) -> Any:
        import llguidance

        grammar = self.steps.grammar(budget)
        matcher = llguidance.LLMatcher(self.tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        if matcher.is_error():
            raise ValueError(f"the plan grammar does not compile: {matcher.get_error()}")
        return matcher

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        generated = input_ids[0, self.prompt_length :].tolist()
        for position in range(self.consumed, len(generated)):
            token = generated[position]
            self.matcher.consume_token(token)
            self.piece += self.tokenizer.decode_bytes([token])
            if self.matcher.is_stopped() and not self.steps.closed:
                more = self.steps.advance(self.piece.decode("utf-8", errors="replace"))
                self.piece.clear()
                if more:
                    self.matcher = self._matcher(self.max_new_tokens - position - 1)
        self.consumed = len(generated)
        if self.matcher.is_error():
            return scores
        packed = torch.frombuffer(bytearray(self.matcher.compute_bitmask()), dtype=torch.uint8)
        allowed = ((packed[:, None] >> self._bits) & 1).flatten().bool()
        vocab = scores.shape[-1]
        if allowed.numel() < vocab:
            allowed = torch.cat([allowed, torch.zeros(vocab - allowed.numel(), dtype=torch.bool)])
        return scores.masked_fill(~allowed[:vocab].to(scores.device), float("-inf"))


# ---------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------
@dataclass
class LoadedController:
    model: Any
    tokenizer: Any
    grammar_tokenizer: Any  # llguidance.LLTokenizer
    eos_ids: list[int]


def load_controller(source: str, device: str) -> LoadedController:
    """Load the checkpoint at ``source`` (a folder or a Hub id) for generation on ``device``."""
    import llguidance.hf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = fetch_local_llm(source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
        # float32 on a CPU: faster than the bfloat16 checkpoints ship in, there (measured: bench/controller.py)
        dtype = torch.float32 if device == "cpu" else "auto"
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
    except (OSError, ValueError, KeyError) as exc:
        raise LocalLLMUnavailableError(_what_to_set(source, f"it does not load: {exc}")) from None
    if not getattr(tokenizer, "chat_template", None):
        raise LocalLLMUnavailableError(_what_to_set(source, "its tokenizer has no chat template"))
    eos = model.generation_config.eos_token_id
    eos_ids = [eos] if isinstance(eos, int) else list(eos or [tokenizer.eos_token_id])
    grammar_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=model.config.vocab_size, eos_token=eos_ids)
    return LoadedController(model=model, tokenizer=tokenizer, grammar_tokenizer=grammar_tokenizer, eos_ids=eos_ids)


class LocalChatModel:
    """A :class:`~tasks.llm.ChatModel` answered by an instruct model in this process (see the module doc)."""

    base_url = "in-process (transformers)"

    def __init__(
        self,
        source: str,
        *,
        device: str = "cpu",
        max_new_tokens: int = 768,
        timeout: float = 120.0,
        cache: ModelCache | None = None,
        max_items: int = 12,
        max_length: int = 400,
        max_int: int = 99,
    ) -> None:
        self.model = source
        self.device = device
        self.max_new_tokens = max_new_tokens
        #: seconds one call may take in all, its chat template and its generation (HUGGINGGPT_LLM_TIMEOUT)
        self.timeout = timeout
        self.cache = cache if cache is not None else default_cache()
        self.bounds = {"max_items": max_items, "max_length": max_length, "max_int": max_int}
        self._lock = threading.Lock()
        self.usage = LLMUsage()
        #: seconds spent loading (0 when the model was already loaded) and generating, for the figures
        self.load_seconds = 0.0
        self.generate_seconds = 0.0

    @classmethod
    def from_settings(cls, settings: Settings, cache: ModelCache | None = None) -> LocalChatModel:
        """The controller the settings name, loaded into ``cache``: the local experts backend's, when
        :func:`tasks.services.chat_model_for` builds it (the process-wide default cache otherwise)."""
        return cls(
            settings.local_llm,
            device=settings.resolved_device(),
            max_new_tokens=settings.local_llm_max_new_tokens,
            timeout=settings.llm_timeout,
            cache=cache,
        )

    def loaded(self) -> CacheEntry[LoadedController]:
        """The model, loaded on first use (once per process, whatever the number of callers)."""
        start = time.perf_counter()
        key = ("controller", self.model, None, self.device)
        fresh = key not in self.cache
        entry = self.cache.get_or_load(key, lambda: load_controller(self.model, self.device))
        if fresh:
            self.load_seconds += time.perf_counter() - start
        return entry

    def chat(
        self,
        messages: list[Message],
        *,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """Generate the assistant's reply to ``messages`` (greedily; ``temperature`` is not used), constrained to
        ``schema`` when one is given."""
        return self.stream(messages, on_text=lambda text: None, stage=stage, schema=schema, temperature=temperature)

    def stream(
        self,
        messages: list[Message],
        *,
        on_text: TextCallback,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """:meth:`chat`, with ``on_text`` called with each piece of text as the model generates it."""
        entry = self.loaded()
        ctl = entry.value
        with entry.lock:
            start = time.perf_counter()
            try:
                reply, prompt_tokens, completion_tokens = self._generate(ctl, messages, schema, on_text)
            except (RuntimeError, ValueError, TimeoutError) as exc:  # ChatTemplateError is a ValueError
                raise LLMError(
                    f"the embedded controller {self.model} failed on the {stage} call: {exc}", usage=LLMUsage(calls=1)
                ) from None
            elapsed = time.perf_counter() - start
        usage = LLMUsage(calls=1, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        with self._lock:
            self.usage = self.usage + usage
            self.generate_seconds += elapsed
        logger.debug("controller %s: %d tokens in %.2f s", stage, completion_tokens, elapsed)
        return reply, usage

    def _generate(
        self,
        ctl: LoadedController,
        messages: list[Message],
        schema: dict[str, Any] | None,
        on_text: TextCallback | None = None,
    ) -> tuple[str, int, int]:
        import llguidance

        started = time.monotonic()
        prompt = render_chat_prompt(
            ctl.tokenizer,
            messages,
            seconds=self.timeout,
            what=f"the chat template of the embedded controller {self.model}",
        )
        encoded = ctl.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"].to(self.device)
        prompt_length = input_ids.shape[1]
        processors = LogitsProcessorList()
        contract = contract_of(schema)
        if contract is not None:  # a plan: the whole contract, piece by piece
            contract = contract.model_copy(
                update={
                    "max_nodes": min(contract.max_nodes, self.bounds["max_items"]),
                    "max_text": min(contract.max_text, self.bounds["max_length"]),
                }
            )
            steps = PlanSteps(contract)
            processors.append(ContractLogitsProcessor(steps, ctl.grammar_tokenizer, prompt_length, self.max_new_tokens))
        elif schema is not None:
            # every free string sized so that the reply closes within the tokens (a token is at least a byte)
            bounded = fit_strings(
                bounded_schema(schema, **self.bounds), self.max_new_tokens - 2, cap=self.bounds["max_length"]
            )
            grammar = llguidance.LLMatcher.grammar_from_json_schema(bounded, defaults={"whitespace_flexible": False})
            matcher = llguidance.LLMatcher(ctl.grammar_tokenizer, grammar, log_level=0)
            if matcher.is_error():
                raise ValueError(f"the reply schema cannot be decoded as a grammar: {matcher.get_error()}")
            processors.append(SchemaLogitsProcessor(matcher, prompt_length))
        with torch.inference_mode():
            output = ctl.model.generate(
                input_ids,
                attention_mask=encoded["attention_mask"].to(self.device),
                # a whole config: the checkpoint's sampling defaults would only be warned about and ignored
                generation_config=GenerationConfig(
                    max_new_tokens=self.max_new_tokens,
                    # the whole call within HUGGINGGPT_LLM_TIMEOUT, as an endpoint's is
                    max_time=max(self.timeout - (time.monotonic() - started), 0.001),
                    do_sample=False,
                    eos_token_id=ctl.eos_ids,
                    pad_token_id=ctl.eos_ids[0],
                ),
                logits_processor=processors,
                streamer=_TextCallbackStreamer(ctl.tokenizer, on_text) if on_text is not None else None,
            )
        generated = output[0, prompt_length:]
        finished = generated.numel() >= self.max_new_tokens or (
            generated.numel() > 0 and int(generated[-1]) in ctl.eos_ids
        )
        if not finished and time.monotonic() - started >= self.timeout:
            raise TimeoutError(
                f"the reply was not finished within {self.timeout:g} s (HUGGINGGPT_LLM_TIMEOUT); "
                f"{int(generated.numel())} token(s) were generated"
            )
        reply = ctl.tokenizer.decode(generated, skip_special_tokens=True)
        return reply, prompt_length, int(generated.numel())
