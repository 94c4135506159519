"""The notice `hugginggpt run` gives when it has to start a temporary Prefect server."""

from __future__ import annotations

from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.temporary_server import start_temporary_server, temporary_server_notice


def test_no_temporary_server_when_an_api_is_configured() -> None:
    with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4200/api"}):
        assert start_temporary_server() is None


def test_notice_says_what_was_started_what_it_cost_and_how_to_keep_one() -> None:
    notice = temporary_server_notice(12.4)
    assert "temporary Prefect server" in notice and "(12 s)" in notice
    assert "`prefect server start`" in notice and "PREFECT_API_URL=http://127.0.0.1:4200/api" in notice
