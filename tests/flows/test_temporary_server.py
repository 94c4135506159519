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


def test_the_temporary_server_starts_without_telemetry_or_prefect_s_own_notice(monkeypatch) -> None:
    """The command says once that it started a server; Prefect's "Starting temporary server" lines and the
    server's telemetry (an error on a machine without network) stay out of the terminal."""
    import logging

    import prefect.server.api.server as server_module
    from prefect.settings import PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, get_current_settings

    seen: dict[str, object] = {}

    class Server:
        running = False

        def start(self, timeout: float | None = None) -> None:
            seen["analytics"] = get_current_settings().server.analytics_enabled
            server_module.subprocess_server_logger.info("Starting temporary server on http://127.0.0.1:1\nSee ...")

    shown: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            shown.append(record.getMessage())

    handler = Keep()
    prefect_logger = logging.getLogger("prefect")
    level = prefect_logger.level
    prefect_logger.addHandler(handler)
    prefect_logger.setLevel(logging.INFO)
    monkeypatch.setattr(server_module, "SubprocessASGIServer", Server)
    try:
        with temporary_settings(updates={PREFECT_API_URL: "", PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: True}):
            assert start_temporary_server() is not None
        server_module.subprocess_server_logger.info("another line")
    finally:
        prefect_logger.removeHandler(handler)
        prefect_logger.setLevel(level)
    assert seen == {"analytics": False}
    assert shown == ["another line"]
