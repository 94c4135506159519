"""The memory budget: how large a model (in parameters) this machine runs locally by default.

A model's float32 weights with headroom for loading and running must fit in a share of the machine's memory;
``HUGGINGGPT_MAX_LOCAL_PARAMS`` overrides it. The availability rule (:mod:`tasks.availability`) refuses local runs over
the budget, and prefetch (:mod:`tasks.prefetch`) keeps its loads within it.
"""

from __future__ import annotations

import os

from tasks.settings import Settings

#: A model's weights on CPU are float32.
BYTES_PER_PARAM = 4
#: Loading and running need more than the weights: activations, a second copy while loading, the tokenizer.
HEADROOM = 1.5
#: The share of the machine's memory the local models may take (the rest: the OS, Prefect, other models).
MEMORY_FRACTION = 0.5


def total_memory() -> int | None:
    """The machine's physical memory in bytes, or ``None`` when the OS does not say."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def default_max_local_params(memory: int | None = None) -> int | None:
    """The largest model (parameters) run locally by default: ``params * BYTES_PER_PARAM * HEADROOM`` must stay within
    ``MEMORY_FRACTION`` of ``memory`` (default: this machine's). 24 GB gives 2B parameters: never a 6B model."""
    memory = total_memory() if memory is None else memory
    if memory is None:
        return None
    return int(memory * MEMORY_FRACTION / (BYTES_PER_PARAM * HEADROOM))


def local_budget(settings: Settings) -> tuple[int | None, str]:
    """The local parameter budget and where it comes from (for reasons)."""
    if settings.max_local_params is not None:
        return settings.max_local_params, "HUGGINGGPT_MAX_LOCAL_PARAMS"
    budget = default_max_local_params()
    gib = (total_memory() or 0) / 2**30
    return budget, f"the default for {gib:.0f} GiB of memory; raise HUGGINGGPT_MAX_LOCAL_PARAMS to allow more"
