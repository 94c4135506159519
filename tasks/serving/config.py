"""The server's own settings (``hugginggpt serve``): keys, limits. Read from the environment and ``.env`` like
:class:`~tasks.settings.Settings`; the settings of the runs themselves stay there."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MAX_BYTES = 1 << 40


class ServeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUGGINGGPT_", env_file=".env", extra="ignore")

    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="bearer tokens the API accepts (comma-separated); required when the server binds beyond this "
        "machine; none: no token is asked for",
    )
    serve_max_in_flight: int = Field(default=4, ge=1, le=10_000, description="requests in flight per key; 429 beyond")
    serve_max_runs: int = Field(default=4, ge=1, le=1024, description="requests the server runs at once; others wait")
    serve_max_body_bytes: int = Field(
        default=1 << 20, ge=1024, le=MAX_BYTES, description="largest request body but uploads; 413 beyond"
    )
    serve_max_upload_bytes: int = Field(
        default=50 << 20, ge=1024, le=MAX_BYTES, description="largest file uploaded with POST /v1/files; 413 beyond"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [k.strip() for k in v.split(",") if k.strip()]
        return v

    @field_validator("api_keys")
    @classmethod
    def _long_keys(cls, v: list[SecretStr]) -> list[SecretStr]:
        if any(len(k.get_secret_value()) < 8 for k in v):
            raise ValueError("every key of HUGGINGGPT_API_KEYS must be at least 8 characters")
        return v

    def keys(self) -> list[str]:
        return [k.get_secret_value() for k in self.api_keys]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (``127.0.0.1``, ``::1``, ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class InFlight:
    """Requests in flight per key, at most ``limit`` each. Used from one event loop: no lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.counts: dict[str, int] = {}

    def enter(self, key: str) -> bool:
        """Count one more request of ``key``; ``False`` (nothing counted) when it already has ``limit``."""
        if self.counts.get(key, 0) >= self.limit:
            return False
        self.counts[key] = self.counts.get(key, 0) + 1
        return True

    def leave(self, key: str) -> None:
        left = self.counts.get(key, 0) - 1
        if left > 0:
            self.counts[key] = left
        else:
            self.counts.pop(key, None)
