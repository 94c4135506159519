"""Where the tests find the project and the reference data beside it."""

from __future__ import annotations

from pathlib import Path

#: the repository's root folder
ROOT = Path(__file__).resolve().parents[1]
#: the public reference data (TaskBench, HuggingGPT's catalog) kept in ``shared/reference`` beside the repository
REFERENCE = ROOT.parent / "shared" / "reference"
