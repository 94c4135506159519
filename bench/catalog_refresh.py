"""``python -m bench.catalog_refresh [--models N] [--latency SECONDS] [--workers W]``

How long ``hugginggpt catalog refresh`` takes to ask the Hub about a long listing: the same ``refreshed_entries``
against ``tests/fake_hub.py`` (huggingface_hub's real client) answering each ``model_info`` after ``--latency``
seconds, as the real Hub does, once with ``--workers`` calls in flight and once one at a time (the baseline, in
the same run). Prints one line per figure and the speed-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Sequence

from huggingface_hub import constants

from flows.models_cli import REFRESH_WORKERS, refreshed_entries
from tests.fake_hub import FakeHub, HubModel

TASK = "text-classification"


def measure(models: int, latency: float, workers: int) -> dict[str, float]:
    """Seconds to refresh ``models`` models with ``workers`` calls in flight and with one."""
    hub = FakeHub(info_delay=latency).start()
    saved = (constants.ENDPOINT, constants.HF_HUB_OFFLINE)
    try:
        for n in range(models):
            hub.add(HubModel(id=f"acme/model-{n}", pipeline_tag=TASK, model_type="bert", params=10**6, downloads=n))
        constants.ENDPOINT, constants.HF_HUB_OFFLINE = hub.url, False
        figures: dict[str, float] = {}
        for label, width in (("concurrent", workers), ("serial", 1)):
            t0 = time.perf_counter()
            entries, skipped = refreshed_entries([TASK], models, set(), {}, workers=width)
            figures[label] = time.perf_counter() - t0
            if len(entries) != models or skipped:
                raise RuntimeError(f"{label}: {len(entries)} entries, {len(skipped)} skipped of {models}")
        return figures
    finally:
        constants.ENDPOINT, constants.HF_HUB_OFFLINE = saved
        hub.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.catalog_refresh", description=__doc__.split("\n\n")[1])
    parser.add_argument("--models", type=int, default=3000, help="models in the listing (3000)")
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per model_info answer (0.05)")
    parser.add_argument("--workers", type=int, default=REFRESH_WORKERS, help=f"calls in flight ({REFRESH_WORKERS})")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="bench-refresh-"))
    figures = measure(args.models, args.latency, args.workers)
    print(
        f"catalog refresh of {args.models} models, {args.latency * 1000:.0f} ms per model_info answer, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"  {args.workers} in flight: {figures['concurrent']:.1f} s")
    print(f"  one at a time (baseline): {figures['serial']:.1f} s")
    print(f"  speed-up: {figures['serial'] / figures['concurrent']:.1f}x")


if __name__ == "__main__":
    main()
