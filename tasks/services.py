"""What a run uses, built from :class:`~tasks.settings.Settings` in one place, and swapped for tests.

A run uses a handful of services: the chat model that plans, selects and answers (:class:`~tasks.llm.ChatModel`),
the local and remote expert backends that run the plan's nodes, :class:`~tasks.availability.Availability` (where a
model can run), and the artifact store of each run. :class:`Services` holds them for one set of settings, each built
on first use (the backends are shared by the process, :mod:`tasks.shared`). :func:`services_for` is the one
resolver the flow and its thin Prefect tasks call; the stages' cores take the service itself as an argument.

:func:`override` swaps any of them for everything run inside a ``with`` block, in the spirit of pydantic-ai's
``Agent.override``: the flow, the batch, chat, and the nodes the flow submits to its thread pool (Prefect copies the
caller's context into each task run's thread)::

    from tasks.llm import FunctionModel, scripted
    from tasks.services import override

    with override(chat_model=FunctionModel(scripted(plan='{"tasks": []}', respond="Hello."))):
        summary = run_request(RequestSpec(request="hi"))

No environment variable and no HTTP server is involved. The override lives in a :class:`contextvars.ContextVar`, so
it reaches threads that run in a copy of the caller's context (Prefect's task runs, :mod:`tasks.timebound`), but not
other processes (a Dask cluster's workers, a deployment's worker).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from functools import cached_property
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from tasks.settings import Settings
from tasks.shared import shared

if TYPE_CHECKING:
    from tasks.availability import Availability
    from tasks.experts.base import ExpertBackend
    from tasks.experts.local import LocalBackend
    from tasks.experts.remote import RemoteBackend
    from tasks.llm import ChatModel
    from tasks.storage import ArtifactStore

#: The services :func:`override` may swap, with what each one is.
SERVICES: Mapping[str, str] = {
    "chat_model": "the ChatModel that plans, selects and answers",
    "local_backend": "the ExpertBackend that runs nodes assigned 'local'",
    "remote_backend": "the ExpertBackend that runs nodes assigned 'remote'",
    "availability": "the Availability that decides where a model can run",
    "store_factory": "a function run_id -> ArtifactStore, where a run keeps its files",
    "clock": "a function () -> seconds since the epoch, the wall clock that ages cached results",
}

_NOTHING: Mapping[str, Any] = MappingProxyType({})
#: run artifact stores a :class:`Services` keeps made (the oldest is dropped past this)
_STORES_KEPT = 64
_overrides: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar("hugginggpt_services", default=_NOTHING)
_in_use: contextvars.ContextVar[tuple[Services, Mapping[str, Any]] | None] = contextvars.ContextVar(
    "hugginggpt_services_in_use", default=None
)


class Services:
    """The services of a run under ``settings``; any of them can be given, the others are built on first use.

    Attributes (see :data:`SERVICES`): ``chat_model``, ``local_backend``, ``remote_backend``, ``availability``,
    ``store_factory``, ``clock``; :meth:`store` gives one run's artifact store.
    """

    def __init__(self, settings: Settings, **given: Any) -> None:
        unknown = sorted(set(given) - set(SERVICES))
        if unknown:
            raise TypeError(f"unknown service(s) {', '.join(unknown)}; expected some of {', '.join(SERVICES)}")
        self.settings = settings
        self.given = frozenset(given)
        self._stores: dict[str, ArtifactStore] = {}
        self._stores_lock = threading.Lock()
        self.__dict__.update(given)  # cached_property reads the instance's own value first

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """Every service as the settings name it (no override applied)."""
        return cls(settings)

    def replace(self, **changes: Any) -> Services:
        """A copy with ``changes`` given (the same settings)."""
        return Services(self.settings, **{**{name: getattr(self, name) for name in self.given}, **changes})

    # -- the services ------------------------------------------------------------------------------------------

    @cached_property
    def local_backend(self) -> ExpertBackend:
        return local_backend_for(self.settings)

    @cached_property
    def remote_backend(self) -> ExpertBackend:
        return remote_backend_for(self.settings)

    @cached_property
    def chat_model(self) -> ChatModel:
        return chat_model_for(self.settings, cache=getattr(self.local_backend, "cache", None))

    @cached_property
    def availability(self) -> Availability:
        from tasks.availability import Availability
        from tasks.experts.remote import RemoteBackend

        remote = self.remote_backend
        return Availability(self.settings, remote=remote if isinstance(remote, RemoteBackend) else None)

    @cached_property
    def store_factory(self) -> Callable[[str], ArtifactStore]:
        from tasks.storage import store_for

        settings = self.settings
        return lambda run_id: store_for(settings, run_id)

    @cached_property
    def clock(self) -> Callable[[], float]:
        return time.time

    def store(self, run_id: str) -> ArtifactStore:
        """The artifact store of run ``run_id``, made once: a run's nodes share it (a store holds nothing that
        changes once made, and making one resolves its root)."""
        with self._stores_lock:
            store = self._stores.get(run_id)
            if store is None:
                store = self._stores[run_id] = self.store_factory(run_id)
                while len(self._stores) > _STORES_KEPT:  # a long-lived service (a server, a batch) sees many runs
                    del self._stores[next(iter(self._stores))]
            return store

    def backends(self) -> dict[str, ExpertBackend]:
        """The expert backends by the name an assignment gives (``local``, ``remote``)."""
        return {"local": self.local_backend, "remote": self.remote_backend}

    @property
    def chat_model_given(self) -> bool:
        """Whether the chat model was given rather than built from the settings (then nothing needs preparing)."""
        return "chat_model" in self.given


def services_for(settings: Settings) -> Services:
    """The services of a run under ``settings``: those of the innermost :func:`override` around the caller, the
    others built from the settings. The one resolver of the flow, the batch, chat and their Prefect tasks.

    Inside :func:`in_use` for these very settings (and the same overrides), the services in use: a flow run's
    nodes, in its threads, share the flow's services instead of building them again each."""
    running = _in_use.get()
    if running is not None and running[0].settings is settings and running[1] is _overrides.get():
        return running[0]
    return Services(settings, **_overrides.get())


@contextlib.contextmanager
def in_use(services: Services) -> Iterator[Services]:
    """Within the block (this thread, and the task runs submitted from it), :func:`services_for` called with
    ``services.settings`` gives ``services`` back, unless an :func:`override` inside the block changes them."""
    token = _in_use.set((services, _overrides.get()))
    try:
        yield services
    finally:
        _in_use.reset(token)


@contextlib.contextmanager
def override(**services: Any) -> Iterator[Mapping[str, Any]]:
    """Swap services for everything run inside the block (this thread, and Prefect task runs submitted from it).

    Keywords are the names of :data:`SERVICES`: ``chat_model`` (e.g. a :class:`~tasks.llm.FunctionModel`),
    ``local_backend``, ``remote_backend``, ``availability``, ``store_factory``, ``clock``. Blocks nest: an inner
    one swaps on top of the outer one, and each block's end restores what was before it. Yields the services in
    force.
    """
    unknown = sorted(set(services) - set(SERVICES))
    if unknown:
        raise TypeError(f"unknown service(s) {', '.join(unknown)}; expected some of {', '.join(SERVICES)}")
    current = MappingProxyType({**_overrides.get(), **services})
    token = _overrides.set(current)
    try:
        yield current
    finally:
        _overrides.reset(token)


def overridden() -> Mapping[str, Any]:
    """The services swapped by the :func:`override` blocks around the caller."""
    return dict(_overrides.get())


# -- building from settings: the one place ----------------------------------------------------------------------


def local_backend_for(settings: Settings) -> LocalBackend:
    """The process-wide local backend for these settings (models stay loaded across nodes and requests)."""
    from tasks.experts.cache import ModelCache
    from tasks.experts.local import LocalBackend

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    device = settings.resolved_device()
    key = (
        device,
        settings.max_models,
        settings.max_new_tokens,
        token,
        settings.trust_remote_code,
        settings.speecht5_vocoder,
        settings.speaker_embeddings,
    )
    return shared(
        "local-backend",
        key,
        lambda: LocalBackend(
            cache=ModelCache(max_models=settings.max_models),
            device=device,
            max_new_tokens=settings.max_new_tokens,
            token=token,
            trust_remote_code=settings.trust_remote_code,
            speecht5_vocoder=settings.speecht5_vocoder,
            speaker_embeddings=str(settings.speaker_embeddings) if settings.speaker_embeddings else None,
        ),
    )


def remote_backend_for(settings: Settings) -> RemoteBackend:
    """The process-wide remote backend for these settings."""
    from tasks.experts.remote import RemoteBackend

    token = settings.hf_token.get_secret_value() if settings.hf_token else None
    key = (
        token,
        settings.remote_timeout,
        settings.remote_job_timeout,
        settings.hf_inference_url,
        settings.hf_provider,
        settings.remote_retries,
        settings.remote_retry_wait,
        settings.max_new_tokens,
    )
    return shared("remote-backend", key, lambda: RemoteBackend.from_settings(settings))


def chat_model_for(settings: Settings, *, local: bool = False, cache: Any = None) -> ChatModel:
    """The controller the settings name: the OpenAI-compatible endpoint when ``OPENAI_API_KEY`` or
    ``OPENAI_BASE_URL`` is set (and not ``local``), else the embedded model ``HUGGINGGPT_LOCAL_LLM`` (loaded on its
    first call, into ``cache``: by default the local backend's, so it counts against ``HUGGINGGPT_MAX_MODELS``)."""
    if settings.llm_configured and not local:
        from tasks.llm import LLMClient

        return LLMClient(settings)
    from tasks.local_llm import LocalChatModel

    if cache is None:
        cache = getattr(local_backend_for(settings), "cache", None)
    return LocalChatModel.from_settings(settings, cache=cache)


def describe_controller(settings: Settings, *, local: bool = False) -> str:
    """One line: which controller answers (see :func:`chat_model_for`), and how to switch to a stronger one."""
    given = _overrides.get().get("chat_model")
    if given is not None and not local:
        return f"controller: {getattr(given, 'model', type(given).__name__)} (given to this process)"
    if settings.llm_configured and not local:
        where = settings.openai_base_url or "https://api.openai.com/v1"
        return f"controller: {settings.llm_model} at {where}"
    from tasks.local_llm import describe_local

    return describe_local(settings)


def prepare_controller(settings: Settings, *, local: bool = False) -> None:
    """Make sure the controller can answer before a run starts: nothing to do for an endpoint or a chat model given
    by :func:`override`; for the embedded model, its weights on this machine, downloaded now (with progress bars)
    when they are not.

    Raises :class:`~tasks.settings.LLMNotConfiguredError` saying what to set when the weights are neither here nor
    downloadable.
    """
    if not local and ("chat_model" in _overrides.get() or settings.llm_configured):
        return
    from tasks.local_llm import LocalLLMUnavailableError, fetch_local_llm
    from tasks.settings import LLMNotConfiguredError

    try:
        fetch_local_llm(settings.local_llm)
    except LocalLLMUnavailableError as exc:
        raise LLMNotConfiguredError(str(exc)) from None
