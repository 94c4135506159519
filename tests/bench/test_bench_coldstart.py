"""The cold-start benchmark at a small size: the request flow prefetches models that download through
huggingface_hub from the fake Hub, in new processes with empty Hugging Face caches."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.coldstart import run
from bench.harness import Bench


@pytest.mark.usefixtures("prefect_server")
@pytest.mark.llm_http  # the measured runs are in new processes
def test_prefetch_overlaps_the_chain_s_downloads_and_loads(llm, tmp_path: Path) -> None:
    llm.set(respond="Done.")
    result = run(Bench(root=tmp_path, llm=llm, quick=True), download_seconds=0.5)
    base, pre = result["without_prefetch"], result["with_prefetch"]
    # both runs downloaded every model from the fake Hub (a cold start each)
    assert base["files_downloaded"] > 0 and pre["files_downloaded"] > 0
    # without prefetch every node waits for its own download and load; with it, the later nodes' models downloaded
    # during the first node's wait and loaded while it ran: what is left of their wait is at most the tail of a load
    assert all(n["model_wait_seconds"] > 0 for n in base["nodes"])
    for later, alone in zip(pre["nodes"][1:], base["nodes"][1:], strict=True):
        assert later["model_wait_seconds"] < alone["model_wait_seconds"] / 2
    assert pre["makespan_seconds"] < base["makespan_seconds"]
