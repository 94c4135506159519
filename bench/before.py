"""The request path as it was before four changes that profiles called for, restored in this process only, so
the bench measures what each change saves against the code as it is, in the same run.

* ``new_llm_client_per_stage``: ``tasks.llm.LLMClient`` built a new ``openai.OpenAI`` client for every stage
  (planning, selection, response); each new client builds an HTTP client whose TLS context loads the CA bundle
  (tens of milliseconds of CPU each, even for an ``http://`` endpoint). Now: ``tasks.llm.shared_openai_client``,
  one client per process for the same key, base URL, timeout and retries.
* ``result_storage_by_slug``: the results block was saved on every call and passed as its slug
  (``local-file-system/hugginggpt-results-...``), which Prefect loads from its API at the start of every flow
  run. Now: ``flows.prefect_setup.results_block`` saves it once per process and API, and the run uses the saved
  instance.
* ``every_node_acquires_its_tags``: every node task run carried its tags (``task:``, ``model:``, ``backend:``) when
  submitted, so Prefect's task engine asked the API for a slot of each tag's concurrency limit before running it,
  whether a limit existed or not (``SyncTaskRunEngine.start`` -> ``prefect.concurrency._sync.concurrency``). Now:
  :mod:`flows.tag_limits` reads once per run which tags have a limit, and only nodes with such a tag acquire.
* ``task_options_per_node``: every node's task was built with ``run_node.with_options(...)``, and Prefect's
  ``Task.__init__`` reads the function's source (``inspect.getsource``) each time: 10 to 40 ms per node on the
  thread that submits them all. Now: nodes with the same options share one task, named on a copy
  (``flows.request._named``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def new_llm_client_per_stage() -> Iterator[None]:
    import tasks.llm as llm

    shared = llm.shared_openai_client

    def fresh(api_key: str, base_url: str | None, timeout: float, max_retries: int) -> Any:
        return llm.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)

    llm.shared_openai_client = fresh  # type: ignore[assignment]
    try:
        yield
    finally:
        llm.shared_openai_client = shared


@contextlib.contextmanager
def result_storage_by_slug() -> Iterator[None]:
    import flows.prefect_setup as request
    from tasks.shared import clear

    saved_once = request.results_block

    def save_every_time(settings: Any) -> Any:
        clear("results-block")
        block = saved_once(settings)
        return type(block).load(block._block_document_name)  # what Prefect did with the slug on every run

    request.results_block = save_every_time  # type: ignore[assignment]
    try:
        yield
    finally:
        request.results_block = saved_once


@contextlib.contextmanager
def every_node_acquires_its_tags() -> Iterator[None]:
    import flows.tag_limits as tag_limits

    is_limited = tag_limits.is_limited

    def always(tags: Any, limited: Any) -> bool:
        return bool(set(tags))  # as if every tag had a limit: Prefect's engine acquires for all of them

    tag_limits.is_limited = always  # type: ignore[assignment]
    try:
        yield
    finally:
        tag_limits.is_limited = is_limited


@contextlib.contextmanager
def task_options_per_node() -> Iterator[None]:
    import flows.request as request

    named = request._named

    def with_options(task: Any, name: str) -> Any:
        return task.with_options(name=name, task_run_name=name)

    request._named = with_options  # type: ignore[assignment]
    try:
        yield
    finally:
        request._named = named


BEFORE: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "a new LLM client for every stage": new_llm_client_per_stage,
    "result storage saved on every call and passed as a slug": result_storage_by_slug,
    "every node acquiring its tags' concurrency slots": every_node_acquires_its_tags,
    "a task built with with_options for every node": task_options_per_node,
}


@contextlib.contextmanager
def as_before() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for make in BEFORE.values():
            stack.enter_context(make())
        yield
