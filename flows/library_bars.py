"""The libraries' progress bars, folded into node events: while :func:`library_progress` is active,
huggingface_hub's download bars report ``downloading`` with their bytes and transformers' weight-loading bars
``loading`` (:class:`flows.events.NodeEvent`), for the node the thread works for, and neither prints anything."""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flows.events import NodeEvent, emit
from tasks.prefetch import FETCHING_FOR


def _current_nodes() -> list[tuple[str, str]]:
    """The nodes this thread works for: the node of its task run, or those a prefetch fetches a model for."""
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is not None and ctx.task_run is not None:
        return [(str(ctx.task_run.flow_run_id), ctx.task_run.name)]
    fetching = FETCHING_FOR.get()
    return [(fetching[0], name) for name in fetching[1]] if fetching else []


class _Silent(io.TextIOBase):
    def write(self, text: str) -> int:
        return len(text)


def _download_bar_class(base: type) -> type:
    """huggingface_hub's tqdm, counting bytes for the node running in this thread and printing nothing."""

    class DownloadBar(base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(disable=False, file=_Silent())
            self._nodes = _current_nodes()
            self._last = 0.0
            super(base, self).__init__(*args, **kwargs)  # tqdm's own: the hub's would disable it again

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            now = time.monotonic()
            if self._nodes and (now - self._last >= 0.2 or (self.total and self.n >= self.total)):
                self._last = now
                for node in self._nodes:
                    emit(
                        NodeEvent(
                            *node,
                            "downloading",
                            detail=str(self.desc or ""),
                            done_bytes=int(self.n),
                            total_bytes=int(self.total) if self.total else None,
                        )
                    )
            return shown

    return DownloadBar


class _LoadingBar:
    """transformers' bar of a weight load: reports ``loading`` then ``running`` for the node, prints nothing."""

    def __init__(self, iterable: Any = None, *args: Any, desc: str | None = None, **kwargs: Any) -> None:
        self._iterable = iterable
        self._desc = desc or "loading"
        self._nodes = _current_nodes()
        self._ahead = bool(self._nodes) and FETCHING_FOR.get() is not None  # loaded ahead by a prefetch
        self._open = False

    def _start(self) -> None:
        if self._nodes and not self._open:
            self._open = True
            for node in self._nodes:
                emit(NodeEvent(*node, "loading", detail=self._desc + (" (ahead of the node)" if self._ahead else "")))

    def close(self) -> None:
        if self._nodes and self._open:
            self._open = False
            for node in self._nodes:  # a node that loaded its own model goes on; one loaded ahead waits its turn
                emit(
                    NodeEvent(
                        *node, "waiting" if self._ahead else "running", detail="model loaded" if self._ahead else ""
                    )
                )

    def __iter__(self) -> Iterator[Any]:
        self._start()
        try:
            yield from self._iterable or ()
        finally:
            self.close()

    def __enter__(self) -> _LoadingBar:
        self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float | None = 1) -> None:
        self._start()

    def __getattr__(self, name: str) -> Callable[..., None]:  # set_description, set_postfix, refresh, ...
        return lambda *args, **kwargs: None


_library_lock = threading.Lock()
_library_users = 0
_library_saved: dict[str, Any] = {}


@contextlib.contextmanager
def library_progress() -> Iterator[None]:
    """While the block runs, huggingface_hub's download bars and transformers' loading bars report to the channel
    instead of printing; transformers' warnings are kept to errors. Restored after the block."""
    global _library_users
    with _library_lock:
        _library_users += 1
        if _library_users == 1:
            _install()
    try:
        yield
    finally:
        with _library_lock:
            _library_users -= 1
            if _library_users == 0:
                _uninstall()


def _install() -> None:
    hub_tqdm = sys.modules.get("huggingface_hub.utils.tqdm")
    if hub_tqdm is None:
        import huggingface_hub.utils.tqdm  # noqa: F401

        hub_tqdm = sys.modules["huggingface_hub.utils.tqdm"]
    _library_saved["hub"] = hub_tqdm.tqdm
    hub_tqdm.tqdm = _download_bar_class(hub_tqdm.tqdm)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    _library_saved["hook"] = hf_logging.set_tqdm_hook(lambda factory, args, kwargs: _LoadingBar(*args, **kwargs))
    _library_saved["verbosity"] = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()


def _uninstall() -> None:
    sys.modules["huggingface_hub.utils.tqdm"].tqdm = _library_saved.pop("hub")
    if "hook" in _library_saved:
        from transformers.utils import logging as hf_logging

        hf_logging.set_tqdm_hook(_library_saved.pop("hook"))
        hf_logging.set_verbosity(_library_saved.pop("verbosity"))
