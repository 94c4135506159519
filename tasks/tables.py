"""Requests and results as tables: JSONL, CSV and Parquet from any fsspec URL, read and written in row groups.

A batch's requests file is read row by row without holding the table: Parquet one row group at a time
(``pyarrow.parquet.ParquetFile.iter_batches``), CSV one block at a time (``pyarrow.csv.open_csv``), JSONL one line
at a time. Each row becomes the plain object a JSONL line holds (``request``, ``inputs``, ``id``, ``models``,
``plan``, ``meta``) through a :class:`ColumnMap`: the request column, the columns that each hold one input file
(``image``, ``audio``), the id column; every other column is carried into ``meta`` and back into the results.

Results are written the same way, in row groups: Parquet or CSV when the results URL ends so, JSONL otherwise; one
row per line with the line's columns, its outcome and one column per output file.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import hashlib
import io
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import fsspec
from pydantic import BaseModel, Field

from tasks.storage import with_retries

TableFormat = Literal["jsonl", "csv", "parquet"]
ROWS_PER_BATCH = 1024  # rows converted to Python objects at a time
_SUFFIXES: dict[str, TableFormat] = {
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
}
#: columns of a table that keep their meaning as in a JSONL line
_KNOWN = ("models", "plan")


class TableError(ValueError):
    """A table cannot be read or written as asked (a missing column, an unknown format, a damaged file)."""


def table_format(url: str) -> TableFormat:
    """The format a URL names by its suffix: ``.parquet``/``.pq``, ``.csv``, anything else JSONL."""
    name = posixpath.basename(url.split("?", 1)[0].rstrip("/")).lower()
    return _SUFFIXES.get(posixpath.splitext(name)[1], "jsonl")


class ColumnMap(BaseModel):
    """Which columns of a table hold what a JSONL line holds under its own names."""

    request: str = Field(default="request", description="the column holding the request text")
    inputs: list[str] = Field(
        default_factory=list,
        description="columns each holding one input file (a path or URL, or the file's bytes); none: a column "
        "'inputs' holding a list, when there is one",
    )
    id: str | None = Field(default=None, description="the column holding each line's id (default: 'id' if present)")

    def id_column(self, names: Iterable[str]) -> str | None:
        return self.id if self.id is not None else ("id" if "id" in names else None)

    def check(self, names: list[str], url: str) -> None:
        """Every named column exists in the table, or a :class:`TableError` naming the missing ones."""
        wanted = [self.request, *self.inputs] + ([self.id] if self.id else [])
        missing = [c for c in wanted if c not in names]
        if missing:
            shown = ", ".join(names[:30]) + (" ..." if len(names) > 30 else "")
            raise TableError(
                f"{url} has no column {', '.join(repr(c) for c in missing)} (its columns: {shown}); "
                "name the columns with --request-column, --input-columns and --id-column"
            )

    def own(self, names: Iterable[str]) -> set[str]:
        """The columns that are not carried into ``meta``."""
        id_column = self.id_column(names)
        inputs = self.inputs or (["inputs"] if "inputs" in names else [])
        return {self.request, *inputs, *_KNOWN} | ({id_column} if id_column else set())


#: how a cell holding a file's bytes becomes a URI: (row number, column, bytes, file name or None) -> URI
StoreBytes = Callable[[int, str, bytes, str | None], str]


@dataclass
class TableRow:
    """One row read: its number (the file's line for JSONL, from 1 after the header for tables), the object a
    JSONL line holds, or the raw text of a JSONL line (parsed by the caller), or why it cannot be read."""

    number: int
    value: dict[str, Any] | None = None
    text: str | None = None
    error: str | None = None
    columns: dict[str, Any] = field(default_factory=dict)


def _plain(value: Any) -> Any:
    """A cell as JSON-able Python: dates as ISO text, decimals as float, bytes as base64 text."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN: a missing number
        return None
    return value


def _json_cell(value: Any) -> Any:
    """A CSV cell that holds JSON (a list of inputs, pinned models, a plan) as its value; other text unchanged."""
    if isinstance(value, str) and value.strip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _input_cell(value: Any, number: int, column: str, store_bytes: StoreBytes | None) -> str | None:
    """One input cell as a path or URL: text as is; bytes (or a ``{bytes, path}`` struct, as Hugging Face
    datasets store images) written by ``store_bytes``; empty cells are no input."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    name = None
    if isinstance(value, dict) and ("bytes" in value or "path" in value):
        name = value.get("path") if isinstance(value.get("path"), str) else None
        if value.get("bytes") is None:
            if name:
                return name
            raise TableError(f"column {column!r} holds a struct with neither bytes nor a path")
        value = value["bytes"]
    if isinstance(value, bytes | bytearray):
        if store_bytes is None:
            raise TableError(f"column {column!r} holds file bytes, and no storage was given to keep them")
        return store_bytes(number, column, bytes(value), name)
    raise TableError(f"column {column!r} holds {type(value).__name__}, not a path, a URL or a file's bytes")


def map_row(number: int, row: dict[str, Any], columns: ColumnMap, store_bytes: StoreBytes | None = None) -> TableRow:
    """A table row as the object a JSONL line holds, with the mapped columns kept (for the results) in ``columns``."""
    id_column = columns.id_column(row)
    own = columns.own(row)
    value: dict[str, Any] = {"request": row.get(columns.request)}
    kept: dict[str, Any] = {columns.request: _plain(row.get(columns.request))}
    if id_column is not None:
        value["id"] = row.get(id_column)
        kept[id_column] = _plain(row.get(id_column))
    try:
        if columns.inputs:
            inputs = []
            for column in columns.inputs:
                cell = _input_cell(row.get(column), number, column, store_bytes)
                kept[column] = cell
                if cell is not None:
                    inputs.append(cell)
            value["inputs"] = inputs
        elif row.get("inputs") is not None:
            given = _json_cell(row["inputs"])
            value["inputs"] = [given] if isinstance(given, str) else given
            kept["inputs"] = _plain(row["inputs"])
    except TableError as exc:
        return TableRow(number, error=f"row {number}: {exc}", columns=kept, value=value)
    for name in _KNOWN:
        if row.get(name) is not None:
            value[name] = _json_cell(row[name])
    value["meta"] = {k: _plain(v) for k, v in row.items() if k not in own}
    return TableRow(number, value=value, columns=kept)


def _open(url: str, options: dict[str, Any]) -> Any:
    try:
        return fsspec.open(url, "rb", **options).open()
    except FileNotFoundError:
        raise TableError(f"{url} does not exist") from None
    except Exception as exc:
        raise TableError(f"cannot open {url}: {type(exc).__name__}: {exc}") from exc


def content_key(url: str, options: dict[str, Any], salt: str = "", chunk: int = 1 << 20) -> str:
    """A hash of ``salt`` and the file's bytes, read in chunks (what a batch resumes by)."""
    digest = hashlib.sha256(f"{salt}\0".encode())
    fh = _open(url, options)
    with fh:
        first = True
        while block := fh.read(chunk):
            if first and block.startswith(b"\xef\xbb\xbf"):
                block = block[3:]  # a UTF-8 BOM is not content
            first = False
            digest.update(block)
    return digest.hexdigest()[:16]


def read_rows(
    url: str,
    options: dict[str, Any] | None = None,
    columns: ColumnMap | None = None,
    *,
    fmt: TableFormat | None = None,
    store_bytes: StoreBytes | None = None,
    rows_per_batch: int = ROWS_PER_BATCH,
) -> Iterator[TableRow]:
    """Every row of a requests table, in order, holding at most one row group (Parquet), one block (CSV) or one
    line (JSONL) at a time. Blank JSONL lines are skipped. Raises :class:`TableError` for the whole table (it cannot
    be opened, a named column is missing); a row that cannot be read is a :class:`TableRow` with its ``error``."""
    options = options or {}
    columns = columns or ColumnMap()
    fmt = fmt or table_format(url)
    if fmt == "jsonl":
        if columns.inputs or columns.request != "request" or columns.id not in (None, "id"):
            raise TableError(
                "--request-column, --input-columns and --id-column apply to Parquet and CSV tables, not to JSONL"
            )
        yield from _jsonl_rows(url, options)
    elif fmt == "parquet":
        yield from _parquet_rows(url, options, columns, store_bytes, rows_per_batch)
    else:
        yield from _csv_rows(url, options, columns, store_bytes)


def _jsonl_rows(url: str, options: dict[str, Any]) -> Iterator[TableRow]:
    with _open(url, options) as fh:
        for number, raw in enumerate(fh, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield TableRow(number, error=f"line {number} is not UTF-8 text: {exc}")
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield TableRow(number, text=text)


def _parquet_rows(
    url: str, options: dict[str, Any], columns: ColumnMap, store_bytes: StoreBytes | None, rows_per_batch: int
) -> Iterator[TableRow]:
    import pyarrow.parquet as pq

    with _open(url, options) as fh:
        try:
            table = pq.ParquetFile(fh)
        except Exception as exc:
            raise TableError(f"{url} is not a Parquet file: {type(exc).__name__}: {exc}") from exc
        columns.check(table.schema_arrow.names, url)
        number = 0
        for group in table.iter_batches(batch_size=rows_per_batch):
            for row in group.to_pylist():
                number += 1
                yield map_row(number, row, columns, store_bytes)


def _csv_rows(
    url: str, options: dict[str, Any], columns: ColumnMap, store_bytes: StoreBytes | None
) -> Iterator[TableRow]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with _open(url, options) as fh:
        header = fh.readline().decode("utf-8-sig", errors="replace")
        fh.seek(0)
        names = next(csv.reader(io.StringIO(header)), [])
        if not names:
            raise TableError(f"{url} has no header row")
        columns.check(names, url)
        try:
            reader = pacsv.open_csv(
                fh,
                read_options=pacsv.ReadOptions(block_size=1 << 20),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names},
                    null_values=[""],
                    strings_can_be_null=True,
                ),
            )
            number = 0
            for group in reader:
                for row in group.to_pylist():
                    number += 1
                    yield map_row(number, row, columns, store_bytes)
        except pa.ArrowInvalid as exc:
            raise TableError(f"{url} cannot be read as CSV: {exc}") from exc


# ---------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------
#: the columns every results table has after the line's own columns, with their Arrow types (by name)
OUTCOME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("status", "string"),
    ("answer", "string"),
    ("error", "string"),
    ("flow_run_id", "string"),
    ("storage_uri", "string"),
    ("plan_source", "string"),
    ("llm_tokens", "int64"),
    ("seconds", "float64"),
)


def _arrow_type(name: str) -> Any:
    import pyarrow as pa

    return {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64()}[name]


class ResultsWriter:
    """Results rows written in row groups to a Parquet or CSV file (or JSONL), under a fixed set of columns.

    The file is written under a temporary name beside the target and moved into place by :meth:`close`, so a
    reader never sees half a table. Values of columns whose type is not known are written as text (JSON for
    lists and objects)."""

    def __init__(
        self,
        url: str,
        options: dict[str, Any] | None,
        names: list[str],
        types: dict[str, Any] | None = None,
        *,
        fmt: TableFormat | None = None,
        rows_per_group: int = ROWS_PER_BATCH,
        fs: fsspec.AbstractFileSystem | None = None,
        retries: int = 0,
        retry_wait: float = 0.0,
    ) -> None:
        import pyarrow as pa

        self.url = url
        self.retries, self.retry_wait = retries, retry_wait
        self.fmt = fmt or table_format(url)
        self.rows_per_group = rows_per_group
        if fs is not None:
            self.fs, self.path = fs, url
        else:
            try:
                self.fs, self.path = fsspec.core.url_to_fs(url, **(options or {}))
            except (ImportError, ValueError) as exc:
                raise TableError(f"cannot open {url}: {exc}") from exc
        known = dict(types or {})
        for name, kind in OUTCOME_COLUMNS:
            known.setdefault(name, _arrow_type(kind))
        known.setdefault("line", pa.int64())
        self.schema = pa.schema([(n, known.get(n, pa.string())) for n in names])
        self._pending: list[dict[str, Any] | str] = []
        self._tmp = f"{self.path}.partial"
        self._finished = False
        parent = posixpath.dirname(self.path)
        if parent:
            self.fs.makedirs(parent, exist_ok=True)
        self._fh = self.fs.open(self._tmp, "wb")
        self._writer: Any = None
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            self._writer = pq.ParquetWriter(self._fh, self.schema)
        elif self.fmt == "csv":
            import pyarrow.csv as pacsv

            self._writer = pacsv.CSVWriter(self._fh, self.schema)

    @classmethod
    def into(
        cls,
        fs: fsspec.AbstractFileSystem,
        path: str,
        names: list[str],
        *,
        fmt: TableFormat = "jsonl",
        retries: int = 0,
        retry_wait: float = 0.0,
    ) -> ResultsWriter:
        """A writer of the file at ``path`` on a file system already open (an artifact store's)."""
        return cls(path, None, names, fmt=fmt, fs=fs, retries=retries, retry_wait=retry_wait)

    def write_text(self, line: str) -> None:
        """One JSONL line given as its text (JSONL only)."""
        if self.fmt != "jsonl":
            raise TableError(f"{self.url} is a {self.fmt} table: rows, not lines of text")
        self._pending.append(line)
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def _cell(self, name: str, value: Any) -> Any:
        import pyarrow as pa

        kind = self.schema.field(name).type
        if value is None:
            return None
        if pa.types.is_string(kind) and not isinstance(value, str):
            return json.dumps(value, ensure_ascii=False, default=str)
        return value

    def write(self, row: dict[str, Any]) -> None:
        self._pending.append(row)
        if len(self._pending) >= self.rows_per_group:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        rows, self._pending = self._pending, []
        if self.fmt == "jsonl":
            text = (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False, default=str) for r in rows)
            self._fh.write("".join(t + "\n" for t in text).encode("utf-8"))
            return
        dicts = [r for r in rows if isinstance(r, dict)]
        arrays = {n: [self._cell(n, r.get(n)) for r in dicts] for n in self.schema.names}
        try:
            batch = pa.RecordBatch.from_pydict(arrays, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            raise TableError(f"cannot write the results to {self.url}: {exc}") from exc
        self._writer.write_batch(batch)

    def close(self) -> str:
        """Finish the file and move it into place; returns its URL (a plain path for a local file).

        The move is retried ``retries`` times on a storage error (a transient one must not lose a finished table);
        when it still fails, the error names the file, and the finished table stays under its temporary name."""
        self._flush()
        if self._writer is not None:
            self._writer.close()
        self._fh.close()
        self._finished = True
        try:
            with_retries(
                f"moving {self._tmp} into place",
                lambda: self.fs.mv(self._tmp, self.path),
                retries=self.retries,
                wait=self.retry_wait,
            )
        except Exception as exc:
            raise TableError(f"cannot move the finished results {self._tmp} to {self.url}: {exc}") from exc
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        return self.path if protocol in ("file", "local") else self.fs.unstrip_protocol(self.path)

    def abort(self) -> None:
        """Drop the file being written; a finished one that could not be moved into place is kept."""
        if self._finished:
            return
        try:
            self._fh.close()
            self.fs.rm_file(self._tmp)
        except Exception:  # nothing more to clean
            pass


def input_types(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Arrow type of each number, boolean or text column of a Parquet table: what its carried columns are
    written back as. Other columns (dates, lists, structs), and every CSV or JSONL column, come back as text."""
    if table_format(url) != "parquet":
        return {}
    import pyarrow as pa
    import pyarrow.parquet as pq

    with _open(url, options or {}) as fh:
        schema = pq.ParquetFile(fh).schema_arrow
    simple = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_string)
    return {f.name: f.type for f in schema if any(check(f.type) for check in simple)}


def count_rows(url: str, options: dict[str, Any] | None = None, *, fmt: TableFormat | None = None) -> int:
    """How many rows :func:`read_rows` will give, without holding them: a Parquet file's metadata, CSV rows block by
    block (one column), JSONL's non-blank lines one at a time. What a batch's progress counts against."""
    options = options or {}
    fmt = fmt or table_format(url)
    with _open(url, options) as fh:
        if fmt == "jsonl":
            return sum(1 for raw in fh if raw.strip() and raw.strip() != b"\xef\xbb\xbf")
        if fmt == "parquet":
            import pyarrow.parquet as pq

            try:
                return int(pq.ParquetFile(fh).metadata.num_rows)
            except Exception as exc:
                raise TableError(f"{url} is not a Parquet file: {type(exc).__name__}: {exc}") from exc
        import pyarrow as pa
        import pyarrow.csv as pacsv

        header = fh.readline().decode("utf-8-sig", errors="replace")
        fh.seek(0)
        names = next(csv.reader(io.StringIO(header)), [])
        if not names:
            raise TableError(f"{url} has no header row")
        try:
            reader = pacsv.open_csv(
                fh,
                read_options=pacsv.ReadOptions(block_size=1 << 20),
                convert_options=pacsv.ConvertOptions(
                    include_columns=[names[0]], column_types={names[0]: pa.string()}, strings_can_be_null=True
                ),
            )
            return sum(group.num_rows for group in reader)
        except pa.ArrowInvalid as exc:
            raise TableError(f"{url} cannot be read as CSV: {exc}") from exc
