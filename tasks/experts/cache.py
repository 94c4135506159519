"""A bounded, thread-safe LRU cache of loaded models.

A model is loaded once per process even when several threads ask for it at the same time: each key has
its own load lock, so different models load concurrently while callers of the same model wait for the
first load. Each entry carries a lock that callers hold while running the model (fast tokenizers and
most models are not safe to call from several threads at once).

    cache = ModelCache(max_models=4)
    entry = cache.get_or_load(("text-classification", "distilbert/...", None, "cpu"), load)
    with entry.lock:
        result = entry.value(text)

A load started ahead of need (a prefetch, :mod:`tasks.prefetch`) is announced with :meth:`ModelCache.expect`:
until it ends, a caller of the same key waits for it instead of loading the model a second time. The time a
caller spends waiting for a model (its own load, or one under way) is added up per node by
:func:`track_model_wait`.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What the local backend keys models by: (task, model source, revision, device).
ModelKey = tuple[str, str, str | None, str]


@dataclass(eq=False)
class CacheEntry(Generic[T]):
    """A loaded model, the lock that serializes its use and how long it took to load."""

    key: Hashable
    value: T
    load_seconds: float
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class ModelWait:
    """Seconds callers in one context spent waiting for models that were not loaded yet."""

    seconds: float = 0.0


_wait: contextvars.ContextVar[ModelWait | None] = contextvars.ContextVar("model_wait", default=None)


def track_model_wait() -> ModelWait:
    """From now on in this context (a task run, a thread), add up the time :meth:`ModelCache.get_or_load` spends
    on models that are not loaded yet: a load of its own, or waiting for one under way (a cache hit adds nothing).
    Replaces the tracker this context had."""
    wait = ModelWait()
    _wait.set(wait)
    return wait


def _record_wait(seconds: float) -> None:
    wait = _wait.get()
    if wait is not None:
        wait.seconds += seconds


class ModelCache:
    """Least-recently-used cache of at most ``max_models`` loaded models."""

    def __init__(self, max_models: int = 4) -> None:
        if max_models < 1:
            raise ValueError(f"max_models must be at least 1, got {max_models}")
        _live_caches.add(self)
        self._max_models = max_models
        self._entries: OrderedDict[Hashable, CacheEntry[Any]] = OrderedDict()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._expected: dict[Hashable, Future[Any]] = {}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._loads = 0
        self._hits = 0
        self._evictions = 0
        self._load_seconds = 0.0

    @property
    def max_models(self) -> int:
        return self._max_models

    @max_models.setter
    def max_models(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"max_models must be at least 1, got {value}")
        with self._lock:
            self._max_models = value
            self._evict_over_limit()

    def get_or_load(self, key: Hashable, loader: Callable[[], T]) -> CacheEntry[T]:
        """Return the entry for ``key``, calling ``loader`` (once, whatever the number of callers) when absent.

        While a load announced with :meth:`expect` is under way, waits for it first (and loads only if it failed or
        its model was evicted since). An exception raised by ``loader`` propagates to the caller and nothing is
        cached.
        """
        with self._lock:
            entry = self._hit(key)
            if entry is not None:
                return entry
            expected = None if key in self._fulfilling_here() else self._expected.get(key)
        start = time.perf_counter()
        try:
            if expected is not None:
                with contextlib.suppress(Exception):
                    expected.result()
                with self._lock:
                    entry = self._hit(key)
                    if entry is not None:
                        return entry
            return self._load(key, loader)
        finally:
            _record_wait(time.perf_counter() - start)

    def expect(self, key: Hashable, future: Future[Any]) -> None:
        """Announce that ``future`` will load ``key``: other callers of ``key`` wait for it until it is done. The job
        behind ``future`` loads within :meth:`fulfilling` (so it does not wait for itself)."""
        with self._lock:
            self._expected[key] = future

        def done(_: Future[Any]) -> None:
            with self._lock:
                if self._expected.get(key) is future:
                    del self._expected[key]

        future.add_done_callback(done)

    @contextlib.contextmanager
    def fulfilling(self, key: Hashable) -> Iterator[None]:
        """Within the block, this thread is the load announced for ``key``: its calls do not wait for it."""
        here = self._fulfilling_here()
        here.add(key)
        try:
            yield
        finally:
            here.discard(key)

    def _fulfilling_here(self) -> set[Hashable]:
        keys: set[Hashable] | None = getattr(self._local, "fulfilling", None)
        if keys is None:
            keys = self._local.fulfilling = set()
        return keys

    def _load(self, key: Hashable, loader: Callable[[], T]) -> CacheEntry[T]:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                entry = self._hit(key)
                if entry is not None:
                    return entry
            start = time.perf_counter()
            value = loader()
            elapsed = time.perf_counter() - start
            entry = CacheEntry(key=key, value=value, load_seconds=elapsed)
            with self._lock:
                self._entries[key] = entry
                self._loads += 1
                self._load_seconds += elapsed
                self._key_locks.pop(key, None)
                self._evict_over_limit()
        return entry

    def get(self, key: Hashable) -> CacheEntry[Any] | None:
        """The entry for ``key`` if it is loaded (counted as a hit), else ``None``."""
        with self._lock:
            return self._hit(key)

    def evict(self, key: Hashable) -> bool:
        """Drop ``key`` from the cache; return whether it was there."""
        with self._lock:
            if self._entries.pop(key, None) is None:
                return False
            self._evictions += 1
            return True

    def clear(self) -> None:
        """Drop every entry (statistics are kept)."""
        with self._lock:
            self._evictions += len(self._entries)
            self._entries.clear()

    def keys(self) -> list[Hashable]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def stats(self) -> dict[str, Any]:
        """Counters since creation: ``loads``, ``hits``, ``evictions``, ``load_seconds`` and the current ``size``."""
        with self._lock:
            return {
                "loads": self._loads,
                "hits": self._hits,
                "evictions": self._evictions,
                "load_seconds": self._load_seconds,
                "size": len(self._entries),
                "max_models": self._max_models,
            }

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _hit(self, key: Hashable) -> CacheEntry[Any] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            self._hits += 1
        return entry

    def _evict_over_limit(self) -> None:
        while len(self._entries) > self._max_models:
            old_key, _ = self._entries.popitem(last=False)
            self._evictions += 1
            logger.info("evicted model %s from the cache", old_key)


_live_caches: weakref.WeakSet[ModelCache] = weakref.WeakSet()


def loaded_keys() -> list[Hashable]:
    """The keys loaded in every model cache of this process (what a pool worker holds)."""
    found: list[Hashable] = []
    for cache in list(_live_caches):
        found += cache.keys()
    return found


def default_cache(max_models: int = 4) -> ModelCache:
    """The process-wide cache, created on first call with ``max_models`` (later calls return the same one)."""
    from tasks.shared import shared

    return shared("model-cache", "default", lambda: ModelCache(max_models=max_models))
