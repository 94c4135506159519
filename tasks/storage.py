"""The artifact store: every file a run produces, on any fsspec URL (a local folder by default, ``s3://`` ...).

Layout: ``{root}/{run_id}/`` holds ``plan.json``, ``summary.json`` and one folder
per node, ``nodes/{id}-{task}/``, with that node's files. Files are written under a
temporary name and moved into place (local), or with one atomic put (object
stores), so a reader never sees half a file.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem


class StorageError(RuntimeError):
    """A write or read failed; the message names the URL and the cause."""


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


class ArtifactStore:
    def __init__(self, root: str, run_id: str, storage_options: dict[str, Any] | None = None) -> None:
        self.root = root
        self.run_id = run_id
        try:
            fs, path = fsspec.core.url_to_fs(root, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise StorageError(f"cannot open storage {root!r}: {exc}") from exc
        self.fs: fsspec.AbstractFileSystem = fs
        if _is_local(fs):
            path = str(Path(path).expanduser().resolve())
        self._root_path = path.rstrip("/") or "/"
        self.run_path = posixpath.join(self._root_path, run_id)

    # --------------------------------------------------------------
    def uri(self, rel: str = "") -> str:
        """The URI of ``rel`` inside the run folder: a plain path for a local folder, else a full URL."""
        path = posixpath.join(self.run_path, rel) if rel else self.run_path
        return path if _is_local(self.fs) else self.fs.unstrip_protocol(path)

    @property
    def run_uri(self) -> str:
        return self.uri()

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` in the run folder; return its URI."""
        path = posixpath.join(self.run_path, rel)
        try:
            if _is_local(self.fs):
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                with self.fs.open(tmp, "wb") as fh:
                    fh.write(data)
                self.fs.mv(tmp, path)
            else:
                self.fs.pipe_file(path, data)
        except Exception as exc:
            raise StorageError(f"could not write {self.uri(rel)}: {type(exc).__name__}: {exc}") from exc
        return self.uri(rel)

    def put_text(self, rel: str, text: str) -> str:
        return self.put_bytes(rel, text.encode("utf-8"))

    def put_json(self, rel: str, value: Any) -> str:
        return self.put_bytes(rel, json.dumps(value, indent=2, ensure_ascii=False, default=str).encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        return read_uri(uri)


def read_uri(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """Read a stored file back (a local path or any fsspec URL)."""
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
            return fh.read()
    except FileNotFoundError:
        raise StorageError(f"{uri} does not exist") from None
    except Exception as exc:
        raise StorageError(f"could not read {uri}: {type(exc).__name__}: {exc}") from exc
