"""Benchmarks of hugginggpt-prefect: each figure beside a baseline measured in the same run (``python -m bench``)."""

import sys
import time


def log(message: str) -> None:
    """Progress, on stderr (stdout carries only the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
