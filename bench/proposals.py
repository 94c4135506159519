"""Changes to the request path proposed from the profiles, applied here to this process only, so the bench can
measure each against the code as it is, interleaved in the same run.

* ``shared_llm_client``: ``tasks.llm.LLMClient`` builds a new ``openai.OpenAI`` client for every stage (planning,
  selection, response), and each new client builds an httpx client whose TLS context loads the CA bundle (tens
  of milliseconds of CPU each, even for an ``http://`` endpoint). Proposed: one client per process for the same
  (key, base URL, timeout, retries), e.g. a ``functools.lru_cache`` factory in ``tasks/llm.py``.
* ``result_storage_block``: ``configured_flow`` passes the result storage as a block slug
  (``local-file-system/hugginggpt-results-...``), which Prefect loads from its API at the start of every flow run,
  and saves that block again on every call. Proposed: save it once per process and API, and pass the saved block
  itself (``with_options(result_storage=block)``), which Prefect uses as it is.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any


@contextlib.contextmanager
def shared_llm_client() -> Iterator[None]:
    import tasks.llm as llm

    real = llm.OpenAI

    @functools.lru_cache(maxsize=8)
    def shared(**kwargs: Any) -> Any:
        return real(**kwargs)

    llm.OpenAI = shared  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        llm.OpenAI = real  # type: ignore[misc]


@contextlib.contextmanager
def result_storage_block() -> Iterator[None]:
    from prefect.blocks.core import Block
    from prefect.settings import PREFECT_API_URL

    import flows.request as request

    real = request.results_block_ref
    saved: dict[tuple[str, str], Any] = {}

    def block(settings: Any) -> Any:
        key = (str(PREFECT_API_URL.value()), request.results_storage_url(settings))
        if key not in saved:
            saved[key] = Block.load(real(settings))  # saved once; the instance carries its document id
        return saved[key]

    request.results_block_ref = block  # type: ignore[assignment]
    try:
        yield
    finally:
        request.results_block_ref = real  # type: ignore[assignment]


PROPOSALS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "shared LLM client": shared_llm_client,
    "result storage block passed as an instance": result_storage_block,
}


@contextlib.contextmanager
def all_proposals() -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for make in PROPOSALS.values():
            stack.enter_context(make())
        yield
