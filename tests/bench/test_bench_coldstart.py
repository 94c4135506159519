"""The cold-start benchmark at a small size: the request flow prefetches models that download through
huggingface_hub from the fake Hub, in new processes with empty Hugging Face caches."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench.coldstart import run
from bench.harness import Bench


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.llm_http  # the measured runs are in new processes
def test_prefetch_overlaps_the_chain_s_downloads_and_loads(llm, tmp_path: Path) -> None:
    llm.set(respond="Done.")
    result = run(Bench(root=tmp_path, llm=llm, quick=True), download_seconds=0.5)
    base, pre = result["without_prefetch"], result["with_prefetch"]
    # both runs downloaded every model from the fake Hub (a cold start each)
    assert base["files_downloaded"] > 0 and pre["files_downloaded"] > 0
    # without prefetch each node's weights come down only once the node before it has finished (a chain); with
    # it, every later node's weights were already coming down before the first node finished
    for nodes, started, prefetched in (
        (base["nodes"], base["weights_started"], False),
        (pre["nodes"], pre["weights_started"], True),
    ):
        first_done = nodes[0]["finished_at"]
        for before, later in itertools.pairwise(nodes):
            began = started[later["model"]]
            assert began is not None, (later, started)
            if prefetched:
                assert began < first_done, (later["model"], began, first_done)
            else:
                assert began >= before["finished_at"], (later["model"], began, before["finished_at"])
    assert all(n["model_wait_seconds"] > 0 for n in base["nodes"])
