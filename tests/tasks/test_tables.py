"""Requests and results as tables (tasks/tables.py): Parquet and CSV read row group by row group, columns mapped,
results written back with one row per line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tasks.tables import ColumnMap, ResultsWriter, TableError, content_key, read_rows, table_format
from tests.paths import ROOT


def test_format_by_suffix() -> None:
    assert table_format("s3://b/x/requests.parquet") == "parquet"
    assert table_format("/data/requests.CSV") == "csv"
    assert table_format("requests.jsonl") == table_format("requests.txt") == "jsonl"


def test_csv_rows_are_mapped_to_lines(tmp_path: Path) -> None:
    path = tmp_path / "requests.csv"
    path.write_text(
        "key,question,photo,voice,team\n"
        'k1,"Caption photo, then read it",/data/a.png,/data/a.wav,red\n'
        "k2,Caption the photo,/data/b.png,,blue\n"
        ",,,,\n"
    )
    rows = list(read_rows(str(path), columns=ColumnMap(request="question", inputs=["photo", "voice"], id="key")))
    assert [r.number for r in rows] == [1, 2, 3]
    assert rows[0].value == {
        "request": "Caption photo, then read it",
        "id": "k1",
        "inputs": ["/data/a.png", "/data/a.wav"],
        "meta": {"team": "red"},
    }
    assert rows[1].value["inputs"] == ["/data/b.png"] and rows[1].columns["voice"] is None
    assert rows[2].value["request"] is None  # an empty row: the line's validation says what is missing
    # the same file without the mapping: the columns are not there
    with pytest.raises(TableError, match=r"no column 'request'.*--request-column"):
        list(read_rows(str(path)))
    with pytest.raises(TableError, match="'image'"):
        list(read_rows(str(path), columns=ColumnMap(request="question", inputs=["image"])))


def test_parquet_rows_carry_typed_meta_and_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "requests.parquet"
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "prompt": ["What is in the photo?", "And this one?"],
            "image": pa.array(
                [{"bytes": b"\x89PNG-one", "path": "one.png"}, {"bytes": None, "path": "/x/two.png"}], image
            ),
            "score": [0.5, 1.5],
            "models": ['{"image-classification": "tiny/x"}', None],
        }
    )
    pq.write_table(table, path)
    kept: list[tuple[int, str, bytes, str | None]] = []

    def store(number: int, column: str, data: bytes, name: str | None) -> str:
        kept.append((number, column, data, name))
        return f"/stored/{number}-{name}"

    rows = list(read_rows(str(path), columns=ColumnMap(request="prompt", inputs=["image"]), store_bytes=store))
    assert kept == [(1, "image", b"\x89PNG-one", "one.png")]
    assert rows[0].value["inputs"] == ["/stored/1-one.png"] and rows[1].value["inputs"] == ["/x/two.png"]
    assert rows[0].value["models"] == {"image-classification": "tiny/x"} and "models" not in rows[1].value
    assert rows[0].value["meta"] == {"score": 0.5} and rows[1].value["meta"] == {"score": 1.5}


def test_jsonl_rows_keep_the_file_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"request": "a"}\n\n   \n{"request": "b"}\r\n\xff\n')
    rows = list(read_rows(str(path)))
    assert [(r.number, r.text) for r in rows[:2]] == [(1, '{"request": "a"}'), (4, '{"request": "b"}')]
    assert rows[2].number == 5 and "not UTF-8" in rows[2].error
    with pytest.raises(TableError, match="Parquet and CSV"):
        list(read_rows(str(path), columns=ColumnMap(request="question")))
    assert content_key(str(path), {}, "a") != content_key(str(path), {}, "b")


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_results_written_in_row_groups(tmp_path: Path, suffix: str) -> None:
    target = tmp_path / "out" / f"results.{suffix}"
    names = ["line", "key", "question", "status", "answer", "llm_tokens", "seconds", "score", "output.x#0.image"]
    writer = ResultsWriter(str(target), None, names, {"score": pa.float64()}, rows_per_group=2)
    for n in range(5):
        writer.write(
            {
                "line": n + 1,
                "key": f"k{n}",
                "question": f"q{n}",
                "status": "completed" if n % 2 == 0 else "failed",
                "answer": "ok" if n % 2 == 0 else None,
                "llm_tokens": 10 * n,
                "seconds": 0.25,
                "score": n / 2,
                "output.x#0.image": f"/runs/{n}/image.png" if n == 0 else None,
            }
        )
    assert not target.exists(), "nothing is in place before the writer is closed"
    assert writer.close() == str(target)
    back = pq.read_table(target) if suffix == "parquet" else pacsv.read_csv(target)
    assert back.column_names == names and back.num_rows == 5
    assert back.column("status").to_pylist() == ["completed", "failed", "completed", "failed", "completed"]
    assert back.column("llm_tokens").to_pylist() == [0, 10, 20, 30, 40]
    assert back.column("output.x#0.image").to_pylist()[0] == "/runs/0/image.png"
    if suffix == "parquet":
        assert pq.ParquetFile(target).num_row_groups == 3
        assert back.schema.field("score").type == pa.float64()


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_a_transient_error_moving_the_results_into_place_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    """The move that puts a finished results file in place goes to storage like any write: one failure is
    retried and the table lands whole; a storage that keeps failing gives an error naming the file, and the
    finished rows stay under the temporary name."""
    from fsspec.implementations.local import LocalFileSystem

    real_mv = LocalFileSystem.mv
    failures = {"left": 1, "moves": 0}

    def mv(self: LocalFileSystem, path1: Any, path2: Any, *args: Any, **kwargs: Any) -> Any:
        failures["moves"] += 1
        if failures["left"] > 0:
            failures["left"] -= 1
            raise OSError(5, "injected transient I/O error")
        return real_mv(self, path1, path2, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", mv)
    names = ["line", "status", "answer"]
    rows = [{"line": n, "status": "completed", "answer": f"a{n}"} for n in (1, 2, 3)]

    def write(target: Path, retries: int) -> ResultsWriter:
        writer = ResultsWriter(str(target), None, names, fmt=None, retries=retries, retry_wait=0.0)
        for row in rows:
            if suffix == "jsonl":
                writer.write_text(json.dumps(row))
            else:
                writer.write(row)
        return writer

    target = tmp_path / f"results.{suffix}"
    assert write(target, retries=2).close() == str(target)
    assert failures["moves"] == 2, "the failed move was tried again"
    if suffix == "parquet":
        assert pq.read_table(target).column("answer").to_pylist() == ["a1", "a2", "a3"]
    else:
        assert [json.loads(x)["answer"] for x in target.read_text().splitlines()] == ["a1", "a2", "a3"]

    failures["left"] = 10
    stuck = tmp_path / f"stuck.{suffix}"
    with pytest.raises(TableError, match=rf"stuck\.{suffix}\.partial") as caught:
        write(stuck, retries=1).close()
    assert "injected transient I/O error" in str(caught.value)
    assert not stuck.exists() and (tmp_path / f"stuck.{suffix}.partial").stat().st_size > 0


def test_a_100k_row_table_is_read_with_bounded_memory(tmp_path: Path) -> None:
    """The peak resident memory of reading a 100,000-row table row by row is that of reading a 10,000-row one:
    the rows are never all held (holding them would take over 100 MB)."""
    for rows in (10_000, 100_000):
        request = pa.array([f"Summarize document {i}: " + "words " * 20 for i in range(rows)])
        table = pa.table({"id": pa.array(range(rows)), "request": request, "team": pa.array(["red"] * rows)})
        pq.write_table(table, tmp_path / f"t{rows}.parquet", row_group_size=5_000)
    script = textwrap.dedent(
        f"""
        import json, resource, sys
        import pyarrow as pa
        from tasks.tables import read_rows
        out = {{}}
        for rows in (10_000, 100_000):
            count = chars = 0
            base = peak = sys.getallocatedblocks()
            for row in read_rows({str(tmp_path)!r} + f"/t{{rows}}.parquet"):
                count += 1
                chars += len(row.value["request"])
                if count % 500 == 0:
                    peak = max(peak, sys.getallocatedblocks())
            out[rows] = {{"rows": count, "chars": chars,
                          "python_blocks_peak": peak - base,
                          "arrow_peak_mb": pa.default_memory_pool().max_memory() / 1e6,
                          "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
        print(json.dumps(out))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    small, large = figures["10000"], figures["100000"]
    assert large["rows"] == 100_000 and large["chars"] > 10_000_000  # over 10 MB of request text went through
    print(f"reading 10,000 then 100,000 rows: {figures}")
    assert large["python_blocks_peak"] < 2 * small["python_blocks_peak"] + 10_000, figures  # Python objects
    assert large["arrow_peak_mb"] < 2 * small["arrow_peak_mb"] + 5, figures  # Arrow buffers: one row group
