"""Reading a node's inputs: local paths, http(s) URLs and fsspec URLs, decoded by modality.

A request's text is data: whatever it says, an input is read only when an :class:`InputPolicy` allows it.

* Local paths (and ``file://`` URLs), once ``..`` and symbolic links are resolved, must lie inside the allowed
  roots: the working directory and ``HUGGINGGPT_INPUT_ROOTS``. Only regular files are read.
* URLs must use an allowed scheme: ``HUGGINGGPT_ALLOWED_URL_SCHEMES`` (``http``, ``https``) and the storage's own.
* http(s) URLs may not reach private, loopback, link-local or other non-public addresses unless
  ``HUGGINGGPT_ALLOW_PRIVATE_URLS`` is set: the host's addresses are checked before connecting, the address the
  socket actually connected to is checked again (a name that resolves differently the second time gains nothing),
  and every redirect is checked the same way. Through a proxy (``HTTP(S)_PROXY``) the proxy is trusted: the target
  host's addresses are still checked.
* Every read is cut at ``HUGGINGGPT_MAX_INPUT_BYTES``; a download, redirects included, at about
  ``HUGGINGGPT_INPUT_TIMEOUT`` seconds in all, however slowly the server sends.

The LLM endpoint, the storage and the catalog's endpoints are configured by the operator and are not subject to
these rules: only inputs named by requests are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import io
import ipaddress
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np

from tasks import timebound
from tasks.experts.base import Audio
from tasks.task_types import Modality

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")
MAX_INPUT_BYTES = 200 * 1024 * 1024
_CHUNK = 64 * 1024
_MAX_REDIRECTS = 5
_HTTP_SCHEMES = frozenset({"http", "https"})


class InputError(ValueError):
    """An input could not be read, is refused, or is not of the kind the task needs; the message names it."""


class _AddressRefused(OSError):
    """Raised inside a connection to a refused address (urllib wraps it in a URLError)."""


def url_scheme(ref: str) -> str:
    """The lowercased scheme of ``ref`` (``""`` for a plain path)."""
    m = _SCHEME.match(ref)
    return m.group(1).lower() if m else ""


def _address_kind(address: str) -> str | None:
    """What kind of non-public address ``address`` (an IP literal) is (``"a loopback address"``, ...), or ``None``
    when it is public or not an IP literal."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified or ip.is_multicast or ip.is_reserved:
        return "not a public address"
    if ip.is_private:
        return "a private address"
    if not ip.is_global:
        return "not a public address"
    return None


def _resolve(host: str, port: int, timeout: float) -> list[str]:
    """The addresses ``host`` resolves to, within ``timeout`` seconds."""
    found: dict[str, Any] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    worker = threading.Thread(target=lookup, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise InputError(f"the name {host} could not be resolved within {timeout:g} s")
    if "error" in found:
        raise InputError(f"the name {host} could not be resolved: {found['error']}")
    return sorted({str(info[4][0]) for info in found["infos"]})


@dataclass(frozen=True)
class InputPolicy:
    """Where a request's inputs may come from, and how much may be read."""

    roots: tuple[Path, ...] = ()
    schemes: frozenset[str] = _HTTP_SCHEMES
    allow_private_urls: bool = False
    max_bytes: int = MAX_INPUT_BYTES
    timeout: float = 30.0
    #: the artifact store's URL scheme and fsspec options: inputs on the store's own filesystem (``s3://`` on a MinIO
    #: or R2 endpoint) are opened with them
    storage_scheme: str | None = None
    storage_options: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roots", tuple(Path(os.path.realpath(Path(r).expanduser())) for r in self.roots))
        object.__setattr__(self, "schemes", frozenset(s.lower() for s in self.schemes))

    @classmethod
    def from_settings(cls, settings: Any, *, cwd: Path | None = None) -> InputPolicy:
        """The policy of ``settings``: the working directory, ``input_roots`` and a local artifact store's folder
        (files earlier runs produced, which a chat's next turn reads, wherever the store is); the allowed schemes
        and the storage's own; ``allow_private_urls``, ``max_input_bytes``, ``input_timeout``."""
        schemes = set(settings.allowed_url_schemes)
        storage_scheme = url_scheme(settings.storage)
        if storage_scheme and storage_scheme != "file":
            schemes.add(storage_scheme)
        roots = [cwd or Path.cwd(), *settings.input_roots]
        if storage_scheme in ("", "file"):
            store = Path(os.path.realpath(Path(settings.storage.removeprefix("file://")).expanduser()))
            if not any(store.is_relative_to(os.path.realpath(Path(r).expanduser())) for r in roots):
                roots.append(store)
        return cls(
            roots=tuple(roots),
            schemes=frozenset(schemes),
            allow_private_urls=settings.allow_private_urls,
            max_bytes=settings.max_input_bytes,
            timeout=settings.input_timeout,
            storage_scheme=storage_scheme or None,
            storage_options=dict(settings.storage_options),
        )

    def replace(self, **changes: Any) -> InputPolicy:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    # --- checks --------------------------------------------------------------------------------------------------

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.roots) or "none"

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.roots)

    def check_path(self, ref: str) -> Path:
        """The real path of the local input ``ref`` (a path or ``file://`` URL); raises :class:`InputError` when it
        lies outside the allowed roots, directly, through ``..`` or through a symbolic link."""
        raw = ref[len("file://") :] if url_scheme(ref) == "file" else ref
        if "\x00" in raw:
            raise InputError(f"input {ref!r} is not a valid path")
        path = Path(raw).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        real = Path(os.path.realpath(path))
        if self._inside(real):
            return real
        how = ""
        if self._inside(Path(os.path.abspath(path))):
            how = f" through a symbolic link (to {real})"
        raise InputError(
            f"input {ref} is outside the folders inputs may come from{how} ({self._roots_text()}); "
            "add its folder to HUGGINGGPT_INPUT_ROOTS to allow it"
        )

    def check_url(self, url: str, *, resolve: bool = True) -> None:
        """Raise :class:`InputError` when the URL's scheme is not allowed or, for http(s), when its host is (or, with
        ``resolve``, resolves to) an address that is not public while private addresses are not allowed."""
        scheme = url_scheme(url)
        if scheme not in self.schemes:
            allowed = ", ".join(sorted(self.schemes)) or "none"
            raise InputError(
                f"input {url} uses the URL scheme {scheme!r}, which inputs may not use (allowed: {allowed}; "
                "HUGGINGGPT_ALLOWED_URL_SCHEMES)"
            )
        if scheme not in _HTTP_SCHEMES:
            return
        try:
            parts = urlsplit(url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InputError(f"input {url} is not a valid URL ({exc})") from None
        if not host:
            raise InputError(f"input {url} names no host")
        if self.allow_private_urls:
            return
        if host == "localhost" or host.endswith(".localhost"):
            raise InputError(self._private_message(url, f"{host} is this machine"))
        kind = _address_kind(host)
        if kind is not None:
            raise InputError(self._private_message(url, f"{host} is {kind}"))
        if resolve:
            for address in _resolve(host, port or (443 if scheme == "https" else 80), self.timeout):
                kind = _address_kind(address)
                if kind is not None:
                    raise InputError(self._private_message(url, f"{host} resolves to {address}, {kind}"))

    @staticmethod
    def _private_message(url: str, problem: str) -> str:
        return (
            f"input {url} is refused: {problem}, and inputs may only come from public addresses "
            "(set HUGGINGGPT_ALLOW_PRIVATE_URLS=true to allow private ones)"
        )

    def check(self, ref: str, *, resolve: bool = True) -> None:
        """Raise :class:`InputError` when ``ref`` (a path or a URL) may not be read under this policy."""
        scheme = url_scheme(ref)
        if scheme in ("", "file"):
            self.check_path(ref)
        else:
            self.check_url(ref, resolve=resolve)

    def refusal(self, ref: str) -> str | None:
        """Why ``ref`` is refused, judged without network access (no name resolution), or ``None``."""
        try:
            self.check(ref, resolve=False)
        except InputError as exc:
            return str(exc)
        return None


def default_policy() -> InputPolicy:
    """The policy of the current settings (environment and ``.env``)."""
    from tasks.settings import load_settings

    return InputPolicy.from_settings(load_settings())


# --- reading ------------------------------------------------------------------------------------------------------


def read_input_bytes(
    ref: str,
    *,
    timeout: float | None = None,
    max_bytes: int | None = None,
    policy: InputPolicy | None = None,
) -> bytes:
    """The bytes of the input ``ref`` (a path, an http(s) URL or an fsspec URL), read under ``policy`` (default: the
    current settings'); ``timeout`` and ``max_bytes`` override the policy's."""
    policy = (policy or default_policy()).replace(timeout=timeout, max_bytes=max_bytes)
    scheme = url_scheme(ref)
    if scheme in ("", "file"):
        return _read_local(ref, policy)
    policy.check_url(ref)
    if scheme in _HTTP_SCHEMES:
        return _read_http(ref, policy)
    return _read_fsspec(ref, policy)


def _too_large(ref: str, limit: int) -> InputError:
    return InputError(f"input {ref} is larger than {limit} bytes (HUGGINGGPT_MAX_INPUT_BYTES)")


def _read_local(ref: str, policy: InputPolicy) -> bytes:
    real = policy.check_path(ref)
    try:
        info = real.stat()
    except OSError:
        raise InputError(f"input file {ref} does not exist") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"input {ref} is not a regular file")
    if info.st_size > policy.max_bytes:
        raise _too_large(ref, policy.max_bytes)
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise InputError(f"input file {ref} could not be read: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(policy.max_bytes + 1)
    if len(data) > policy.max_bytes:
        raise _too_large(ref, policy.max_bytes)
    return data


def _read_fsspec(ref: str, policy: InputPolicy) -> bytes:
    """An fsspec URL, with the store's options when it is on the store's filesystem, within the input timeout (the
    filesystems have no total-time bound of their own)."""
    import fsspec

    options = policy.storage_options if url_scheme(ref) == policy.storage_scheme else {}

    def read() -> bytes:
        with fsspec.open(ref, "rb", **options) as fh:
            return fh.read(policy.max_bytes + 1)

    try:
        data = timebound.within(
            policy.timeout,
            read,
            f"reading {ref}",
            lambda: InputError(f"input {ref} could not be read within {policy.timeout:g} s (HUGGINGGPT_INPUT_TIMEOUT)"),
        )
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"input {ref} does not exist") from None
    except Exception as exc:
        text = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:300]
        raise InputError(f"input {ref} could not be read: {text}") from None
    if len(data) > policy.max_bytes:
        raise _too_large(ref, policy.max_bytes)
    return data


# --- http(s) with the address checks ---------------------------------------------------------------------------------


def _guarded_connection(base: type[http.client.HTTPConnection], policy: InputPolicy, check_peer: bool) -> Any:
    """A factory of ``base`` connections whose socket is closed, before anything is sent, when the address it
    connected to is refused."""

    def create_connection(address: Any, timeout: Any = None, source_address: Any = None, **kwargs: Any) -> Any:
        sock = socket.create_connection(address, timeout, source_address, **kwargs)
        if check_peer:
            peer = str(sock.getpeername()[0])
            kind = _address_kind(peer)
            if kind is not None:
                sock.close()
                raise _AddressRefused(f"the connection went to {peer}, {kind}")
        return sock

    def factory(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = base(host, **kwargs)
        conn._create_connection = create_connection  # type: ignore[attr-defined]
        return conn

    return factory


def _proxied(req: urllib.request.Request) -> bool:
    return bool(getattr(req, "_tunnel_host", None)) or req.has_proxy()


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: InputPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: urllib.request.Request) -> Any:
        check = not self.policy.allow_private_urls and not _proxied(req)
        return self.do_open(_guarded_connection(http.client.HTTPConnection, self.policy, check), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: InputPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: urllib.request.Request) -> Any:
        check = not self.policy.allow_private_urls and not _proxied(req)
        return self.do_open(
            _guarded_connection(http.client.HTTPSConnection, self.policy, check),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


class _CheckedRedirectHandler(urllib.request.HTTPRedirectHandler):
    max_redirections = _MAX_REDIRECTS

    def __init__(self, policy: InputPolicy, ref: str) -> None:
        super().__init__()
        self.policy = policy
        self.ref = ref

    def http_error_302(self, req: Any, fp: Any, code: int, msg: str, headers: Any) -> Any:
        location = headers.get("Location") or headers.get("URI")
        if location:
            newurl = urljoin(req.full_url, location)
            if url_scheme(newurl) not in _HTTP_SCHEMES:
                raise InputError(f"input {self.ref} redirects to {newurl}, which is not an http(s) URL")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if url_scheme(newurl) not in _HTTP_SCHEMES:
            raise InputError(f"input {self.ref} redirects to {newurl}, which is not an http(s) URL")
        try:
            self.policy.check_url(newurl)
        except InputError as exc:
            raise InputError(f"input {self.ref} redirects to {newurl}, which is refused: {exc}") from None
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _read_http(ref: str, policy: InputPolicy) -> bytes:
    opener = urllib.request.build_opener(
        _GuardedHTTPHandler(policy), _GuardedHTTPSHandler(policy), _CheckedRedirectHandler(policy, ref)
    )
    deadline = time.monotonic() + policy.timeout
    slow = InputError(f"input {ref} could not be fetched within {policy.timeout:g} s (HUGGINGGPT_INPUT_TIMEOUT)")
    req = urllib.request.Request(ref, headers={"User-Agent": "hugginggpt-prefect", "Accept-Encoding": "identity"})
    try:
        with opener.open(req, timeout=policy.timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.strip().isdigit() and int(length) > policy.max_bytes:
                raise _too_large(ref, policy.max_bytes)
            chunks: list[bytes] = []
            total = 0
            read = getattr(resp, "read1", resp.read)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise slow
                _limit_socket_wait(resp, remaining)
                chunk = read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > policy.max_bytes:
                    raise _too_large(ref, policy.max_bytes)
                chunks.append(chunk)
    except InputError:
        raise
    except urllib.error.HTTPError as exc:
        raise InputError(f"input {ref} could not be fetched: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, _AddressRefused):
            raise InputError(InputPolicy._private_message(ref, str(reason))) from None
        if isinstance(reason, TimeoutError):
            raise slow from None
        raise InputError(f"input {ref} could not be fetched: {reason}") from None
    except TimeoutError:
        raise slow from None
    except (OSError, http.client.HTTPException) as exc:
        raise InputError(f"input {ref} could not be fetched: {type(exc).__name__}: {exc}") from None
    return b"".join(chunks)


def _limit_socket_wait(resp: Any, seconds: float) -> None:
    """Bound the next socket read of ``resp`` by ``seconds`` (best effort: the socket is reached through
    http.client's response object)."""
    raw = getattr(getattr(resp, "fp", None), "raw", None)
    sock = getattr(raw, "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.01))


# --- decoding -------------------------------------------------------------------------------------------------------


_BUFFER_REPR = re.compile(r"\s*<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def _reason(exc: BaseException) -> str:
    """What a decoder said, without the in-memory buffer it was handed (``<_io.BytesIO object at 0x...>``)."""
    return _BUFFER_REPR.sub("", str(exc)).strip() or type(exc).__name__


def decode_image(data: bytes, ref: str) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"input {ref} is not a readable image ({_reason(exc)})") from None
    return img.convert("RGB")


def decode_audio(data: bytes, ref: str) -> Audio:
    import soundfile as sf

    try:
        array, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(f"input {ref} is not readable audio ({_reason(exc)})") from None
    mono = array.mean(axis=1).astype(np.float32)
    if mono.size == 0:
        raise InputError(f"input {ref} is empty audio")
    return Audio(array=mono, sampling_rate=int(rate))


def decode_text(data: bytes, ref: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"input {ref} is not UTF-8 text") from None


def decode(data: bytes, modality: Modality, ref: str) -> Any:
    """``data`` read from ``ref`` as the value a model takes for ``modality`` (images -> PIL, audio ->
    :class:`Audio`, text -> str, else the bytes); an :class:`InputError` naming ``ref`` when it is not one."""
    if modality == Modality.IMAGE:
        return decode_image(data, ref)
    if modality == Modality.AUDIO:
        return decode_audio(data, ref)
    if modality == Modality.TEXT:
        return decode_text(data, ref)
    return data


def refused_inputs(refs: Iterable[str], policy: InputPolicy) -> list[str]:
    """The reasons, one per refused input of ``refs``, judged without network access."""
    return [why for why in (policy.refusal(ref) for ref in refs) if why is not None]
