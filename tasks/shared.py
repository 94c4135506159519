"""What a process keeps for every run in it: the one home of the process-wide caches.

Each object is built from settings on first use and then shared by every node, stage and flow run of the process,
keyed by the settings it was built from: the local expert backend (and the models it holds), the remote backend,
the ``openai`` client, the Hub facts, the saved Prefect results block. Nothing else in the project keeps state at
module level (the backends' task registries, ``tasks/experts/local/registry.py`` and
``tasks/experts/remote/registry.py``, are filled once at import and never change); :func:`clear` drops it all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

_items: dict[tuple[str, Hashable], Any] = {}
_lock = threading.RLock()  # a build may ask for another shared object (the embedded controller: the backend)


def shared(kind: str, key: Hashable, build: Callable[[], T]) -> T:
    """The ``kind`` object built for ``key``: built once by ``build``, then the same object for every caller."""
    with _lock:
        try:
            return _items[(kind, key)]
        except KeyError:
            value = _items[(kind, key)] = build()
            return value


def built(kind: str) -> list[Any]:
    """Every ``kind`` object built so far."""
    with _lock:
        return [value for (k, _), value in _items.items() if k == kind]


def clear(kind: str | None = None) -> None:
    """Forget every shared object (of ``kind``): the next caller builds a new one."""
    with _lock:
        for item in [k for k in _items if kind is None or k[0] == kind]:
            del _items[item]
