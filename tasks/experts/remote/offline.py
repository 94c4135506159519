"""Endpoints of one's own while huggingface_hub is offline, and which URLs are the Hub's.

huggingface_hub refuses every HTTP request it makes in offline mode (``HF_HUB_OFFLINE=1``), endpoints included. An
endpoint of one's own is not the Hub, so :func:`allow_endpoints_when_offline` installs, once per process and only
while huggingface_hub uses its default HTTP client, a client that refuses requests to the Hub's hosts
(``HF_ENDPOINT``, ``*.huggingface.co``, ``*.hf.co``) and lets requests to other hosts through. What it installed is
huggingface_hub's own state (its client factory); this module keeps none.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlparse

from tasks.shared import shared

logger = logging.getLogger(__name__)


def is_url(target: str) -> bool:
    """Whether ``target`` is an endpoint URL (else a Hub model id)."""
    return target.startswith(("http://", "https://"))


def hub_hosts() -> tuple[str, ...]:
    from huggingface_hub import constants

    hosts = {"huggingface.co", "hf.co"}
    endpoint_host = urlparse(constants.ENDPOINT).hostname
    if endpoint_host:
        hosts.add(endpoint_host.lower())
    return tuple(sorted(hosts))


def is_hub_url(url: str) -> bool:
    """Whether ``url`` goes to the Hub (its configured endpoint or a host of ``huggingface.co`` / ``hf.co``)."""
    host = (urlparse(url).hostname or "").lower()
    return any(host == h or host.endswith("." + h) for h in hub_hosts())


def allow_endpoints_when_offline() -> bool:
    """Let huggingface_hub reach endpoints that are not the Hub while it is in offline mode.

    Installs (once per process) an HTTP client whose offline check only refuses the Hub's hosts. Does nothing when
    huggingface_hub already uses an HTTP client factory other than its default one (someone configured it: proxies,
    certificates), and says so in the log. Returns whether the client is installed.
    """
    from huggingface_hub import set_client_factory
    from huggingface_hub.utils import _http

    with shared("offline-endpoints-lock", None, threading.Lock):
        current = getattr(_http, "_GLOBAL_CLIENT_FACTORY", None)
        if getattr(current, "allows_endpoints_when_offline", False):
            return True
        if current is not getattr(_http, "default_client_factory", None):
            logger.warning(
                "huggingface_hub uses a custom HTTP client: in offline mode it may refuse requests to endpoints"
            )
            return False

        def hook(request: Any) -> Any:
            if is_hub_url(str(request.url)):
                return _http.hf_request_event_hook(request)
            return None

        def factory() -> Any:
            client = _http.default_client_factory()
            client.event_hooks["request"] = [hook]
            return client

        factory.allows_endpoints_when_offline = True  # type: ignore[attr-defined]
        set_client_factory(factory)
        logger.info("offline mode: requests to endpoints other than the Hub are allowed")
        return True
