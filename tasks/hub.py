"""The Hugging Face Hub as this machine sees it, without asking it anything: offline mode, the local cache, a token.

Read by the availability rule (:mod:`tasks.availability`), the Hub facts (:mod:`tasks.model_facts`), weight sizing
(:mod:`tasks.sizing`), the remote backend (a model with no endpoint needs the Hub) and ``hugginggpt models``.
"""

from __future__ import annotations

from pathlib import Path


def hub_offline() -> bool:
    """Whether huggingface_hub is in offline mode (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def hf_cache_folder(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder of the model in the Hugging Face cache when its ``config.json`` is there (no network)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    except Exception:
        return None
    return Path(found).parent if isinstance(found, str) else None


def token_configured() -> bool:
    """Whether huggingface_hub has a token (``HF_TOKEN`` or a saved login)."""
    from huggingface_hub import get_token

    try:
        return bool(get_token())
    except Exception:
        return False
