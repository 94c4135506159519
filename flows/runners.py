"""Which Prefect task runner runs the plan nodes of a request: a thread pool here, or a Dask cluster.

``HUGGINGGPT_TASK_RUNNER=threads`` (the default) runs nodes in a thread pool of ``HUGGINGGPT_MAX_WORKERS``
threads in the flow's own process. ``HUGGINGGPT_TASK_RUNNER=dask`` sends them to a Dask cluster through
prefect-dask: the cluster at ``HUGGINGGPT_DASK_ADDRESS`` (``tcp://scheduler:8786``, workers on any number of
machines), or, when no address is set, a local cluster of ``HUGGINGGPT_DASK_WORKERS`` worker processes that
lives as long as the flow run (or the batch).

Loaded models are cached per process (``tasks.experts.cache``): under Dask that is per worker process, so each
worker loads a model once, on the first node it runs with it, and keeps at most ``HUGGINGGPT_MAX_MODELS`` of
them; every node's arguments and results (settings, plan node, assignment, node result) are pydantic models that
pickle, and outputs travel as storage URIs, not bytes.

A long-lived cluster (``HUGGINGGPT_DASK_ADDRESS``) is a pool that keeps models loaded from one flow run to the
next, whichever process the run itself is in (a deployment's worker starts a new process per run). Model
affinity: a node is sent, by preference, to a worker that already holds its model (``workers=`` with
``allow_other_workers=True`` on Dask's ``Client.submit``; the scheduler still uses another worker when those are
gone or the node cannot wait), see :func:`workers_holding`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect.utilities.annotations import allow_failure, quote

from tasks.experts.base import ModelSpec
from tasks.settings import Settings

try:
    from prefect_dask import DaskTaskRunner
except ImportError:  # the 'dask' extra is not installed
    DaskTaskRunner = None


class TaskRunnerError(RuntimeError):
    """The configured task runner cannot be built here (prefect-dask missing, cluster unreachable)."""


class _DaskAnnotation:
    """A Prefect annotation (``allow_failure``, ``quote``) in a form Dask rebuilds as itself.

    Dask rebuilds the containers of a task's arguments once it has swapped futures for their values, and turns a
    tuple subclass (which Prefect's annotations are) into a plain tuple, unless it looks like a namedtuple. Without
    ``allow_failure``, a dependent of a failed node would never start (Prefect refuses a failed upstream), instead
    of ending Skipped under its own name; without ``quote``, a node would get a tuple for its plan node.
    """

    __slots__ = ()
    _fields = ("value",)
    _field_defaults: dict[str, Any] = {}

    @classmethod
    def _make(cls, iterable: Any) -> Any:
        return cls(*iterable)  # type: ignore[call-arg]

    def _asdict(self) -> dict[str, Any]:
        return {"value": self[0]}  # type: ignore[index]

    def _replace(self, **fields: Any) -> Any:
        return type(self)(fields.get("value", self[0]))  # type: ignore[call-arg,index]

    def __getnewargs__(self) -> tuple[Any]:
        return (self[0],)  # type: ignore[index]


class DaskAllowFailure(_DaskAnnotation, allow_failure[Any]):
    """``allow_failure`` that Dask keeps (see :class:`_DaskAnnotation`)."""

    __slots__ = ()


class DaskQuote(_DaskAnnotation, quote[Any]):
    """``quote`` that Dask keeps (see :class:`_DaskAnnotation`)."""

    __slots__ = ()


def _dask_safe(value: Any) -> Any:
    """``value`` with every ``allow_failure`` and ``quote`` inside a list, tuple, set or dict made Dask-safe."""
    if isinstance(value, _DaskAnnotation):
        return value
    if isinstance(value, allow_failure):
        return DaskAllowFailure(_dask_safe(value.unwrap()))
    if isinstance(value, quote):
        return DaskQuote(value.unwrap())
    if isinstance(value, dict):
        return {k: _dask_safe(v) for k, v in value.items()}
    if isinstance(value, list | set | frozenset) or type(value) is tuple:
        return type(value)(_dask_safe(v) for v in value)
    return value


#: A model as a pool worker holds it: (task, source, revision), whatever the device.
HeldModel = tuple[str, str, str | None]


def held_models() -> list[HeldModel]:
    """The models loaded in this process (run on each worker by :meth:`HuggingGPTDaskTaskRunner.holders`)."""
    from tasks.experts.cache import loaded_keys

    return [(str(k[0]), str(k[1]), k[2]) for k in loaded_keys() if isinstance(k, tuple) and len(k) == 4]


def node_model(parameters: Mapping[str, Any]) -> HeldModel | None:
    """The local model a ``run_node`` call will load: its assignment's (task, source, revision)."""
    from tasks.schemas import Assignment
    from tasks.task_types import normalize_task_name

    assignment = parameters.get("assignment")
    if isinstance(assignment, quote):
        assignment = assignment.unwrap()
    if not isinstance(assignment, Assignment) or assignment.backend != "local":
        return None
    return normalize_task_name(assignment.task), assignment.spec.source, assignment.spec.revision


def workers_holding(model: HeldModel | None, holders: Mapping[str, Collection[HeldModel]]) -> list[str]:
    """The workers (addresses, in order) whose process holds ``model``."""
    if model is None:
        return []
    return sorted(address for address, models in holders.items() if model in {tuple(m) for m in models})


def load_models(settings: Settings, models: Sequence[tuple[str, ModelSpec]]) -> list[HeldModel]:
    """Load ``(task, model)`` pairs into this process's model cache (run on pool workers); what it then holds."""
    from tasks.services import services_for

    backend = services_for(settings).local_backend
    for task, spec in models:
        backend.load(task, spec)
    return held_models()


def warm_workers(
    client: Any, settings: Settings, models: Sequence[tuple[str, ModelSpec]]
) -> dict[str, list[HeldModel]]:
    """Load ``models`` on every worker of the Dask pool behind ``client`` now (when the pool starts, or before a
    batch), so that any worker can take their nodes; returns what each worker holds."""
    return dict(client.run(load_models, settings, list(models)))


if DaskTaskRunner is not None:
    from prefect_dask.task_runners import PrefectDaskFuture

    class HuggingGPTDaskTaskRunner(DaskTaskRunner):
        """prefect-dask's runner, with ``allow_failure`` kept through Dask (see :class:`DaskAllowFailure`), and
        model affinity: a node goes, by preference, to a worker that already holds its model."""

        def holders(self) -> dict[str, list[HeldModel]]:
            """What each worker of the cluster holds, asked of every worker (one round trip)."""
            try:
                return dict(self.client.run(held_models, on_error="return"))
            except Exception:  # a worker going away: no preference rather than no run
                return {}

        def submit(  # type: ignore[override]
            self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None
        ) -> Any:
            parameters, wait_for = _dask_safe(parameters), _dask_safe(wait_for)
            model = node_model(parameters)
            workers = workers_holding(model, self.holders()) if model is not None else []
            if not workers:
                return super().submit(task, parameters, wait_for, dependencies)
            if not self._started:
                raise RuntimeError("The task runner must be started before submitting work.")
            future = self.client.submit(
                task,
                parameters=self._optimize_futures(parameters),
                wait_for=self._optimize_futures(wait_for) if wait_for else None,
                dependencies=dependencies,
                return_type="state",
                workers=workers,
                allow_other_workers=True,
            )
            return PrefectDaskFuture(wrapped_future=future, task_run_id=future.task_run_id)


def _dask_runner_class() -> Any:
    if DaskTaskRunner is None:
        raise TaskRunnerError("HUGGINGGPT_TASK_RUNNER=dask needs prefect-dask: pip install 'hugginggpt-prefect[dask]'")
    return HuggingGPTDaskTaskRunner


def dask_address(settings: Settings) -> str | None:
    """The scheduler address of an existing cluster, or ``None`` for a local one."""
    address = (settings.dask_address or "").strip()
    return address or None


def local_cluster_kwargs(settings: Settings) -> dict[str, Any]:
    """Arguments of the local ``distributed.LocalCluster``: worker processes (so each has its own model cache)."""
    kwargs: dict[str, Any] = {"processes": True}
    if settings.dask_workers is not None:
        kwargs["n_workers"] = settings.dask_workers
    return kwargs


def task_runner_for(settings: Settings) -> TaskRunner[Any]:
    """The task runner the settings pick (``HUGGINGGPT_TASK_RUNNER``).

    A Prefect flow duplicates the runner it is given for each flow run, so one instance serves many runs;
    a Dask runner without an address starts its local cluster when the run starts and stops it at its end
    (use :func:`shared_cluster` to keep one cluster for many runs).
    """
    if settings.task_runner == "dask":
        runner_class = _dask_runner_class()
        address = dask_address(settings)
        if address is not None:
            return runner_class(address=address)
        return runner_class(cluster_kwargs=local_cluster_kwargs(settings))
    return ThreadPoolTaskRunner(max_workers=settings.max_workers)


@contextlib.contextmanager
def shared_cluster(settings: Settings) -> Iterator[str | None]:
    """The Dask scheduler address that many flow runs in a row or at once (a batch) should share.

    With Dask and no address, one local cluster is started for the whole block and its address is yielded, for
    the runs to receive as their ``dask_address`` option, so models loaded by its workers serve all the runs;
    otherwise ``None``: each run builds its own task runner from its settings.
    """
    if settings.task_runner != "dask" or dask_address(settings) is not None:
        yield None
        return
    _dask_runner_class()
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_kwargs(settings)) as cluster:
        yield cluster.scheduler_address
