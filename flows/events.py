"""The progress channel: what a run reports while it runs, and how the reports reach whoever listens.

The run reports to an in-process channel (:func:`emit`, :func:`subscribe`):

- the request flow announces its plan and model choices (:func:`planned`): every node starts ``waiting``;
- Prefect's own state hooks of the node task runs (:data:`NODE_STATE_HOOKS`) report ``running``, ``done``,
  ``cached``, ``skipped`` and ``failed``, with a retry's attempt number;
- the libraries' progress bars report ``downloading`` and ``loading`` (:mod:`flows.library_bars`);
- a batch reports each finished line (:class:`LineEvent`).

Events are process-local: under a Dask task runner the nodes run in other processes, and only the plan and the
final summary are shown. The views that read them are :mod:`flows.progress`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from tasks.schemas import CACHED_SUFFIX

logger = logging.getLogger(__name__)

NODE_STATES = ("waiting", "downloading", "loading", "running", "done", "cached", "skipped", "failed")
FINAL_STATES = frozenset({"done", "cached", "skipped", "failed"})


@dataclass(frozen=True)
class PlanEvent:
    """A request's plan and model choices are known: its nodes are waiting."""

    flow_run_id: str
    run_name: str
    nodes: tuple[tuple[str, str, str], ...]  # (node name, model or "", why)
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class NodeEvent:
    """A node of a request changed state."""

    flow_run_id: str
    node: str
    state: str
    detail: str = ""
    done_bytes: int | None = None
    total_bytes: int | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class LineEvent:
    """A batch line finished (``done`` of ``total`` lines have)."""

    line: int
    status: str
    done: int
    total: int
    ident: str = ""
    at: float = field(default_factory=time.monotonic)


Event = PlanEvent | NodeEvent | LineEvent
_listeners: list[Callable[[Event], None]] = []
_listeners_lock = threading.Lock()


def emit(event: Event) -> None:
    """Hand ``event`` to every subscriber; a failing subscriber never fails the run."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        try:
            listener(event)
        except Exception:  # a view must not break a run
            logger.debug("progress listener failed", exc_info=True)


@contextlib.contextmanager
def subscribe(listener: Callable[[Event], None]) -> Iterator[None]:
    """Receive every event emitted in this process while the block runs."""
    with _listeners_lock:
        _listeners.append(listener)
    try:
        yield
    finally:
        with _listeners_lock:
            _listeners.remove(listener)


def planned(flow_run_id: str, run_name: str, nodes: Sequence[Any], assignments: Sequence[Any]) -> None:
    """Announce a request's nodes (``PlanNode``) and their models (``Assignment``)."""
    by_node = {a.node_id: a for a in assignments}
    emit(
        PlanEvent(
            flow_run_id,
            run_name,
            tuple(
                (
                    n.name,
                    by_node[n.id].model if n.id in by_node else "",
                    by_node[n.id].reason if n.id in by_node else "",
                )
                for n in nodes
            ),
        )
    )


_PREFECT_STATES = {"Completed": "done", "Cached": "cached", "Skipped": "skipped"}


#: task runs that ended failed, or that will end skipped because an upstream one did (their hooks run before their
#: dependents start): a node whose upstream is among them is not reported ``running``, it is about to be skipped
_ENDED_BADLY: dict[str, None] = {}
_ENDED_BADLY_KEPT = 10_000
_ended_lock = threading.Lock()


def _ended_badly(task_run: Any, *, mark: bool = False) -> bool:
    """Whether an upstream task run of ``task_run`` ended badly; with ``mark``, ``task_run`` is remembered as one."""
    upstream = {str(getattr(r, "id", "")) for r in (getattr(task_run, "task_inputs", None) or {}).get("upstream", [])}
    with _ended_lock:
        blocked = any(u in _ENDED_BADLY for u in upstream)
        if mark or blocked:
            _ENDED_BADLY[str(task_run.id)] = None
            while len(_ENDED_BADLY) > _ENDED_BADLY_KEPT:
                _ENDED_BADLY.pop(next(iter(_ENDED_BADLY)))
    return blocked


def node_state_hook(task: Any, task_run: Any, state: Any) -> None:
    """A Prefect state hook of the node task runs: reports the state they entered (a node about to be skipped, as
    an upstream node ended badly, is not reported running)."""
    name = "running" if state.is_running() else _PREFECT_STATES.get(state.name, "failed" if state.is_failed() else None)
    if name is None or (name == "running" and _ended_badly(task_run)):
        return
    if name == "failed":
        _ended_badly(task_run, mark=True)
    detail = (
        (state.message or "").removeprefix(f"{str(task_run.name).removesuffix(CACHED_SUFFIX)} ")
        if name in ("failed", "cached", "skipped")
        else ""
    )
    if name == "running" and task_run.run_count > 1:
        detail = f"attempt {task_run.run_count}"
    node = str(task_run.name).removesuffix(CACHED_SUFFIX)
    emit(NodeEvent(str(task_run.flow_run_id), node, name, detail=detail))


#: the ``on_running``, ``on_completion`` and ``on_failure`` hooks of the node task
NODE_STATE_HOOKS: dict[str, list[Callable[..., None]]] = {
    "on_running": [node_state_hook],
    "on_completion": [node_state_hook],
    "on_failure": [node_state_hook],
}
