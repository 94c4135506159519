"""A PostgreSQL-backed Prefect API for the bench, when PostgreSQL is installed on the machine.

Prefect's test harness (and its default ephemeral server) keep the API's state in SQLite. Under concurrent flow
runs SQLite answers some writes with "database is locked", which Prefect's API returns as 503 and its client
retries after 2, 4, 8... seconds; Prefect's documentation names PostgreSQL for production. When ``initdb`` and
``pg_ctl`` are found (on ``PATH`` or under ``/usr/lib/postgresql/*/bin``), :func:`postgres_prefect_api` starts a
throwaway PostgreSQL cluster on 127.0.0.1 and a Prefect API on it, so the batch figures can be measured against
both databases. Nothing is installed: without PostgreSQL the bench reports SQLite only.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from bench import log
from bench.api import flush_prefect_workers, prefect_api, quiet_prefect_console


def find_postgres() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or ``None``."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(cmd: list[str], owner: str | None) -> list[str]:
    """PostgreSQL refuses to run as root: run it as ``owner`` (the ``postgres`` account) then."""
    return ["runuser", "-u", owner, "--", *cmd] if owner else cmd


@contextlib.contextmanager
def postgres_cluster() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1; yields an asyncpg connection URL for a fresh database."""
    bindir = find_postgres()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb / pg_ctl found)")
    owner = None
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise RuntimeError("running as root and runuser is missing: cannot start PostgreSQL")
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="hugginggpt-bench-pg-"))
    data = root / "data"
    port = _free_port()
    if owner:
        shutil.chown(root, user=owner)
    run = {"check": True, "capture_output": True, "text": True, "cwd": "/"}
    started = False
    try:
        subprocess.run(
            _as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "prefect", "-A", "trust", "-E", "UTF8"], owner),
            **run,
        )
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            _as_owner(
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"], owner
            ),
            **run,
        )
        started = True
        subprocess.run(
            _as_owner(
                [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect"], owner
            ),
            **run,
        )
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        if started:
            subprocess.run(
                _as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], owner),
                capture_output=True,
                cwd="/",
            )
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_prefect_api(startup_timeout: int = 90, *, switch: bool = True) -> Iterator[str]:
    """A Prefect API on a throwaway PostgreSQL database; yields its URL. With ``switch``, this process talks to it
    within the block (otherwise use :func:`bench.api.prefect_api`)."""
    import prefect.settings
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.server.database.dependencies import temporary_database_interface

    with postgres_cluster() as database_url:
        t0 = time.perf_counter()
        with (
            temporary_database_interface(),
            prefect.settings.temporary_settings(
                updates={
                    prefect.settings.PREFECT_SERVER_DATABASE_CONNECTION_URL: database_url,
                    prefect.settings.PREFECT_SERVER_ANALYTICS_ENABLED: False,
                }
            ),
        ):
            server = SubprocessASGIServer(port=_free_port())
            server.start(timeout=startup_timeout)
        try:
            log(f"Prefect API on PostgreSQL up in {time.perf_counter() - t0:.1f} s")
            if switch:
                with prefect_api(server.api_url):
                    quiet_prefect_console()
                    yield server.api_url
            else:
                yield server.api_url
        finally:
            flush_prefect_workers()
            server.stop()
