"""What went wrong with one request to an inference server, and whether asking again may help.

:func:`classify` reads an exception raised by ``InferenceClient`` (an HTTP status, the server's message and its
``estimated_time`` / ``Retry-After``, a timeout, a refused connection, offline mode) into a :class:`Failure`; the
backend (:class:`~tasks.experts.remote.RemoteBackend`) retries, waits or reports from it.
"""

from __future__ import annotations

from typing import Any

#: HTTP statuses worth asking again.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class Failure:
    """What went wrong with one request, and whether asking again may help."""

    __slots__ = ("estimated_time", "kind", "message", "retry_after", "status")

    def __init__(
        self,
        kind: str,
        message: str,
        status: int | None = None,
        estimated_time: float | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.kind = kind  # "timeout", "loading", "retry", "offline" or "fail"
        self.message = message
        self.status = status
        self.estimated_time = estimated_time
        self.retry_after = retry_after


def classify(exc: BaseException) -> Failure:
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError, OfflineModeIsEnabled

    if isinstance(exc, InferenceTimeoutError | TimeoutError):
        return Failure("timeout", str(exc))
    if isinstance(exc, OfflineModeIsEnabled):
        return Failure("offline", str(exc))
    http_error = exc if isinstance(exc, HfHubHTTPError) else exc.__cause__
    if isinstance(http_error, HfHubHTTPError) and http_error.response is not None:
        response = http_error.response
        status = int(response.status_code)
        body = _json_body(response)
        message = _server_message(body, response) or str(exc).splitlines()[0]
        estimated = body.get("estimated_time") if isinstance(body, dict) else None
        if status == 503 and (isinstance(estimated, int | float) or "loading" in message.lower()):
            return Failure("loading", message, status, float(estimated) if estimated is not None else None)
        if status in RETRY_STATUSES:
            return Failure("retry", message, status, retry_after=_retry_after(response))
        return Failure("fail", message, status)
    if _is_connection_error(exc):
        return Failure("retry", f"{type(exc).__name__}: {exc}")
    return Failure("fail", f"{type(exc).__name__}: {exc}")


def _json_body(response: Any) -> Any:
    try:
        return response.json()
    except Exception:
        return None


def _server_message(body: Any, response: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error") or body.get("message") or body.get("detail")
        if isinstance(error, list):
            error = "; ".join(str(e) for e in error)
        if error:
            return str(error)[:500]
    try:
        text = str(response.text or "").strip()
    except Exception:
        text = ""
    if text and "html" not in str(response.headers.get("content-type", "")).lower():
        return text[:500]
    return str(getattr(response, "reason_phrase", "") or "")


def _retry_after(response: Any) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _is_connection_error(exc: BaseException) -> bool:
    try:
        import httpx2 as httpx
    except ImportError:  # huggingface_hub before 2.x
        import httpx  # type: ignore[no-redef]
    return isinstance(exc, httpx.TransportError | ConnectionError)


def colon(message: str) -> str:
    return f": {message}" if message else ""
