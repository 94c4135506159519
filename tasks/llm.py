"""The LLM controller: the chat-model seam the stages call, and its implementations.

:class:`ChatModel` is what planning, selection and the answer call: messages (and a JSON schema for the reply)
in, the reply text and the call's usage out. :func:`tasks.services.chat_model_for` builds the one the settings
name: :class:`LLMClient`, the ``openai`` client against any OpenAI-compatible server, when ``OPENAI_API_KEY`` or
``OPENAI_BASE_URL`` is set, else the embedded controller (:mod:`tasks.local_llm`). :class:`FunctionModel` is an
in-process stand-in whose replies come from a function, for tests and benchmarks.

The OpenAI implementation adds what every stage needs on top of the client: JSON-schema output where the server
supports it (and plain text where it does not), tolerant JSON parsing, usage counting, and errors that say what
to set.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import openai
from openai import DefaultHttpxClient, OpenAI

from tasks import parsing, timebound
from tasks.constraints import for_endpoint
from tasks.parsing import JSONExtractError, clip
from tasks.schemas import LLMUsage
from tasks.settings import Settings, redact, redact_url
from tasks.shared import shared

__all__ = [
    "ChatModel",
    "FunctionModel",
    "JSONExtractError",
    "LLMClient",
    "LLMError",
    "LLMUnavailableError",
    "extract_json",
    "stream_chat",
    "with_usage",
]

logger = logging.getLogger(__name__)

Message = dict[str, str]
#: Called with each piece of a reply as it arrives.
TextCallback = Callable[[str], None]

#: The header that tells an OpenAI-compatible server which stage is asking (``plan``, ``select``, ``respond``).
STAGE_HEADER = "X-HuggingGPT-Stage"


class ChatModel(Protocol):
    """What the stages call: one chat completion per call, thread-safe.

    ``stage`` names the caller (``plan``, ``select``, ``respond``); with ``schema``, the reply should be JSON
    matching it (an implementation may only ask for it: the stages validate every reply). Failures raise
    :class:`LLMError` (:class:`LLMUnavailableError` when the controller cannot answer at all).
    """

    #: the model that answers, and where it runs (for reports)
    model: str
    base_url: str

    def chat(
        self,
        messages: list[Message],
        *,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]: ...

    def stream(
        self,
        messages: list[Message],
        *,
        on_text: TextCallback,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """:meth:`chat`, calling ``on_text`` with each piece of the reply as it is generated (a controller that
        cannot stream calls it once, with the whole reply); returns the whole reply and the usage, as ``chat``."""
        ...


def stream_chat(
    llm: ChatModel,
    messages: list[Message],
    *,
    on_text: TextCallback,
    stage: str = "reply",
    schema: dict[str, Any] | None = None,
    temperature: float = 0.0,
) -> tuple[str, LLMUsage]:
    """``llm.stream(...)``; for a chat model written before streaming (no ``stream``), ``chat`` with the whole reply
    handed to ``on_text`` at once."""
    method = getattr(llm, "stream", None)
    if method is None:
        reply, usage = llm.chat(messages, stage=stage, schema=schema, temperature=temperature)
        on_text(reply)
        return reply, usage
    return method(messages, on_text=on_text, stage=stage, schema=schema, temperature=temperature)


class LLMError(RuntimeError):
    """An LLM call failed; the message names the endpoint and the cause, and what to set when that helps.

    ``usage`` counts the calls made on the way (a failed call is a call): a stage that catches the error adds it
    to its own, and one that lets it through adds what it had spent before (:func:`with_usage`)."""

    def __init__(self, message: str, *, usage: LLMUsage | None = None) -> None:
        super().__init__(message)
        self.usage = usage if usage is not None else LLMUsage()

    def __reduce__(self) -> tuple[Any, ...]:  # keeps the usage through a pickled task state
        return (_rebuild_llm_error, (type(self), str(self), self.usage))


def _rebuild_llm_error(cls: type[LLMError], message: str, usage: LLMUsage) -> LLMError:
    exc = cls(message)
    exc.usage = usage
    return exc


def with_usage(exc: LLMError, spent: LLMUsage) -> LLMError:
    """``exc`` with ``spent`` (the usage of earlier calls of the same stage) added to its usage."""
    exc.usage = spent + exc.usage
    return exc


class LLMRejectedError(LLMError):
    """The LLM endpoint refused the request itself (HTTP 400)."""


class LLMUnavailableError(LLMError):
    """The LLM endpoint could not be reached or refused the credentials."""


class LLMUnreachableError(LLMUnavailableError):
    """No connection to the LLM endpoint, or it refused the key: a setting to change (the CLI exits 2)."""


def extract_json(text: str) -> Any:
    """Read the first JSON value from an LLM reply (see :func:`tasks.parsing.extract_json`: bounded in size and
    nesting; a bare value, a value inside a code fence, or a value surrounded by prose)."""
    return parsing.extract_json(text)


def shared_openai_client(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> OpenAI:
    """One ``openai`` client per process for the same endpoint and options.

    Each new client builds an HTTP client whose TLS context loads the CA bundle (tens of milliseconds of CPU,
    even for a plain ``http://`` server) and opens new connections; the client is thread-safe, so the stages of
    every request share it and reuse its connection pool.
    """
    key = (api_key, base_url, timeout, max_retries)
    retries = {"max_retries": max_retries}
    return shared(
        "openai-client",
        key,
        lambda: OpenAI(
            api_key=api_key,
            base_url=base_url,
            timeout=timeout,
            http_client=DefaultHttpxClient(event_hooks={"request": [_count_request]}),
            **retries,
        ),
    )


#: The requests a chat call has sent so far (the client's own retries included), counted by the HTTP client.
_requests_sent: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("llm_requests_sent", default=None)


def _count_request(request: httpx.Request) -> None:
    counter = _requests_sent.get()
    if counter is not None:
        counter[0] += 1


class LLMClient:
    """One per request (usage is counted per request, thread-safely) over a client shared by the process."""

    def __init__(self, settings: Settings, client: OpenAI | None = None) -> None:
        settings.require_llm()
        self.settings = settings
        self.model = settings.llm_model
        api_key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "not-needed"
        self.base_url = redact_url(settings.openai_base_url) or "https://api.openai.com/v1"
        self._client = client or shared_openai_client(
            api_key, settings.openai_base_url, settings.llm_timeout, settings.llm_max_retries
        )
        self._schema_supported = settings.llm_json_schema
        self._stream_supported = True
        self._secrets = settings.secret_values()
        self._lock = threading.Lock()
        self.usage = LLMUsage()

    # ------------------------------------------------------------------
    def chat(
        self,
        messages: list[Message],
        *,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """Send one chat completion; return the reply text and this call's usage.

        With ``schema``, asks for JSON-schema constrained output (the schema named after ``stage``); a server
        that rejects ``response_format`` is asked again without it, and not asked with it again by this client.
        The stage also travels in the :data:`STAGE_HEADER` header.
        """
        return self._call(self._request(messages, stage, schema, temperature), self._create)

    def stream(
        self,
        messages: list[Message],
        *,
        on_text: TextCallback,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """:meth:`chat` with ``stream=True``: ``on_text`` gets each piece of the reply as the server sends it.

        A server that answers a streamed request with one whole completion (it does not stream) is read as such,
        ``on_text`` gets the whole reply, and this client asks it without ``stream`` from then on; one that refuses
        ``stream`` (HTTP 400) is asked again without it. The whole call is bounded as :meth:`chat` is."""
        if self._stream_supported:
            kwargs = self._request(messages, stage, schema, temperature)
            kwargs["stream"] = True
            kwargs["stream_options"] = {"include_usage": True}
            try:
                return self._call(kwargs, lambda kw: self._consume_stream(kw, on_text))
            except LLMRejectedError as exc:
                logger.info("LLM server rejected a streamed request (%s); asking without streaming", exc)
                self._stream_supported = False
                spent = exc.usage
            else:  # pragma: no cover - returned above
                spent = LLMUsage()
        else:
            spent = LLMUsage()
        try:
            reply, usage = self.chat(messages, stage=stage, schema=schema, temperature=temperature)
        except LLMError as exc:
            raise with_usage(exc, spent) from None
        on_text(reply)
        return reply, spent + usage

    def _request(
        self, messages: list[Message], stage: str, schema: dict[str, Any] | None, temperature: float
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": temperature,
            "extra_headers": {STAGE_HEADER: stage},
        }
        sent_schema = for_endpoint(schema)  # the plan contract is for the embedded controller only
        if sent_schema is not None and self._schema_supported:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": stage, "schema": sent_schema, "strict": False},
            }
        return kwargs

    def _call(self, kwargs: dict[str, Any], send: Callable[[dict[str, Any]], Any]) -> tuple[str, LLMUsage]:
        """``send(kwargs)`` (a completion, or a streamed reply read as one), counted; a server that rejects
        ``response_format`` is asked again without it, and not asked with it again by this client."""
        asked = 1  # a server that refuses response_format is asked a second time
        counter = [0]  # requests the HTTP client sent, its retries included
        token = _requests_sent.set(counter)
        try:
            try:
                response = send(kwargs)
            except openai.BadRequestError as exc:
                if "response_format" not in kwargs:
                    raise self._wrap(exc) from None
                logger.info("LLM server rejected response_format (%s); asking again without it", self._short(exc))
                self._schema_supported = False
                kwargs.pop("response_format")
                asked = 2
                try:
                    response = send(kwargs)
                except openai.OpenAIError as exc2:
                    raise self._wrap(exc2) from None
            except openai.OpenAIError as exc:  # not chained: what the server said may echo the key
                raise self._wrap(exc) from None
        except LLMError as exc:
            failed = LLMUsage(calls=max(counter[0], asked))
            exc.usage = exc.usage + failed
            with self._lock:
                self.usage = self.usage + failed
            raise
        finally:
            _requests_sent.reset(token)
        sent = max(counter[0], asked)

        usage = LLMUsage(calls=sent)
        if response.usage is not None:
            usage = LLMUsage(
                calls=sent,
                prompt_tokens=response.usage.prompt_tokens or 0,
                completion_tokens=response.usage.completion_tokens or 0,
            )
        with self._lock:
            self.usage = self.usage + usage
        if not response.choices:
            raise LLMError(f"the LLM at {self.base_url} returned no choices", usage=usage)
        content = getattr(getattr(response.choices[0], "message", None), "content", None) or ""
        if not isinstance(content, str):
            raise LLMError(f"the LLM at {self.base_url} returned a message whose content is not text", usage=usage)
        return content, usage

    def _consume_stream(self, kwargs: dict[str, Any], on_text: TextCallback) -> Any:
        """Send a streamed request and read it to its end within the call's bound (as :meth:`_create`); the whole
        reply comes back as a completion."""
        attempts = 1 + self.settings.llm_max_retries
        seconds = self.settings.llm_timeout * attempts

        def read() -> tuple[str, LLMUsage]:
            stream = self._client.chat.completions.create(**kwargs)
            http = getattr(stream, "response", None)
            kind = str(http.headers.get("content-type", "")) if http is not None else "text/event-stream"
            if http is not None and not kind.startswith("text/event-stream"):
                return self._whole_reply(http, on_text)
            parts: list[str] = []
            size = 0
            reported: Any = None
            for chunk in stream:
                if getattr(chunk, "usage", None) is not None:
                    reported = chunk.usage
                for choice in getattr(chunk, "choices", None) or []:
                    text = getattr(getattr(choice, "delta", None), "content", None)
                    if isinstance(text, str) and text:
                        size += len(text)
                        if size > parsing.MAX_DOCUMENT_CHARS:
                            raise LLMError(
                                f"the LLM at {self.base_url} sent a reply longer than {parsing.MAX_DOCUMENT_CHARS} "
                                "characters"
                            )
                        parts.append(text)
                        on_text(text)
            return _Completion("".join(parts), reported)

        try:
            return timebound.within(
                seconds,
                read,
                f"streamed LLM call to {self.base_url}",
                lambda: LLMUnavailableError(
                    f"the LLM at {self.base_url} (model {self.model!r}) did not answer within {seconds:g} s; "
                    "check OPENAI_BASE_URL or raise HUGGINGGPT_LLM_TIMEOUT "
                    f"({self.settings.llm_timeout:g} s for each of {attempts} attempt(s), however slowly it sends)"
                ),
            )
        except (ValueError, RecursionError) as exc:  # an event that is not JSON
            raise LLMError(
                f"the LLM at {self.base_url} streamed something that is not JSON ({type(exc).__name__}); "
                "check OPENAI_BASE_URL: it must be an OpenAI-compatible API (usually ending in /v1)"
            ) from None

    def _whole_reply(self, http: Any, on_text: TextCallback) -> Any:
        """A streamed request answered with one whole completion: the server does not stream."""
        from openai.types.chat import ChatCompletion
        from pydantic import ValidationError

        self._stream_supported = False
        logger.info("the LLM at %s does not stream; asking without streaming from now on", self.base_url)
        body = http.read()
        try:
            response = ChatCompletion.model_validate(parsing.loads_json(body.decode("utf-8", "replace"), "the reply"))
        except (parsing.ParseError, ValidationError):
            raise LLMError(
                f"the LLM at {self.base_url} answered with something that is not a chat completion: "
                f"{redact(parsing.quote(body.decode('utf-8', 'replace')), self._secrets)}; check OPENAI_BASE_URL: "
                "it must be an OpenAI-compatible API (usually ending in /v1)"
            ) from None
        content = getattr(getattr(response.choices[0], "message", None), "content", None) if response.choices else None
        if isinstance(content, str):
            on_text(content)
        return response

    def _create(self, kwargs: dict[str, Any]) -> Any:
        """One completion within ``HUGGINGGPT_LLM_TIMEOUT`` per attempt in all (the client's own timeout bounds
        each read, so a server sending a byte a second would hold it for ever); a reply that is not a chat
        completion (an HTML page from a proxy or a web UI, a JSON error document) is an :class:`LLMError`."""
        attempts = 1 + self.settings.llm_max_retries
        seconds = self.settings.llm_timeout * attempts
        try:
            response = timebound.within(
                seconds,
                lambda: self._client.chat.completions.create(**kwargs),
                f"LLM call to {self.base_url}",
                lambda: LLMUnavailableError(
                    f"the LLM at {self.base_url} (model {self.model!r}) did not answer within {seconds:g} s; "
                    "check OPENAI_BASE_URL or raise HUGGINGGPT_LLM_TIMEOUT "
                    f"({self.settings.llm_timeout:g} s for each of {attempts} attempt(s), however slowly it sends)"
                ),
            )
        except (ValueError, RecursionError) as exc:  # a JSON content type over a body that is not JSON
            raise LLMError(
                f"the LLM at {self.base_url} answered with a body that is not JSON ({type(exc).__name__}); "
                "check OPENAI_BASE_URL: it must be an OpenAI-compatible API (usually ending in /v1)"
            ) from None
        if isinstance(response, str | bytes) or not isinstance(getattr(response, "choices", None), list):
            body = response if isinstance(response, str | bytes) else response.model_dump_json()
            raise LLMError(
                f"the LLM at {self.base_url} answered with something that is not a chat completion: "
                f"{redact(parsing.quote(str(body)), self._secrets)}; check OPENAI_BASE_URL: it must be an "
                "OpenAI-compatible API (usually ending in /v1)"
            )
        return response

    def _short(self, exc: BaseException) -> str:
        return redact(_short(exc), self._secrets)

    def _wrap(self, exc: BaseException) -> LLMError:
        where = f"the LLM at {self.base_url} (model {self.model!r})"
        if isinstance(exc, openai.APITimeoutError):
            return LLMUnavailableError(
                f"{where} did not answer within {self.settings.llm_timeout:g} s; "
                "check OPENAI_BASE_URL or raise HUGGINGGPT_LLM_TIMEOUT"
            )
        if isinstance(exc, openai.APIConnectionError):
            return LLMUnreachableError(
                f"could not reach {where}: {self._short(exc).rstrip('.')}. Set OPENAI_BASE_URL to a reachable "
                "OpenAI-compatible server (or unset it and set OPENAI_API_KEY to use OpenAI)"
            )
        if isinstance(exc, openai.AuthenticationError):
            return LLMUnreachableError(f"{where} refused the API key; set a valid OPENAI_API_KEY")
        if isinstance(exc, openai.NotFoundError):
            return LLMError(f"{where} does not know that model; set HUGGINGGPT_LLM_MODEL to one it serves")
        if isinstance(exc, openai.RateLimitError):
            return LLMError(f"{where} is rate limiting requests (429) after retries: {self._short(exc)}")
        if isinstance(exc, openai.BadRequestError):
            return LLMRejectedError(f"{where} answered HTTP {exc.status_code}: {self._short(exc)}")
        if isinstance(exc, openai.APIStatusError):
            return LLMError(f"{where} answered HTTP {exc.status_code}: {self._short(exc)}")
        return LLMError(f"{where} failed: {self._short(exc)}")


@dataclass
class _Message:
    content: str


@dataclass
class _Choice:
    message: _Message


class _Completion:
    """A streamed reply read to its end, in the shape of a completion: its text and the usage the server sent."""

    def __init__(self, content: str, usage: Any) -> None:
        self.choices = [_Choice(_Message(content))]
        self.usage = usage


def _short(exc: BaseException, limit: int = 300) -> str:
    return clip(str(exc), limit)


# ---------------------------------------------------------------------------
# an in-process stand-in
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatCall:
    """One call a :class:`FunctionModel` received."""

    messages: list[Message]
    stage: str
    schema: dict[str, Any] | None
    temperature: float
    #: whether the caller asked for the reply piece by piece (:meth:`FunctionModel.stream`)
    stream: bool = False


class FunctionModel:
    """A :class:`ChatModel` whose replies come from ``function(call) -> str`` (or an iterable of the pieces of a
    streamed reply), in process.

    Every call is kept in ``calls``; an exception the function raises (an :class:`LLMError` to stand for a failed
    call) reaches the stage as it would from a server. Usage counts one call and whitespace-separated words.

        model = FunctionModel(lambda call: '{"tasks": []}' if call.stage == "plan" else "Hello.")
    """

    def __init__(self, function: Callable[[ChatCall], str | Iterable[str]], *, model: str = "function") -> None:
        self.function = function
        self.model = model
        self.base_url = "in-process function"
        self.calls: list[ChatCall] = []
        self._lock = threading.Lock()

    def chat(
        self,
        messages: list[Message],
        *,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        call = ChatCall(messages=list(messages), stage=stage, schema=schema, temperature=temperature)
        return self._answer(call, lambda text: None)

    def stream(
        self,
        messages: list[Message],
        *,
        on_text: TextCallback,
        stage: str = "reply",
        schema: dict[str, Any] | None = None,
        temperature: float = 0.0,
    ) -> tuple[str, LLMUsage]:
        """The function's reply, handed to ``on_text`` piece by piece when the function returns an iterable of
        pieces (a generator may wait between them), at once when it returns a string."""
        call = ChatCall(messages=list(messages), stage=stage, schema=schema, temperature=temperature, stream=True)
        return self._answer(call, on_text)

    def _answer(self, call: ChatCall, on_text: TextCallback) -> tuple[str, LLMUsage]:
        messages = call.messages
        with self._lock:
            self.calls.append(call)
        pieces: list[str] = []
        try:
            answer = self.function(call)
            for piece in [answer] if isinstance(answer, str) else answer:
                pieces.append(piece)
                on_text(piece)
        except LLMError as exc:  # a failed call is a call
            if exc.usage.calls == 0:
                exc.usage = exc.usage + LLMUsage(calls=1)
            raise
        reply = "".join(pieces)
        usage = LLMUsage(
            calls=1,
            prompt_tokens=sum(len(m.get("content", "").split()) for m in messages),
            completion_tokens=len(reply.split()),
        )
        return reply, usage

    def stage_calls(self, stage: str) -> list[ChatCall]:
        return [c for c in self.calls if c.stage == stage]


def scripted(**replies: str | list[str]) -> Callable[[ChatCall], str]:
    """A :class:`FunctionModel` function answering per stage: ``scripted(plan='{"tasks": []}', respond="Hi")``.
    A list is consumed in order, its last reply repeating; a stage without replies gets an empty JSON reply
    (``{"tasks": []}``, ``{"choices": []}``) or ``Done.``."""
    queues = {stage: list(r) if isinstance(r, list) else [r] for stage, r in replies.items()}
    lock = threading.Lock()
    defaults = {"plan": '{"tasks": []}', "replan": '{"tasks": []}', "select": '{"choices": []}'}

    def reply(call: ChatCall) -> str:
        with lock:
            queue = queues.get(call.stage)
            if not queue:
                return defaults.get(call.stage, "Done.")
            return queue.pop(0) if len(queue) > 1 else queue[0]

    return reply
