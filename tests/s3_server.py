"""A real S3-compatible server on 127.0.0.1: ``rclone serve s3`` over a folder, so files survive a restart."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

KEY, SECRET = "hugginggpt-test-key", "hugginggpt-test-secret"


def rclone_binary() -> str | None:
    local = Path(sys.executable).parent / "rclone"
    return str(local) if local.exists() else shutil.which("rclone")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class S3Server:
    def __init__(self, root: Path, binary: str) -> None:
        self.root = root
        self.binary = binary
        self.port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def make_bucket(self, name: str) -> None:
        (self.root / name).mkdir(parents=True, exist_ok=True)

    def start(self) -> S3Server:
        self._proc = subprocess.Popen(
            [
                self.binary,
                "serve",
                "s3",
                "--addr",
                f"127.0.0.1:{self.port}",
                "--auth-key",
                f"{KEY},{SECRET}",
                "--config",
                "/dev/null",
                str(self.root),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"rclone serve s3 exited with {self._proc.returncode}") from None
                time.sleep(0.1)
        raise RuntimeError("rclone serve s3 did not start within 20 s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def storage_options(self) -> dict[str, object]:
        """s3fs options: this endpoint, and few, quick retries so a dead server is noticed fast."""
        return {
            "endpoint_url": self.endpoint_url,
            "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2, "read_timeout": 5},
        }
