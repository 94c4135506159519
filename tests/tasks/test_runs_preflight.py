"""One preflight: a request checked in this process is not checked again for the same settings, and anything else
is."""

from __future__ import annotations

import pytest

from tasks.runs import RequestError, checked_before, preflight
from tasks.schemas import RequestSpec
from tasks.services import Services
from tasks.settings import RunOptions, Settings, load_settings


def test_a_checked_request_is_handed_on_only_for_the_same_request_and_settings(tmp_path) -> None:
    settings = load_settings(RunOptions(storage=str(tmp_path / "a")))
    spec = RequestSpec(request="Rate: a lovely day")
    checked = preflight(spec, Services(settings))
    assert checked.spec == spec and checked.pins == {}
    with checked_before(checked, settings):
        assert preflight(RequestSpec(request="Rate: a lovely day"), Services(settings)) is checked
        # another request, or the same under other settings, is checked on its own
        with pytest.raises(RequestError, match="empty"):
            preflight(RequestSpec(request="   "), Services(settings))
        other = load_settings(RunOptions(storage=str(tmp_path / "b")))
        again = preflight(spec, Services(other))
        assert again is not checked and again.spec == spec
    assert preflight(spec, Services(settings)) is not checked


def test_the_flow_side_refuses_inputs_the_policy_refuses() -> None:
    settings = Settings(allowed_url_schemes=["https"])
    with pytest.raises(RequestError, match="ftp://"):
        preflight(RequestSpec(request="Describe it", inputs=["ftp://example.com/a.png"]), Services(settings))
