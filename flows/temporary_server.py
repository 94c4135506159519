"""The temporary Prefect server a command starts when no Prefect API is configured, and the notice about it.

Without ``PREFECT_API_URL``, Prefect starts a temporary server in a subprocess for each command (about 12 s on a
small machine) and stops it at the end. :func:`start_temporary_server` starts it up front (the run then uses
the same one) and times it, so the command can say once what keeping a server running would save.
"""

from __future__ import annotations

import logging
import time

KEEP_RUNNING = "prefect server start"
API_URL = "http://127.0.0.1:4200/api"


def start_temporary_server() -> float | None:
    """Start Prefect's temporary server now, if this process would use one; the seconds it took to start, or
    ``None`` when a Prefect API is configured (or the temporary server is turned off)."""
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    if server.running:
        return None
    from prefect.settings import PREFECT_SERVER_ANALYTICS_ENABLED, temporary_settings

    quiet_server_notices()
    start = time.perf_counter()
    with temporary_settings({PREFECT_SERVER_ANALYTICS_ENABLED: False}):  # no telemetry (nor its errors offline)
        server.start(timeout=settings.server.ephemeral.startup_timeout_seconds)
    return time.perf_counter() - start


class _OwnNotice(logging.Filter):
    """Drops Prefect's own lines about the temporary server: the command says it once, with what it cost."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(("Starting temporary server", "Stopping temporary server"))


def quiet_server_notices() -> None:
    """Keep Prefect's "Starting/Stopping temporary server" lines off the console (once per process)."""
    prefect_logger = logging.getLogger("prefect")
    if not any(isinstance(f, _OwnNotice) for f in prefect_logger.filters):
        prefect_logger.addFilter(_OwnNotice())


def temporary_server_notice(seconds: float) -> str:
    """What to tell the user once: a temporary server was started, what it cost, and how to keep one running."""
    return (
        f"no PREFECT_API_URL is set, so a temporary Prefect server was started for this command ({seconds:.0f} s). "
        f"Keep one running to save that on every call: `{KEEP_RUNNING}` in another terminal, then "
        f"`export PREFECT_API_URL={API_URL}` (the UI is at http://127.0.0.1:4200)."
    )
