"""The artifact store: every file a run produces, on any fsspec URL (a local folder by default, ``s3://`` ...).

Layout: ``{root}/{run_id}/`` holds ``plan.json``, ``summary.json`` and one folder
per node, ``nodes/{id}-{task}/``, with that node's files. Files are written under a
temporary name and moved into place (local), or with one atomic put (object
stores), so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import posixpath
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

from tasks import parsing

logger = logging.getLogger(__name__)
T = TypeVar("T")


class StorageError(RuntimeError):
    """A write or read failed; the message names the URL and the cause."""


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", re.ASCII)


def check_run_id(run_id: str) -> str:
    """``run_id`` when it names one folder directly under the storage root (letters, digits, ``_.-``, no ``..``);
    else a :class:`StorageError`: a run id read from the command line or from storage never leaves the store."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id) or ".." in run_id:
        raise StorageError(
            f"invalid run id {parsing.quote(run_id, 80)}: a run id is a flow run id such as "
            "0f8fad5b-d9cb-469f-a165-70867728950e (letters, digits, '-', '_' and '.', no '..')"
        )
    return run_id


def with_retries(what: str, fn: Callable[[], T], *, retries: int, wait: float) -> T:
    """Call ``fn``; on an error other than a missing file, retry ``retries`` times, waiting ``wait`` s, doubling."""
    attempt = 0
    while True:
        try:
            return fn()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            raise
        except Exception as exc:
            if attempt >= retries:
                raise
            delay = wait * (2**attempt)
            logger.warning("%s failed (%s: %s); retrying in %.1f s", what, type(exc).__name__, exc, delay)
            time.sleep(delay)
            attempt += 1


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return isinstance(fs, LocalFileSystem)


class ArtifactStore:
    def __init__(
        self,
        root: str,
        run_id: str,
        storage_options: dict[str, Any] | None = None,
        *,
        retries: int = 3,
        retry_wait: float = 0.5,
    ) -> None:
        self.root = root
        self.run_id = check_run_id(run_id)
        self.retries = retries
        self.retry_wait = retry_wait
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
        return self._uri_of(posixpath.join(self.run_path, rel) if rel else self.run_path)

    def _uri_of(self, path: str) -> str:
        return path if _is_local(self.fs) else self.fs.unstrip_protocol(path)

    def root_uri(self, rel: str) -> str:
        """The URI of ``rel`` under the storage root (outside any run folder)."""
        return self._uri_of(posixpath.join(self._root_path, rel))

    def path_of(self, rel: str) -> str:
        """The path of ``rel`` under the storage root on the store's own file system (``self.fs``)."""
        return posixpath.join(self._root_path, rel)

    def for_run(self, run_id: str) -> ArtifactStore:
        """The same storage, another run's folder."""
        other = object.__new__(ArtifactStore)
        other.__dict__.update(self.__dict__)
        other.run_id = check_run_id(run_id)
        other.run_path = posixpath.join(self._root_path, run_id)
        return other

    def holds(self, uri: str, folder: str | None = None) -> bool:
        """Whether ``uri`` names a file inside this store's root (or inside ``folder`` under the root, e.g. a run
        id): what a URI read back from storage must satisfy before it is read."""
        base = posixpath.join(self._root_path, folder) if folder else self._root_path
        try:
            if _is_local(self.fs):
                if "://" in uri and not uri.startswith("file://"):
                    return False
                path = Path(uri.removeprefix("file://")).expanduser().resolve()
                return path.is_relative_to(Path(base).resolve())
            protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
            if uri.split("://", 1)[0] not in protocols:
                return False
            path = posixpath.normpath(self.fs._strip_protocol(uri))
        except (OSError, ValueError, RuntimeError):
            return False
        return path == base or path.startswith(base.rstrip("/") + "/")

    def relative(self, uri: str) -> str | None:
        """The place of ``uri`` under the store's root (``{run id}/nodes/...``), or ``None`` when the store does
        not hold it (:meth:`holds`)."""
        if not self.holds(uri):
            return None
        if _is_local(self.fs):
            path = Path(uri.removeprefix("file://")).expanduser().resolve()
            rel = path.relative_to(Path(self._root_path).resolve()).as_posix()
        else:
            rel = posixpath.normpath(self.fs._strip_protocol(uri))[len(self._root_path.rstrip("/")) + 1 :]
        return rel if rel and rel != "." else None

    def open_root(self, rel: str) -> Any:
        """A binary file object of ``rel`` under the store's root, for reading in pieces; ``rel`` must stay inside
        the store (no ``..``, no symbolic link out of a local store), else :class:`StorageError`. A missing file is
        :class:`FileNotFoundError`."""
        uri = self.root_uri(rel)
        if ".." in rel.split("/") or not self.holds(uri):
            raise StorageError(f"{rel!r} is not inside the store")
        path = uri if _is_local(self.fs) else self.fs._strip_protocol(uri)
        if not self.fs.isfile(path):
            raise FileNotFoundError(rel)
        return self.fs.open(path, "rb")

    @property
    def run_uri(self) -> str:
        return self.uri()

    def put_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` in the run folder; return its URI."""
        return self._put(posixpath.join(self.run_path, rel), data)

    def put_root_bytes(self, rel: str, data: bytes) -> str:
        """Write ``data`` at ``rel`` under the storage root; return its URI."""
        return self._put(posixpath.join(self._root_path, rel), data)

    def _put(self, path: str, data: bytes) -> str:
        uri = self._uri_of(path)

        def write() -> None:
            if _is_local(self.fs):
                self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
                try:
                    with self.fs.open(tmp, "wb") as fh:
                        fh.write(data)
                    self.fs.mv(tmp, path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        self.fs.rm_file(tmp)  # a full disk leaves no half-written file behind
                    raise
            else:  # one PUT: the object appears whole or not at all
                self.fs.pipe_file(path, data)

        try:
            with_retries(f"writing {uri}", write, retries=self.retries, wait=self.retry_wait)
        except Exception as exc:
            raise StorageError(f"could not write {uri}: {_cause(exc)}") from exc
        return uri

    def remove_root(self, rel: str) -> None:
        """Delete the file ``rel`` under the root (nothing when it is not there)."""
        path = posixpath.join(self._root_path, rel)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(path)

    def exists(self, uri: str) -> bool:
        """Whether a stored file exists (``False`` also when storage cannot be reached)."""
        try:
            if _is_local(self.fs):
                return Path(uri).is_file()
            self.fs.invalidate_cache()
            return bool(self.fs.exists(uri))
        except Exception:
            return False

    def list_root(self, rel: str) -> list[str]:
        """The names of the files in the folder ``rel`` under the root (none when it does not exist)."""
        path = posixpath.join(self._root_path, rel)
        try:
            if not _is_local(self.fs):
                self.fs.invalidate_cache(path)
            entries = self.fs.ls(path, detail=True)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except Exception as exc:
            raise StorageError(f"could not list {self._uri_of(path)}: {_cause(exc)}") from exc
        return sorted(posixpath.basename(e["name"].rstrip("/")) for e in entries if e.get("type") == "file")

    def read_root_json(self, rel: str) -> Any:
        """JSON stored at ``rel`` under the root, or ``None`` when there is no such file."""
        uri = self.root_uri(rel)
        try:
            data = self.read_bytes(uri)
        except StorageError as exc:
            if isinstance(exc.__cause__, FileNotFoundError) or "does not exist" in str(exc):
                return None
            raise
        try:
            return parsing.loads_json(data.decode("utf-8"), "it")
        except UnicodeDecodeError:
            raise StorageError(f"{uri} is not UTF-8 text: the file is damaged") from None
        except parsing.ParseError as exc:
            raise StorageError(f"{uri} is damaged: {exc}") from None

    def read_json(self, rel: str) -> Any:
        """JSON stored at ``rel`` in the run folder, or ``None`` when there is no such file."""
        return self.read_root_json(posixpath.join(self.run_id, rel))

    def put_text(self, rel: str, text: str) -> str:
        return self.put_bytes(rel, text.encode("utf-8"))

    def put_json(self, rel: str, value: Any) -> str:
        return self.put_bytes(rel, json.dumps(value, indent=2, ensure_ascii=False, default=str).encode("utf-8"))

    def read_bytes(self, uri: str) -> bytes:
        """Read a file back; this store's options apply to URIs of its own filesystem."""
        protocol = uri.split("://", 1)[0] if "://" in uri else "file"
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple | list) else (self.fs.protocol,)
        options = self.storage_options if protocol in protocols else None
        return read_uri(uri, options, retries=self.retries, retry_wait=self.retry_wait)

    @property
    def storage_options(self) -> dict[str, Any]:
        return dict(getattr(self.fs, "storage_options", {}) or {})


def _cause(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) < 400 else text[:397] + "..."


def read_uri(
    uri: str, storage_options: dict[str, Any] | None = None, *, retries: int = 0, retry_wait: float = 0.5
) -> bytes:
    """Read a stored file back (a local path or any fsspec URL)."""

    def read() -> bytes:
        with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
            return fh.read()

    try:
        return with_retries(f"reading {uri}", read, retries=retries, wait=retry_wait)
    except FileNotFoundError:
        raise StorageError(f"{uri} does not exist") from None
    except Exception as exc:
        raise StorageError(f"could not read {uri}: {_cause(exc)}") from exc


_CREDENTIAL_NAME = re.compile(r"key|secret|token|pass|credential|sas|auth|session|signature", re.IGNORECASE)


def credential_values(options: Any) -> list[str]:
    """The values of every credential-like entry of fsspec options, at any depth (what must never be shown)."""
    found: list[str] = []
    if isinstance(options, dict):
        for k, v in options.items():
            if _CREDENTIAL_NAME.search(str(k)) and isinstance(v, str | bytes):
                found.append(v.decode(errors="replace") if isinstance(v, bytes) else v)
            else:
                found += credential_values(v)
    elif isinstance(options, list | tuple):
        for v in options:
            found += credential_values(v)
    return found


def without_credentials(options: Any) -> Any:
    """fsspec options with every credential-like entry (key, secret, token, password, ...) removed, at any depth:
    what may be saved in a Prefect block, shown or logged."""
    if isinstance(options, dict):
        return {k: without_credentials(v) for k, v in options.items() if not _CREDENTIAL_NAME.search(str(k))}
    if isinstance(options, list | tuple):
        return [without_credentials(v) for v in options]
    return options


BLOCK_PREFIX = "block:"


def resolve_storage(url: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``block:TYPE/NAME`` (a saved Prefect ``local-file-system`` or ``remote-file-system`` block) -> its
    base path and fsspec options; any other URL is returned as given."""
    if not url.startswith(BLOCK_PREFIX):
        return url, options
    from prefect.blocks.core import Block

    ref = url[len(BLOCK_PREFIX) :]
    try:
        block = Block.load(ref)
    except Exception as exc:
        raise StorageError(f"cannot load the Prefect block {ref!r} named by HUGGINGGPT_STORAGE: {exc}") from exc
    basepath = getattr(block, "basepath", None)
    if not basepath:
        raise StorageError(
            f"the Prefect block {ref!r} has no basepath; use a local-file-system or remote-file-system block"
        )
    block_options = dict(getattr(block, "settings", None) or {})
    return str(basepath), {**block_options, **options}


def store_for(settings: Any, run_id: str) -> ArtifactStore:
    """The artifact store of ``settings`` for one run."""
    url, options = resolve_storage(settings.storage, settings.storage_options)
    return ArtifactStore(
        url,
        run_id,
        options,
        retries=settings.storage_retries,
        retry_wait=settings.storage_retry_wait,
    )
