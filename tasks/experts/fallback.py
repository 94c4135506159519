"""Falling back to the next candidate when a model fails.

:func:`run_with_fallback` runs the candidates in order until one works, recording every attempt; which backend runs
each candidate (or none) is the ``choose`` function's answer, from :mod:`tasks.availability`.

Skipped candidates (``choose`` says no backend can run them, or loading one ran out of memory:
:class:`~tasks.experts.base.CannotRunHereError`) are recorded as attempts with ``skipped=True`` and the reason, and
are not counted against ``max_attempts``: the bound is on models actually tried (loaded and run), which is what
costs time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from tasks import timebound
from tasks.experts.base import CannotRunHereError, ExpertBackend, ExpertError, ExpertInputs, ExpertOutput
from tasks.schemas import Attempt, ModelSpec

#: ``choose(spec) -> (backend or None, reason)``: where a candidate runs (see :mod:`tasks.availability`).
Chooser = Callable[[ModelSpec], tuple[str | None, str]]


class AllCandidatesFailed(ExpertError):
    """No candidate of a node could run; ``attempts`` says what happened to each."""

    def __init__(self, task: str, attempts: Sequence[Attempt], untried: int = 0) -> None:
        self.task = task
        self.attempts = list(attempts)
        self.untried = untried
        if not self.attempts:
            message = f"no model candidates for {task}"
        else:
            lines = "; ".join(f"{n}) {a.describe()}" for n, a in enumerate(self.attempts, 1))
            message = f"every model candidate for {task} failed: {lines}"
        if untried:
            message += f"; {untried} more not tried (attempt limit reached)"
        super().__init__(message)


# --- running with fallback ----------------------------------------------------------------------------------------


def run_with_fallback(
    task: str,
    candidates: Sequence[ModelSpec],
    inputs: ExpertInputs,
    *,
    backends: Mapping[str, ExpertBackend],
    choose: Chooser,
    max_attempts: int,
    local_timeout: float | None = None,
) -> tuple[ExpertOutput, list[Attempt]]:
    """Run ``task`` with the first candidate that works, in order; return its output and every attempt.

    With ``local_timeout``, a candidate run by the local backend (loading its model included) that has no result
    after that many seconds fails with an error naming ``HUGGINGGPT_MODEL_TIMEOUT``, and the next one is tried.

    A candidate ``choose`` rejects is recorded as skipped (not counted against ``max_attempts``); one whose backend
    raises is recorded with the error and the next is tried, until ``max_attempts`` candidates have been run.
    Raises :class:`AllCandidatesFailed` (an :class:`ExpertError`) listing every attempt when none works.
    """
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    attempts: list[Attempt] = []
    tried = 0
    for index, spec in enumerate(candidates):
        if tried >= max_attempts:
            raise AllCandidatesFailed(task, attempts, untried=len(candidates) - index)
        backend_name, reason = choose(spec)
        if backend_name is None:
            attempts.append(Attempt(model=spec.id, ok=False, error=reason, skipped=True))
            continue
        backend = backends.get(backend_name)
        if backend is None:
            attempts.append(
                Attempt(
                    model=spec.id, backend=backend_name, error=f"no {backend_name} backend is configured", skipped=True
                )
            )
            continue
        tried += 1
        start = time.perf_counter()
        try:
            output = _run_bounded(backend, backend_name, task, spec, inputs, local_timeout)
        except CannotRunHereError as exc:  # e.g. out of memory while loading: as if ``choose`` had said no
            tried -= 1
            attempts.append(
                Attempt(
                    model=spec.id,
                    backend=backend_name,
                    error=f"cannot run here: {exc}",
                    seconds=time.perf_counter() - start,
                    skipped=True,
                )
            )
            continue
        except Exception as exc:
            error = str(exc) if isinstance(exc, ExpertError) else f"{type(exc).__name__}: {exc}"
            attempts.append(
                Attempt(model=spec.id, backend=backend_name, error=error, seconds=time.perf_counter() - start)
            )
            continue
        attempts.append(Attempt(model=spec.id, backend=backend_name, ok=True, seconds=time.perf_counter() - start))
        output.extra.setdefault("model", spec.id)
        output.extra.setdefault("backend", backend_name)
        output.extra["attempts"] = [a.model_dump() for a in attempts]
        return output, attempts
    raise AllCandidatesFailed(task, attempts)


def _run_bounded(
    backend: ExpertBackend,
    backend_name: str,
    task: str,
    spec: ModelSpec,
    inputs: ExpertInputs,
    local_timeout: float | None,
) -> ExpertOutput:
    if local_timeout is None or backend_name != "local":
        return backend.run(task, spec, inputs)
    return timebound.within(
        local_timeout,
        lambda: backend.run(task, spec, inputs),
        f"{task} with {spec.id}",
        lambda: ExpertError(
            f"{spec.id} did not load and run {task} within {local_timeout:g} s (HUGGINGGPT_MODEL_TIMEOUT)"
        ),
    )
