"""What every expert backend takes and gives back.

An expert backend runs one task with one model on resolved inputs:

* inputs: a dict from argument name (as in the task table) to a value:
  ``str`` for text, ``PIL.Image.Image`` for images, :class:`Audio` for audio,
  ``bytes`` for tables (CSV) and videos;
* output: an :class:`ExpertOutput` holding one value per produced modality.

Backends never write files: the executor stores what they return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from tasks.schemas import ModelSpec

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Audio:
    """Mono audio: float32 samples in [-1, 1] and their sampling rate."""

    array: np.ndarray
    sampling_rate: int

    @property
    def seconds(self) -> float:
        return float(len(self.array)) / float(self.sampling_rate)


ExpertValue = "str | Image | Audio | bytes"
ExpertInputs = dict[str, Any]


@dataclass
class ExpertOutput:
    """What a model produced, one field per modality (``None`` where it produced nothing of that kind)."""

    text: str | None = None
    image: Image | None = None
    audio: Audio | None = None
    video: bytes | None = None
    json: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class ExpertError(RuntimeError):
    """A model failed to load or to run; the message names the model and the cause."""


class CannotRunHereError(ExpertError):
    """This model cannot do this here (it ran out of memory while loading, needs a package that is not installed,
    or cannot honour what the node asks, such as another target language): another candidate may."""


class ExpertBackend(Protocol):
    """Runs one task with one model."""

    name: str

    def run(self, task: str, model: ModelSpec, inputs: ExpertInputs) -> ExpertOutput: ...


#: ``choose(spec) -> (backend name or None, reason)``: where a candidate runs (see :mod:`tasks.availability`).
Chooser = Callable[[ModelSpec], tuple[str | None, str]]
