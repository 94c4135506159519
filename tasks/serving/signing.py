"""Links to stored files that a browser can open for a while: ``/files/{path}?exp=...&sig=...``.

``path`` is the file's place under the artifact store's root (``{run id}/nodes/0-image-to-text/out.png``); ``sig`` is
an HMAC-SHA256 of the path and the expiry with the server's secret. A link is valid until ``exp`` (Unix seconds) and
only for that path: changing either breaks the signature. Only paths that stay inside the store are ever signed or
served (:func:`clean_path`).
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

FILES_PREFIX = "/files/"


class LinkError(ValueError):
    """A file link that is not valid (altered, expired or naming a path outside the store); says which."""


def clean_path(path: str) -> str:
    """``path`` as a relative path inside the store (no leading ``/``, no ``.`` or ``..`` parts, no empty parts, no
    backslashes or control characters); raises :class:`LinkError` otherwise."""
    if not path or "\\" in path or any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise LinkError("the file path is empty or holds characters a stored file's path never has")
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or posixpath.normpath(path) != path:
        raise LinkError("the file path leaves the store")
    return path


@dataclass(frozen=True)
class FileSigner:
    """Signs and checks file links with ``secret``; links are valid ``seconds`` from when they are made."""

    secret: bytes
    seconds: int = 24 * 3600

    def __post_init__(self) -> None:
        if len(self.secret) < 16:
            raise ValueError("the link-signing secret must be at least 16 bytes")

    def signature(self, path: str, expires: int) -> str:
        message = f"{clean_path(path)}\n{int(expires)}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def link(self, path: str, *, base_url: str = "", now: float | None = None) -> str:
        """The signed link of ``path``: ``{base_url}/files/{path}?exp=...&sig=...``."""
        expires = int((time.time() if now is None else now) + self.seconds)
        query = f"exp={expires}&sig={self.signature(path, expires)}"
        return f"{base_url.rstrip('/')}{FILES_PREFIX}{quote(clean_path(path))}?{query}"

    def check(self, path: str, expires: str | int | None, sig: str | None, *, now: float | None = None) -> str:
        """``path`` when ``sig`` signs it with ``expires`` and ``expires`` has not passed; :class:`LinkError` saying
        what is wrong otherwise."""
        path = clean_path(path)
        try:
            when = int(str(expires))
        except ValueError:
            raise LinkError("the link has no valid expiry (exp)") from None
        if not sig or not hmac.compare_digest(self.signature(path, when), str(sig)):
            raise LinkError("the link's signature does not match: it was altered or signed by another server")
        if when < (time.time() if now is None else now):
            raise LinkError("the link has expired")
        return path


@dataclass(frozen=True)
class PublicLinks:
    """Links to stored files through a ``hugginggpt serve`` reachable at ``base_url``, signed by ``signer``."""

    base_url: str
    signer: FileSigner

    @classmethod
    def from_settings(cls, settings: Any) -> PublicLinks | None:
        """``HUGGINGGPT_PUBLIC_URL`` with ``HUGGINGGPT_FILE_SECRET`` (valid ``HUGGINGGPT_LINK_SECONDS``); ``None``
        unless both are set."""
        if not settings.public_url or settings.file_secret is None:
            return None
        secret = settings.file_secret.get_secret_value().encode()
        return cls(str(settings.public_url), FileSigner(secret, seconds=settings.link_seconds))

    def link(self, path: str) -> str:
        return self.signer.link(path, base_url=self.base_url)
