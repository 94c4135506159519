"""The task runners of plan nodes: the annotations of a node's parameters that Dask must keep."""

from __future__ import annotations

from typing import Any

from prefect.utilities.annotations import allow_failure, quote

from flows.runners import DaskAllowFailure, DaskQuote, _dask_safe, node_model
from tasks.experts.base import ModelSpec
from tasks.schemas import Assignment


def test_quoted_and_failure_allowed_parameters_keep_their_annotation_for_dask() -> None:
    spec = ModelSpec(id="tiny/a", task="summarization", local_path="/models/a")
    local = Assignment(node_id=0, task="summarization", model="tiny/a", reason="r", spec=spec)
    params: dict[str, Any] = {"assignment": quote(local), "upstream": [allow_failure("future")]}
    safe = _dask_safe(params)
    assert isinstance(safe["assignment"], DaskQuote) and safe["assignment"].unwrap() is local
    assert isinstance(safe["upstream"][0], DaskAllowFailure)
    rebuilt = type(safe["assignment"])._make(iter(safe["assignment"]))  # how Dask rebuilds a namedtuple
    assert isinstance(rebuilt, quote) and rebuilt.unwrap() is local
    assert node_model(params) == node_model({"assignment": local}) == ("summarization", "/models/a", None)
