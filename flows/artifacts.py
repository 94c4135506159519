"""What a request run shows in the Prefect UI: ``summary.json`` beside its files, and its artifacts (the summary,
the nodes table, a link per stored file) under keys that stay the same from run to run, so the UI keeps history."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from tasks.parsing import clip
from tasks.report import artifact_key, code_text, node_rows, summary_markdown
from tasks.schemas import RunSummary
from tasks.serving.signing import PublicLinks
from tasks.storage import ArtifactStore, StorageError


def artifact_scope(flow_kind: str = "request") -> str:
    """The stem of this run's artifact keys: one per flow (``hugginggpt-request``, ``hugginggpt-batch``), or per
    deployment when deployed, never per run, so the UI keeps each key's history (every run's artifact under the
    same key, the run named in its description)."""
    from prefect.runtime import deployment

    name = deployment.name
    return artifact_key("hugginggpt", str(name) if name else flow_kind)


def file_link(
    uri: str,
    fs: Any = None,
    *,
    expires: int = 3600,
    store: ArtifactStore | None = None,
    public: PublicLinks | None = None,
) -> str | None:
    """The URL a browser showing the Prefect UI can open for the stored file ``uri``, or ``None`` when there is
    none (the artifacts then show the path as text to copy): an http(s) URL as it is; a file of ``store`` through
    the ``hugginggpt serve`` that ``public`` names (a signed link, local or object storage alike, no storage
    credential in it); on object storage that can sign (s3fs, gcsfs, given as ``fs``), a presigned URL valid
    ``expires`` seconds. A local path, a ``file://`` URL (browsers refuse them from a web page) or an unsigned
    ``s3://`` URI is no link. The one place file links are made."""
    if uri.startswith(("http://", "https://")):
        return uri
    if public is not None and store is not None and (rel := store.relative(uri)) is not None:
        return public.link(rel)
    if fs is None or "://" not in uri or uri.startswith("file://"):
        return None
    try:
        signed = fs.sign(uri, expiration=expires)
    except Exception:  # NotImplementedError for most file systems, no credentials to sign with, ...
        return None
    return signed if isinstance(signed, str) and signed.startswith(("http://", "https://")) else None


def run_page(flow_run_id: str) -> str | None:
    """The Prefect UI's page of a flow run (``PREFECT_UI_URL``), or ``None`` when no UI address is known."""
    from prefect.settings import get_current_settings

    ui = get_current_settings().ui_url
    return f"{str(ui).rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else None


def publish(
    summary: RunSummary, store: ArtifactStore | None, *, presign_seconds: int = 0, public: PublicLinks | None = None
) -> None:
    """summary.json beside the run's files, and the markdown, table and link artifacts. With ``presign_seconds``,
    files on object storage that can sign (S3) are linked by presigned URLs valid that long, which the browser
    can open and show; a presigned URL holds the storage's access key id and grants read access to that file. With
    ``public`` (``HUGGINGGPT_PUBLIC_URL`` and ``HUGGINGGPT_FILE_SECRET``), files are linked through the server."""
    log = get_run_logger()
    if store is not None:
        try:
            store.put_text("summary.json", summary.model_dump_json(indent=2))
        except StorageError as exc:
            log.error("could not store summary.json: %s", exc)
            summary.error = (summary.error + "; " if summary.error else "") + str(exc)
    try:
        _create_artifacts(summary, store, presign_seconds, public)
    except Exception as exc:  # the Prefect API went away: summary.json holds everything, the run goes on
        log.warning("could not create the run's artifacts (%s: %s)", type(exc).__name__, clip(str(exc)))


def _create_artifacts(
    summary: RunSummary, store: ArtifactStore | None, presign_seconds: int, public: PublicLinks | None
) -> None:
    run = summary.flow_run_id or "local"
    scope = artifact_scope()
    about = f"run {run}: {summary.request[:80]}"
    files = [uri for r in summary.results for modality, uri in r.outputs.items() if modality != "text"]
    signer = store.fs if store is not None and presign_seconds > 0 else None
    links = {
        uri: url
        for uri in files
        if (url := file_link(uri, signer, expires=presign_seconds, store=store, public=public)) is not None
    }
    create_markdown_artifact(
        key=artifact_key(scope, "summary"),
        markdown=summary_markdown(
            summary,
            links,
            frozenset(links),
            resumed_page=run_page(summary.resumed_from) if summary.resumed_from else None,
        ),
        description=f"HuggingGPT summary of {about}",
    )
    rows = [{k: v for k, v in row.items() if k != "task"} for row in node_rows(summary, links=links)]  # in the name
    if rows:
        create_table_artifact(
            key=artifact_key(scope, "nodes"),
            table=rows,
            description=f"One row per plan node of {about}",
        )
    for result in summary.results:
        for modality, uri in result.outputs.items():
            if modality == "text":
                continue
            key = artifact_key(scope, result.task, modality)
            description = f"{modality} output of {result.task}#{result.id}, {about}"
            if uri in links:
                create_link_artifact(
                    key=key, link=links[uri], link_text=f"{result.task}#{result.id} {modality}", description=description
                )
            else:  # no link a browser would open: the path, to copy
                create_markdown_artifact(key=key, markdown=code_text(uri), description=description)
