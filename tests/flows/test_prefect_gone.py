"""The Prefect API going away at the end of a run: the CLI exits within seconds and still prints the summary."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.llm_server import plan_json

pytestmark = pytest.mark.usefixtures("prefect_server")


class TCPProxy:
    """Forwards connections on 127.0.0.1 to ``target``; :meth:`cut` closes the listener and every connection, as a
    Prefect server that went away."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._cut:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._listener.close()
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()


def _command() -> list[str]:
    script = Path(sys.executable).parent / "hugginggpt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "flows.cli"]


@pytest.mark.slow
@pytest.mark.llm_http  # the CLI runs in another process
def test_the_cli_exits_quickly_with_its_summary_when_the_prefect_api_goes_away(env: Path, llm) -> None:
    from prefect.settings import PREFECT_API_URL

    api = urlsplit(PREFECT_API_URL.value())
    proxy = TCPProxy((api.hostname or "127.0.0.1", api.port or 80))
    cut_at: list[float] = []

    def answer_then_cut(body: dict[str, Any]) -> str:
        proxy.cut()  # the API goes away while the run is answering
        cut_at.append(time.monotonic())
        return "The text is positive."

    llm.set(
        plan=plan_json({"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": "what a lovely day"}}),
        respond=answer_then_cut,
    )
    environment = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{proxy.port}{api.path}",
        "PREFECT_CLIENT_MAX_RETRIES": "1",
    }
    proc = subprocess.Popen(
        [*_command(), "run", "Rate: what a lovely day", "--json"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the CLI did not exit: {err[-3000:]}") from None
    exited = time.monotonic()
    assert cut_at, err[-3000:]
    assert exited - cut_at[0] < 60, f"the CLI took {exited - cut_at[0]:.0f} s to exit after the API went away"
    print(f"exited {exited - cut_at[0]:.1f} s after the Prefect API went away")
    assert out.strip(), err[-3000:]
    summary = json.loads(out)
    assert summary["answer"] == "The text is positive."
    assert [r["status"] for r in summary["results"]] == ["completed"]
    assert (env / summary["flow_run_id"] / "summary.json").is_file()
    assert "could not reach the Prefect API" in err
