"""All configuration in one pydantic-settings model, read from the environment and ``.env``.

CLI flags and flow parameters override these values through :meth:`Settings.with_overrides`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_LLM_MODEL = "gpt-4.1-mini"
DEFAULT_LOCAL_LLM = "Qwen/Qwen2.5-0.5B-Instruct"
DEFAULT_STORAGE = "./hugginggpt-runs"

# Upper bounds of the numeric settings: every one finite, and small enough for the clocks, waits and counters it
# feeds (a timeout of 1e10 s overflows a timestamp; ``inf`` never ends).
MAX_TIMEOUT = 7 * 24 * 3600.0  # a week: any one call, download or model run
MAX_WAIT = 3600.0  # an hour between retries
MAX_TTL = 10 * 365 * 24 * 3600.0  # ten years of reuse
MAX_PRESIGN = 7 * 24 * 3600  # the longest a presigned S3 URL may be valid
MAX_RETRIES = 100
MAX_TOKENS = 1_000_000
MAX_TOP_K = 100
MAX_CHAT_HISTORY = 1000
MAX_CONCURRENCY = 1024
MAX_PARAMS = 10**13
MAX_REPLANS = 10  # LLM calls that may plan again after a failure, in one request
MAX_INPUT_BYTES = 1 << 40


class LLMNotConfiguredError(RuntimeError):
    """No LLM endpoint is configured; the message says which variable to set."""


class RuntimeSettingError(RuntimeError):
    """A setting that validates but cannot work on this machine (a device that is not there, a Dask scheduler out
    of reach); the message names the variable and what to set."""


def _split_list(value: Any, separator: str, *, strip: bool) -> Any:
    """An environment value for a list: a JSON list, or items between ``separator``s (blank ones dropped, each one
    stripped of spaces when ``strip``); anything else as it is."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        return json.loads(text)
    return [part.strip() if strip else part for part in text.split(separator) if part.strip()]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="HUGGINGGPT_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
    )

    # --- LLM controller (any OpenAI-compatible API) ---------------------------
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "openai_api_key")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "openai_base_url")
    )
    llm_model: str = Field(default=DEFAULT_LLM_MODEL, description="chat model used for all LLM stages")
    llm_timeout: float = Field(
        default=120.0, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, description="seconds before one LLM call is abandoned"
    )
    llm_max_retries: int = Field(
        default=2, ge=0, le=MAX_RETRIES, description="retries on connection errors, 429 and 5xx"
    )
    llm_json_schema: bool = Field(default=True, description="ask for JSON-schema constrained output")
    local_llm: str = Field(
        default=DEFAULT_LOCAL_LLM,
        description="the embedded controller when no endpoint is set: a Hub id or a folder of an instruct model",
    )
    local_llm_max_new_tokens: int = Field(
        default=768, ge=1, le=MAX_TOKENS, description="bound on one reply of the embedded controller, in tokens"
    )
    demos: Literal["fixed", "similar"] = Field(
        default="similar",
        description="planning demos: 'similar' picks those closest to the request from the demo library "
        "(tasks/demos.py), 'fixed' shows the prompt's own",
    )
    n_demos: int = Field(default=4, ge=1, le=20, description="demos shown with demos=similar")

    # --- storage and catalog ----------------------------------------------------
    storage: str = Field(default=DEFAULT_STORAGE, description="fsspec URL of the artifact store")
    storage_options: Annotated[dict[str, Any], NoDecode] = Field(
        default_factory=dict, description="fsspec options for the store, as JSON (e.g. endpoint_url, key, secret)"
    )
    storage_retries: int = Field(
        default=3, ge=0, le=MAX_RETRIES, description="retries of a failed storage write or read"
    )
    storage_retry_wait: float = Field(
        default=0.5, ge=0, le=MAX_WAIT, allow_inf_nan=False, description="first wait before a storage retry (doubles)"
    )
    results_storage: str | None = Field(
        default=None, description="where Prefect persists task results (default {storage}/prefect-results)"
    )
    persist_results: bool = Field(default=True, description="persist Prefect task results, as JSON")
    cache: bool = Field(default=True, description="reuse outputs of identical earlier nodes")
    cache_ttl: float = Field(
        default=0.0,
        ge=0,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="seconds a cached output stays usable; 0: forever",
    )
    catalog: Path | None = Field(
        default=None, description="extra catalog JSONL that adds to or overrides the built-in one"
    )

    # --- experts ------------------------------------------------------------------
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("HF_TOKEN", "hf_token"))
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    inference_mode: Literal["local", "remote", "hybrid"] = Field(
        default="hybrid", description="where models run: here, on inference endpoints, or here when possible"
    )
    max_fallbacks: int = Field(
        default=2, ge=0, le=MAX_RETRIES, description="next-ranked candidates tried when a model fails"
    )
    node_retries: int = Field(
        default=0, ge=0, le=MAX_RETRIES, description="Prefect retries of a node that failed transiently"
    )
    node_retry_wait: float = Field(
        default=2.0, ge=0, le=MAX_WAIT, allow_inf_nan=False, description="seconds before a node's retry"
    )
    chat_history: int = Field(
        default=5, ge=0, le=MAX_CHAT_HISTORY, description="earlier turns a chat sends with each request"
    )
    presign_seconds: int = Field(
        default=0,
        ge=0,
        le=MAX_PRESIGN,
        description="link files on S3 in the run's artifacts by presigned URLs valid this long",
    )
    max_local_params: int | None = Field(
        default=None,
        ge=1,
        le=MAX_PARAMS,
        description="largest model (parameters) run locally (default: what half the memory holds in float32); "
        "larger ones go remote in hybrid mode",
    )
    hub_info_ttl: float = Field(
        default=86400.0,
        ge=0,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="seconds the Hub's answer about a model (size, providers) is reused",
    )
    hub_info_cache: Path | None = Field(
        default=None, description="folder of the Hub's answers about models (default {HF_HOME}/hugginggpt/model-info)"
    )
    hub_info_timeout: float = Field(
        default=10.0, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, description="seconds for one question to the Hub"
    )
    hf_provider: str | None = Field(default=None, description="Inference Providers provider (default: auto)")
    hf_inference_url: str | None = Field(
        default=None, description="base URL of a self-hosted inference server (TGI/TEI); '{model}' is replaced"
    )
    remote_timeout: float = Field(
        default=60.0, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, description="seconds for one remote inference call"
    )
    remote_retries: int = Field(default=2, ge=0, le=MAX_RETRIES, description="retries of a remote call on 5xx and 429")
    remote_job_timeout: float = Field(
        default=600.0,
        gt=0,
        le=MAX_TIMEOUT,
        allow_inf_nan=False,
        description="seconds one call through Inference Providers may take in all, a provider's job queue included",
    )
    remote_retry_wait: float = Field(
        default=1.0, ge=0, le=MAX_WAIT, allow_inf_nan=False, description="first wait before a remote retry (doubles)"
    )
    top_k: int = Field(default=5, ge=1, le=MAX_TOP_K, description="candidates per task offered to the LLM")
    unused_pins: Literal["refuse", "ignore"] = Field(
        default="refuse",
        description="a pinned model whose task the plan does not use: refuse the run, or ignore the pin (a chat "
        "session's pins hold for every turn, and a turn need not use them all)",
    )
    prefetch: bool = Field(
        default=True, description="download and load the plan's local models ahead of their nodes, once chosen"
    )
    max_models: int = Field(default=4, ge=1, le=MAX_CONCURRENCY, description="loaded models kept in memory per process")
    max_new_tokens: int = Field(default=48, ge=1, le=MAX_TOKENS, description="generation bound for text outputs")
    speecht5_vocoder: str = Field(
        default="microsoft/speecht5_hifigan",
        description="the vocoder SpeechT5 text-to-speech speaks through (a Hub id or a folder)",
    )
    speaker_embeddings: Path | None = Field(
        default=None, description="a .npy file of 512 floats: the x-vector SpeechT5 speaks with (default: zeros)"
    )
    max_workers: int = Field(default=4, ge=1, le=MAX_CONCURRENCY, description="nodes run at the same time")
    max_replans: int = Field(
        default=1,
        ge=0,
        le=MAX_REPLANS,
        description="LLM calls that may plan new tasks after a node failed or was skipped (0: none)",
    )
    stream_plan: bool = Field(
        default=True, description="start nodes while the plan streams, where the controller streams"
    )
    input_timeout: float = Field(
        default=30.0,
        gt=0,
        le=MAX_TIMEOUT,
        allow_inf_nan=False,
        description="seconds to fetch one input URL, redirects included",
    )
    model_timeout: float = Field(
        default=900.0,
        gt=0,
        le=MAX_TIMEOUT,
        allow_inf_nan=False,
        description="seconds a local model may take to load and run for one node",
    )

    # --- what a request may read ------------------------------------------------------
    input_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="folders local input files may come from, besides the working directory "
        "(a JSON list, or paths separated by the OS path separator)",
    )
    allow_private_urls: bool = Field(
        default=False, description="let input URLs reach private, loopback and link-local addresses"
    )
    allowed_url_schemes: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["http", "https"],
        description="URL schemes inputs may use (comma-separated or a JSON list); the storage's own is always allowed",
    )
    max_input_bytes: int = Field(
        default=200 * 1024 * 1024, ge=1, le=MAX_INPUT_BYTES, description="largest input file or download"
    )
    trust_remote_code: bool = Field(
        default=False,
        description="run the Python code of a model repository, for catalog entries that also say trust_remote_code",
    )
    eval_concurrency: int = Field(
        default=4, ge=1, le=MAX_CONCURRENCY, description="requests planned at the same time by 'hugginggpt eval'"
    )
    batch_max_in_flight: int = Field(
        default=4, ge=1, le=MAX_CONCURRENCY, description="requests of a batch running at the same time"
    )

    # --- scale-out ------------------------------------------------------------------
    task_runner: Literal["threads", "dask"] = Field(
        default="threads", description="what runs plan nodes: a thread pool here, or a Dask cluster (prefect-dask)"
    )
    dask_address: str | None = Field(
        default=None, description="scheduler of an existing Dask cluster (tcp://host:8786); none: a local cluster"
    )
    dask_workers: int | None = Field(
        default=None, ge=1, le=MAX_CONCURRENCY, description="worker processes of the local Dask cluster"
    )

    # --- links to stored files through `hugginggpt serve` --------------------------------
    public_url: str | None = Field(
        default=None,
        description="the URL of `hugginggpt serve` as browsers reach it (https://hugginggpt.example.com): run "
        "artifacts link files through it when HUGGINGGPT_FILE_SECRET is set too",
    )
    file_secret: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="secret that signs file links (HMAC); the server and the processes that run flows share it "
        "(unset: the server makes one per start, and artifacts keep their own links)",
    )
    link_seconds: int = Field(
        default=7 * 24 * 3600, ge=1, le=int(MAX_TTL), description="seconds a signed file link stays valid"
    )

    # --- Prefect --------------------------------------------------------------------
    heartbeats: bool = Field(default=False, description="emit flow-run heartbeats (crash detection on long runs)")

    @field_validator("openai_base_url", "catalog", "public_url", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return None if isinstance(v, str) and not v.strip() else v or None

    @field_validator("storage_options", mode="before")
    @classmethod
    def _options_json(cls, v: Any) -> Any:
        if not isinstance(v, str):
            return v
        from tasks.parsing import ParseError, loads_json

        try:
            return loads_json(v, "HUGGINGGPT_STORAGE_OPTIONS", limit=100_000) if v.strip() else {}
        except ParseError as exc:
            raise ValueError(f'{exc}; give a JSON object such as {{"endpoint_url": "http://..."}}') from None

    @field_validator("input_roots", mode="before")
    @classmethod
    def _split_roots(cls, v: Any) -> Any:
        return _split_list(v, os.pathsep, strip=False)

    @field_validator("allowed_url_schemes", mode="before")
    @classmethod
    def _split_schemes(cls, v: Any) -> Any:
        return _split_list(v, ",", strip=True)

    @field_validator("allowed_url_schemes")
    @classmethod
    def _lower_schemes(cls, v: list[str]) -> list[str]:
        return [s.strip().lower().removesuffix("://") for s in v if s.strip()]

    @field_validator("storage")
    @classmethod
    def _strip_slash(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("HUGGINGGPT_STORAGE is empty; give a folder or an fsspec URL such as s3://bucket/prefix")
        return v.rstrip("/") or "/"

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if not given:
            return self
        data = self.model_dump()
        data.update(given)
        return type(self).model_validate(data)

    def secret_values(self) -> list[str]:
        """Every configured secret: the API key, the Hugging Face token, storage credentials (to keep out of
        messages and logs)."""
        from tasks.storage import credential_values

        values = [s.get_secret_value() for s in (self.openai_api_key, self.hf_token, self.file_secret) if s is not None]
        values += credential_values(self.storage_options)
        for url in (self.openai_base_url, self.hf_inference_url, self.storage, self.results_storage, self.dask_address):
            values += url_credentials(url)
        return [v for v in values if len(v) >= 4]

    @property
    def llm_configured(self) -> bool:
        return self.openai_api_key is not None or self.openai_base_url is not None

    def require_llm(self) -> None:
        """Raise :class:`LLMNotConfiguredError` with what to set when no LLM endpoint is configured."""
        if not self.llm_configured:
            raise LLMNotConfiguredError(
                "No LLM is configured. Set OPENAI_API_KEY to use OpenAI, or OPENAI_BASE_URL to use an "
                "OpenAI-compatible server (e.g. OPENAI_BASE_URL=http://localhost:11434/v1 for Ollama, "
                "http://localhost:8000/v1 for vLLM), and HUGGINGGPT_LLM_MODEL to pick its model "
                f"(default {DEFAULT_LLM_MODEL})."
            )

    def resolved_device(self) -> str:
        if self.device != "auto":
            return self.device
        try:
            import torch

            if torch.cuda.is_available():
                return "cuda"
            if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
                return "mps"
        except ImportError:  # pragma: no cover - torch is a dependency
            pass
        return "cpu"


class RunOptions(BaseModel):
    """Settings one run may set for itself, on top of the environment of the process that runs it: CLI flags,
    deployment parameters, a parent flow's choices. Secrets are never among them (they stay in the environment)."""

    model_config = ConfigDict(extra="forbid")

    storage: str | None = Field(default=None, description="fsspec URL of the artifact store (HUGGINGGPT_STORAGE)")
    catalog: str | None = Field(default=None, description="extra catalog JSONL (HUGGINGGPT_CATALOG)")
    llm_model: str | None = Field(default=None, description="chat model of the controller")
    device: str | None = Field(default=None, description="'auto', 'cpu', 'cuda', 'cuda:1', 'mps'")
    inference_mode: Literal["local", "remote", "hybrid"] | None = None
    cache: bool | None = Field(default=None, description="reuse outputs of identical earlier nodes")
    cache_ttl: float | None = Field(
        default=None, ge=0, le=MAX_TTL, allow_inf_nan=False, description="seconds a cached output stays usable"
    )
    max_workers: int | None = Field(default=None, ge=1, le=MAX_CONCURRENCY, description="nodes run at the same time")
    max_replans: int | None = Field(default=None, ge=0, le=MAX_REPLANS, description="replans allowed after a failure")
    stream_plan: bool | None = Field(default=None, description="start nodes while the plan streams")
    prefetch: bool | None = Field(default=None, description="load the plan's models ahead of their nodes")
    unused_pins: Literal["refuse", "ignore"] | None = None
    task_runner: Literal["threads", "dask"] | None = None
    dask_address: str | None = Field(default=None, description="scheduler of an existing Dask cluster")
    persist_results: bool | None = None
    results_storage: str | None = Field(default=None, description="where Prefect persists task results")
    max_new_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)

    def overrides(self) -> dict[str, Any]:
        """The options that are set, as settings fields."""
        return self.model_dump(exclude_none=True)


def url_credentials(url: str | None) -> list[str]:
    """The ``user:password`` part of a URL, and the password alone (what :func:`redact_url` hides)."""
    if not url or "@" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rsplit("@", 1)[0]
    return [userinfo, *([parts.password] if parts.password else [])]


def redact_url(url: str | None) -> str | None:
    """``url`` with its credentials (``user:password@``) replaced by ``***@``: what may be stored or logged."""
    if not url:
        return url
    for secret in url_credentials(url):
        url = url.replace(secret + "@", "***@")
    return url


def redact(text: str, secrets: list[str] | tuple[str, ...]) -> str:
    """``text`` with every one of ``secrets`` replaced by ``***``."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def load_settings(options: RunOptions | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with a run's ``options`` and the given overrides applied (``None`` means: keep
    the environment's)."""
    given = options.overrides() if options is not None else {}
    given.update({k: v for k, v in overrides.items() if v is not None})
    return Settings().with_overrides(**given)


def setting_variable(field: str) -> str:
    """The environment variable that sets the :class:`Settings` field ``field`` (``llm_timeout`` ->
    ``HUGGINGGPT_LLM_TIMEOUT``, ``hf_token`` -> ``HF_TOKEN``); ``field`` itself when it is no field."""
    info = Settings.model_fields.get(field)
    if info is None:
        return field
    alias = info.validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"HUGGINGGPT_{field.upper()}"


DASK_CONNECT_TIMEOUT = 5.0
"""Seconds to reach a configured Dask scheduler before a run is refused."""


def device_problem(device: str) -> str | None:
    """What is wrong with ``HUGGINGGPT_DEVICE=device`` on this machine (not a device torch knows, or one that is
    not here); ``None`` when it can be used."""
    name = device.strip()
    if name in ("auto", "cpu"):
        return None
    hint = "set HUGGINGGPT_DEVICE (or --device) to auto, cpu, cuda, cuda:N or mps"
    import torch

    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        return f"HUGGINGGPT_DEVICE={device!r} is not a device: {hint}"
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else getattr(torch.backends, "mps", None)
    available = getattr(backend, "is_available", None)
    if parsed.type == "cpu":
        return None
    if available is None or not available():
        return f"HUGGINGGPT_DEVICE={device!r}: no {parsed.type} device on this machine; {hint}"
    count = getattr(backend, "device_count", None)
    if parsed.index is not None and count is not None and parsed.index >= count():
        return f"HUGGINGGPT_DEVICE={device!r}: this machine has {count()} {parsed.type} device(s); {hint}"
    return None


def dask_problem(settings: Settings, *, connect_timeout: float = DASK_CONNECT_TIMEOUT) -> str | None:
    """What stops ``HUGGINGGPT_TASK_RUNNER=dask`` from working: prefect-dask not installed, or the scheduler at
    ``HUGGINGGPT_DASK_ADDRESS`` not answering within ``connect_timeout`` seconds; ``None`` when nothing does (or
    the runner is not Dask)."""
    import importlib.util
    import socket

    if settings.task_runner != "dask":
        return None
    if importlib.util.find_spec("prefect_dask") is None:
        return "HUGGINGGPT_TASK_RUNNER=dask needs prefect-dask: pip install 'hugginggpt-prefect[dask]'"
    address = (settings.dask_address or "").strip()
    if not address:
        return None
    shown = redact_url(address)
    where = address if "://" in address else f"tcp://{address}"
    try:
        parts = urlsplit(where)
        host, port = parts.hostname, parts.port or 8786
    except ValueError:
        return f"HUGGINGGPT_DASK_ADDRESS={shown!r} is not a scheduler address: give tcp://host:8786"
    if parts.scheme not in ("tcp", "tls", "ws", "wss"):
        return None  # inproc://, ucx:// and other transports: left to Dask to reach
    if not host:
        return f"HUGGINGGPT_DASK_ADDRESS={shown!r} names no host: give tcp://host:8786"
    try:
        socket.create_connection((host, port), timeout=connect_timeout).close()
    except OSError as exc:
        return (
            f"the Dask scheduler at HUGGINGGPT_DASK_ADDRESS={shown} cannot be reached ({exc}); start it, "
            "set HUGGINGGPT_DASK_ADDRESS to a running scheduler, unset it for a local cluster, or set "
            "HUGGINGGPT_TASK_RUNNER=threads"
        )
    return None


def runtime_problems(settings: Settings) -> list[str]:
    """Every setting that validates but cannot work on this machine: the device, the task runner. Checked before
    any LLM call, so a run that cannot run its models spends none."""
    return [p for p in (device_problem(settings.device), dask_problem(settings)) if p is not None]


def check_runtime(settings: Settings) -> None:
    """Raise :class:`RuntimeSettingError` naming what to set when :func:`runtime_problems` finds any."""
    problems = runtime_problems(settings)
    if problems:
        raise RuntimeSettingError("; ".join(problems))
