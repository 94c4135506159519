"""Reuse of expert outputs: a node with the same task, model, revision and input contents as an earlier
completed node takes that node's outputs instead of running its model again.

Entries are read back as untrusted input: a damaged or foreign entry, or one naming files outside the store, is a
miss. Keys are content hashes (of input bytes, never of paths), so the same photo under another name hits, and a
changed file under the same name misses. Entries live in the artifact store under ``cache/{key}.json``
and point at the earlier run's files, which are never overwritten; an entry whose files are gone, or older
than the configured time to live, is a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel

from tasks.schemas import Assignment, NodeResult, PlanNode
from tasks.storage import ArtifactStore, StorageError, check_run_id

logger = logging.getLogger(__name__)
CACHE_VERSION = 1


def _is_run_id(run_id: str) -> bool:
    try:
        check_run_id(run_id)
    except StorageError:
        return False
    return True


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest_text(text: str) -> str:
    return digest_bytes(text.encode("utf-8"))


def node_cache_key(
    node: PlanNode, assignment: Assignment, input_digests: Mapping[str, str], params: Mapping[str, Any]
) -> str:
    """The cache key of running ``node`` with ``assignment`` on inputs with these content digests."""
    material = {
        "v": CACHE_VERSION,
        "task": node.task,
        "model": assignment.model,
        "revision": assignment.spec.revision,
        "weights": assignment.spec.local_path,
        "inputs": dict(sorted(input_digests.items())),
        "params": dict(sorted(params.items())),
    }
    return digest_text(json.dumps(material, sort_keys=True, default=str))


class CacheEntry(BaseModel):
    key: str
    created: float
    run_id: str
    result: NodeResult


class ResultCache:
    """Cache entries in the artifact store; ``clock`` (seconds since the epoch) dates entries and ages them."""

    def __init__(self, store: ArtifactStore, *, ttl: float = 0.0, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock

    @staticmethod
    def _rel(key: str) -> str:
        return f"cache/{key[:2]}/{key}.json"

    def lookup(self, key: str) -> CacheEntry | None:
        try:
            raw = self.store.read_root_json(self._rel(key))
        except StorageError as exc:  # unreadable or damaged: a miss, and the run that follows rewrites it
            logger.warning("cache entry %s not used: %s", key[:12], exc)
            return None
        if raw is None:
            return None
        try:
            entry = CacheEntry.model_validate(raw)
        except ValueError:
            logger.warning("cache entry %s not used: it is not a cache entry", key[:12])
            return None
        if entry.key != key or entry.result.status != "completed" or not _is_run_id(entry.run_id):
            return None
        if self.ttl and self.clock() - entry.created > self.ttl:
            return None
        files = [v for k, v in entry.result.outputs.items() if k != "text"]
        outside = [uri for uri in files if not self.store.holds(uri)]
        if outside:
            logger.warning("cache entry %s not used: it names files outside the store (%s)", key[:12], outside[0])
            return None
        if not all(self.store.exists(uri) for uri in files):
            return None
        return entry

    def record(self, key: str, result: NodeResult) -> None:
        entry = CacheEntry(key=key, created=self.clock(), run_id=self.store.run_id, result=result)
        self.store.put_root_bytes(self._rel(key), entry.model_dump_json().encode("utf-8"))
