"""Node task runs keep their tags without a concurrency round trip per node.

Before Prefect's task engine runs a task run that carries tags, it asks the API for a slot of each tag's
concurrency limit (``SyncTaskRunEngine.start`` -> ``prefect.concurrency._sync.concurrency`` with the names
``tag:<tag>``), whether such a limit exists or not: a request that goes through Prefect's event-loop thread and a
queue per tag set, which serves the nodes one after another. With every node tagged (``task:``, ``model:``,
``backend:``, and the run's own tags) that cost each node 0.05 to 0.2 s before it started, on the critical path of
every chain.

So the request flow reads once per run which tags have a limit (:func:`read_limited_tags`, one API call, started
in a thread when the run starts by :func:`reading_limited_tags`, so that it overlaps planning), and
:func:`node_tagging` submits each node accordingly:

* a node with a limited tag carries all its tags from the start: Prefect takes (and holds) its slots as ever, so
  ``prefect concurrency-limit create model:big/model 1`` bounds those nodes across runs and workers;
* any other node is submitted without tags, and its tags are put on its task run when it starts running
  (:class:`ApplyTags`, an ``on_running`` hook): the next state change (completed, failed, retrying) carries them to
  the API, so the UI's tag filters still find every node.

The same rule holds for the task runs that are not nodes (the planning, selection and answering stages, and a
batch's plan and line task runs), which carry only the tags of their context: :func:`untagged`. Left to Prefect,
each of them would also make a round trip; and since Prefect keeps one acquisition service, with its own thread,
for every distinct tag set it has seen, a batch whose lines each have their own tags would add a thread per line
for the life of the process.

A limit created while a run executes applies to that run's nodes only if it existed when the run read them.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

T = TypeVar("T")

TAG_LIMIT_PREFIX = "tag:"
_PAGE = 200  # the Prefect API's default page size

log = logging.getLogger(__name__)


#: the read :func:`reading_limited_tags` started for the run around the caller
_ahead: contextvars.ContextVar[concurrent.futures.Future[frozenset[str] | None] | None] = contextvars.ContextVar(
    "hugginggpt_limited_tags", default=None
)


@contextlib.contextmanager
def reading_limited_tags() -> Iterator[None]:
    """Start reading the limited tags now, in a thread; :func:`read_limited_tags` inside the block waits for that
    read rather than making its own (a run reads them once, while it plans, not when its first nodes start)."""
    ahead: concurrent.futures.Future[frozenset[str] | None] = concurrent.futures.Future()
    context = contextvars.copy_context()  # the caller's Prefect settings: the same API

    def read() -> None:
        try:
            ahead.set_result(context.run(_read_limited_tags))
        except BaseException as exc:
            ahead.set_exception(exc)

    threading.Thread(target=read, name="hugginggpt-limited-tags", daemon=True).start()
    token = _ahead.set(ahead)
    try:
        yield
    finally:
        _ahead.reset(token)


def read_limited_tags() -> frozenset[str] | None:
    """The tags that have a concurrency limit on the Prefect API (``prefect concurrency-limit create TAG N`` keeps
    it as the limit named ``tag:TAG``), in one request (more only past 200 limits). ``None`` when the API cannot
    say: then every tag counts as limited, which is Prefect's own behaviour. Inside :func:`reading_limited_tags`,
    the answer of the read it started."""
    ahead = _ahead.get()
    if ahead is not None:
        return ahead.result()
    return _read_limited_tags()


def _read_limited_tags() -> frozenset[str] | None:
    from prefect.client.orchestration import get_client

    tags: set[str] = set()
    try:
        with get_client(sync_client=True) as client:
            offset = 0
            while True:
                page = client.read_global_concurrency_limits(limit=_PAGE, offset=offset)
                names = [lim.name for lim in page]
                tags |= {n.removeprefix(TAG_LIMIT_PREFIX) for n in names if n.startswith(TAG_LIMIT_PREFIX)}
                if len(page) < _PAGE:
                    return frozenset(tags)
                offset += _PAGE
    except Exception as exc:  # the API is unreachable or refuses: keep Prefect's per-node acquisition
        log.warning("could not read the tag concurrency limits (%s): every node acquires its tags' slots", exc)
        return None


@dataclass(frozen=True)
class ApplyTags:
    """An ``on_running`` hook that adds ``tags`` to its task run; the next state event carries them to the API.
    A class rather than a closure, so that it pickles for a Dask task runner."""

    tags: tuple[str, ...]

    @property
    def __name__(self) -> str:  # how Prefect names a hook in its logs
        return "apply-tags"

    def __call__(self, task: Any, task_run: Any, state: Any) -> None:
        task_run.tags = sorted(set(task_run.tags or ()) | set(self.tags))


def is_limited(tags: Iterable[str], limited: frozenset[str] | None) -> bool:
    """Whether a task run with ``tags`` must acquire concurrency slots (``limited`` is ``None`` when unknown)."""
    tags = set(tags)
    return bool(tags) and (limited is None or not limited.isdisjoint(tags))


@contextlib.contextmanager
def node_tagging(tags: set[str], limited: frozenset[str] | None) -> Iterator[dict[str, Any]]:
    """Within the block, submit a node's task run with the options it yields (merge them into ``with_options``).

    ``tags`` are the node's own; the tags of the surrounding context (``with prefect.tags(...)``: ``hugginggpt``,
    a batch's or a chat's) count too. A node with a limited tag gets them all as task tags; any other gets none
    (the context's are hidden from the submission) and an :class:`ApplyTags` hook that adds them all when it
    starts running."""
    from prefect.context import TagsContext

    every = set(tags) | set(TagsContext.get().current_tags or ())
    if not every or is_limited(every, limited):  # no tag at all: nothing to acquire, nothing to add later
        yield {"tags": tags, "on_running": []}
        return
    with TagsContext(current_tags=set()):
        yield {"tags": set(), "on_running": [ApplyTags(tuple(sorted(every)))]}


@contextlib.contextmanager
def untagged(task: T, limited: frozenset[str] | Literal["read"] | None = "read") -> Iterator[T]:
    """Within the block, call or submit the Prefect task it yields (``task`` itself, or a copy with an
    :class:`ApplyTags` hook): the tags of the surrounding context reach its task run without a concurrency round
    trip, unless one of them has a limit (``limited``, as :func:`read_limited_tags` says; by default it is read,
    which inside :func:`reading_limited_tags` waits for the run's one read)."""
    known = read_limited_tags() if limited == "read" else limited
    with node_tagging(set(), known) as options:
        hooks = options["on_running"]
        prefect_task: Any = task
        yield prefect_task.with_options(on_running=[*prefect_task.on_running_hooks, *hooks]) if hooks else task
